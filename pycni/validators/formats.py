"""The `format`s our config schemas use, and the few helpers generated validators call.

One implementation serves both validators, so they cannot disagree about what a CIDR is:
- the generated validators in pycni.validators (the per-call path) call these functions;
- `pycni validate` (the operator path) registers FORMATS with jsonschema's FormatChecker.

A format check takes a string and returns a sentence saying what is wrong with it, or None when
it is fine. Values that are not strings are not a format's business (JSON Schema: `format`
applies to strings only; `type` catches the rest).

On the per-call path: imports pycni.cni.ip and pycni.cni.jsonio, nothing else (the cni-name check is
written out rather than as a regular expression: `re` would cost ~3 ms of every plugin call).
"""

from __future__ import annotations

from pycni.cni import jsonio
from pycni.cni.ip import IP, Prefix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeGuard

_SHOWN_LIMIT = 60
_NAME_RULE = "it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"


# --- formats -------------------------------------------------------------------------------


def cni_name_problem(text: str) -> str | None:
    """The spec's network name, `^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$` (no trailing newline either)."""
    if text and _is_alnum(text[0]) and all(_is_alnum(c) or c in "_.-" for c in text):
        return None
    return f"{quoted(text)} is not a valid name: {_NAME_RULE}"


def ip_problem(text: str) -> str | None:
    """An IPv4 or IPv6 address, exactly as pycni.cni.ip.IP.parse accepts it."""
    try:
        IP.parse(text)
    except ValueError:
        return f"{quoted(text)} is not a valid IPv4 or IPv6 address"
    return None


def cidr_problem(text: str) -> str | None:
    """An address/prefix-length, exactly as pycni.cni.ip.Prefix.parse accepts it."""
    try:
        Prefix.parse(text)
    except ValueError:
        return f"{quoted(text)} is not a valid CIDR: {_cidr_cause(text)}"
    return None


def abs_path_problem(text: str) -> str | None:
    """An absolute file system path without NUL characters or '..' components."""
    if not text.startswith("/"):
        cause = "it must start with '/'"
    elif "\0" in text:
        cause = "it contains a NUL character"
    elif ".." in text.split("/"):
        cause = "it must not contain a '..' component"
    else:
        return None
    return f"{quoted(text)} is not an absolute path: {cause}"


IFNAMSIZ = 16  # the kernel's limit on an interface name, with its terminating NUL


def ifname_problem(text: str) -> str | None:
    """A Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'."""
    if not text:
        cause = "it is empty"
    elif len(text.encode()) >= IFNAMSIZ:
        cause = f"it is longer than {IFNAMSIZ - 1} bytes"
    elif text in (".", ".."):
        cause = "it cannot be '.' or '..'"
    elif any(c in "/:" or c.isspace() for c in text):
        cause = "it cannot contain '/', ':' or whitespace"
    else:
        return None
    return f"{quoted(text)} is not a valid interface name: {cause}"


FORMATS: dict[str, Callable[[str], str | None]] = {
    "cni-name": cni_name_problem,
    "ifname": ifname_problem,
    "ip": ip_problem,
    "cidr": cidr_problem,
    "abs-path": abs_path_problem,
}


def _is_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _cidr_cause(text: str) -> str:
    """Why Prefix.parse refused `text`, in words (Prefix.parse decides; this only explains)."""
    address, sep, length = text.partition("/")
    try:
        ip = IP.parse(address)
    except ValueError:
        ip = None
    if not sep:
        return "expected an address and a prefix length, e.g. 10.1.0.0/16 or fd00::/64"
    if ip is None:
        return f"{quoted(address)} is not an IPv4 or IPv6 address"
    if not (length.isascii() and length.isdigit()):
        return f"the prefix length {quoted(length)} is not a number"
    return f"prefix length exceeds {ip.bits}"


# --- helpers for generated validators ----------------------------------------------------


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words: "a string", "a number", "null", ..."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_json_number(value: object) -> TypeGuard[int | float]:
    """A JSON number: an int or a float, and not a bool (Python's bool is an int, JSON's is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_json_integer(value: object) -> TypeGuard[int | float]:
    """A JSON Schema integer: a number with no fractional part (1.0 counts, true does not)."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: object) -> str:
    """A short rendering of a JSON value for a message: 'text', 42, true, [1, 2], an object."""
    if isinstance(value, str):
        return quoted(value)
    try:
        text = jsonio.dumps(value)
    except (TypeError, ValueError, RecursionError):  # NaN, a tuple, absurd nesting
        return json_kind(value)
    if len(text) <= _SHOWN_LIMIT:
        return text
    return text[: _SHOWN_LIMIT - 3] + "..." if is_json_number(value) else json_kind(value)


def quoted(text: str) -> str:
    """'text' in single quotes, shortened when long (a config value can be megabytes)."""
    if len(text) > _SHOWN_LIMIT:
        text = text[: _SHOWN_LIMIT - 3] + "..."
    return "'" + text + "'"


def member_path(path: str, key: str) -> str:
    """The JSON path of member `key` of the object at `path`: $.ipam, $["cni.dev/x"]."""
    if key and not key[0].isdigit() and all(c.isascii() and (c.isalnum() or c == "_") for c in key):
        return f"{path}.{key}"
    return f'{path}["{_escaped(key)}"]'


def _escaped(key: str) -> str:
    out = []
    for char in key:
        if char in '"\\':
            out.append("\\" + char)
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def json_equal(one: object, two: object) -> bool:
    """JSON equality for `enum` and `const`: 1 equals 1.0, but true is not 1 (unlike Python)."""
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(json_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(json_equal(one[k], two[k]) for k in one)
    if isinstance(one, bool) or isinstance(two, bool):
        return one is two
    return one == two
