"""JSON for the per-call path, straight on CPython's C accelerator `_json`.

`import json` costs ~8 ms of a frozen plugin's start-up (it pulls `re` and `enum`), about two thirds
of the interpreter's own start. The C scanner and encoder that `json` wraps need neither, so
this module drives them directly. Behaviour matches `json.loads` / `json.dumps` for what a CNI
plugin reads and writes (tests/cni/test_jsonio.py cross-checks it), with two deliberate differences:
NaN and Infinity are rejected on input and output (they are not JSON), and trailing data is an
error.
"""

from __future__ import annotations

import _json
import sys

_WHITESPACE = " \t\n\r"


class JSONError(ValueError):
    """Text that is not one JSON document; `pos` is the offset where it went wrong."""

    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(f"{msg} (at offset {pos})")
        self.pos = pos


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


class _ScannerContext:
    # The attributes _json.make_scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)
    memo: dict[str, str] = {}  # noqa: RUF012 - the scanner keeps its own memo


# typeshed types these as json.JSONDecoder/JSONEncoder internals; the C code reads only the
# attributes and arguments given here.
_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
_encode = _json.make_encoder(
    None,  # markers: no cycle detection; our values are trees built from parsed JSON
    None,  # type: ignore[arg-type] # default: what is not JSON is a bug: TypeError
    _json.encode_basestring,
    None,  # indent (the C encoder supports only None)
    ": ",
    ", ",
    False,  # sort_keys
    False,  # skipkeys
    False,  # allow_nan
)


def loads(text: str | bytes) -> object:
    """Parse exactly one JSON document."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONError(f"not UTF-8 ({err.reason})", err.start) from None
    pos = _skip_ws(text, 0)
    try:
        value, end = _scan(text, pos)
    except StopIteration as stop:
        raise JSONError("expected a JSON value", stop.value) from None
    except RecursionError:
        raise JSONError("nested too deeply", pos) from None
    except ValueError as err:  # json.JSONDecodeError and the constants rejected above
        raise JSONError(getattr(err, "msg", str(err)), getattr(err, "pos", pos)) from None
    except SystemError:
        # _json raises its errors as json.decoder.JSONDecodeError, which it looks up in
        # sys.modules without importing it; load it (on this error path only) and try again.
        if "json.decoder" in sys.modules:
            raise
        import json.decoder  # noqa: F401

        return loads(text)
    end = _skip_ws(text, end)
    if end != len(text):
        raise JSONError("extra data after the JSON document", end)
    return value


def dumps(value: object) -> str:
    """Serialize to compact-ish JSON text (the separators of json.dumps' defaults)."""
    return "".join(_encode(value, 0))


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos
