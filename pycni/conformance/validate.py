"""`pycni validate FILE...`: check network config files before a runtime hands them to plugins.

The operator's path, never a plugin's: it imports jsonschema (~120 ms) and checks each file
against the schemas themselves (conf/schemas, installed as pycni.schemas), with the same format
checks (pycni.validators.formats) the plugins' generated validators use. Per file:

1. the envelope: a `.conflist` against netconf.schema.json#/$defs/conflist, anything else
   (`.conf`, `.json`: what libcni reads as a single network config) against #/$defs/conf;
2. every plugin that is ours, as the network config the runtime would send it (the list's
   cniVersion and name inserted, `capabilities` removed): a plugin of a type in PLUGIN_SCHEMAS,
   and a plugin whose `ipam.type` is in IPAM_SCHEMAS (the IPAM plugin reads the same config).
   Other plugins are listed as not checked.

Every problem is printed with its JSON path in the file and the CNI error code the plugin would
answer with: 2 for a key it does not support, 7 for any other invalid value. Exit status 0 when
every file is valid, 1 otherwise.

A warning (stderr, exit status unchanged) for a `cniVersion` newer than 1.0.0: runtimes on
libcni before 1.2 ignore `cniVersions`, send `cniVersion` as it is and cannot parse a newer
result, whatever lower versions `cniVersions` lists -- every pod on those nodes would fail.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from pycni.cni import jsonio, registry, versions
from pycni.cni.errors import CniError, Code, ConfigError, UnsupportedField
from pycni.validators.formats import FORMATS, json_kind, member_path, shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

COMMAND = "validate"
HELP = "check .conf/.conflist files against pycni's config schemas"

ENVELOPE_SCHEMA = "netconf"
# Which schema a plugin's config must satisfy (pycni.cni.registry): by the plugin's type, and,
# for an IPAM plugin, by its ipam.type.
PLUGIN_SCHEMAS = {entry.executable: entry.schema for entry in registry.PLUGINS}
IPAM_SCHEMAS = {entry.executable: entry.schema for entry in registry.PLUGINS if entry.ipam}

_TYPE_WORDS = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
}


@dataclass(frozen=True)
class Check:
    """One document for one schema: what the runtime would send to one of our plugins."""

    schema: str  # "host-local" for host-local.schema.json
    doc: dict[str, object]
    prefix: str  # the JSON path of `doc` in the file: "$" or "$.plugins[0]"
    inserted: tuple[str, ...] = ()  # keys taken from the file's top level (cniVersion, name)


@dataclass
class Report:
    """What checking one file found."""

    path: str
    errors: list[CniError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, error: CniError) -> None:
        if not any((e.code, e.msg) == (error.code, error.msg) for e in self.errors):
            self.errors.append(error)


# --- the subcommand ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=".conflist: a network config list; .conf, .json: a single network config;"
        " '-': read stdin (a list if it has 'plugins')",
    )


def run(args: argparse.Namespace) -> int:
    status = 0
    for name in args.files:
        report = check_file(name)
        for warning in report.warnings:
            print(f"{name}: warning: {warning}", file=sys.stderr)
        for note in report.notes:
            print(f"{name}: {note}")
        for error in report.errors:
            print(f"{name}: error {error.code}: {error.msg}")
        if report.errors:
            count = len(report.errors)
            print(f"{name}: INVALID ({count} error{'s' if count > 1 else ''})")
            status = 1
        else:
            print(f"{name}: OK")
    return status


# --- checking ------------------------------------------------------------------------------


def check_file(name: str) -> Report:
    """Read, parse and check one file ('-' for stdin)."""
    report = Report(name)
    try:
        raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as err:
        report.add(CniError(Code.IO_FAILURE, f"cannot read the file: {err.strerror}"))
        return report
    try:
        doc = jsonio.loads(raw)
    except jsonio.JSONError as err:
        report.add(CniError(Code.DECODE_FAILURE, f"not a JSON document: {err}"))
        return report
    if name == "-":
        is_list = isinstance(doc, dict) and "plugins" in doc
    else:
        is_list = name.endswith(".conflist")
    check_doc(doc, is_list, report)
    return report


def check_doc(doc: object, is_list: bool, report: Report) -> None:
    """Check a parsed network config (list) into `report`."""
    kind = "conflist" if is_list else "conf"
    if kind == "conf" and isinstance(doc, dict) and "plugins" in doc and "type" not in doc:
        report.notes.append(
            "this looks like a network config list: runtimes read only *.conflist files as"
            " lists (.conf and .json hold a single network config)"
        )
    for error in problems(envelope_validator(kind), doc, "$"):
        report.add(error)
    warning = older_runtime_warning(doc, is_list)
    if warning:
        report.warnings.append(warning)
    checks, notes = plan(doc, is_list)
    report.notes += notes
    for check in checks:
        for error in problems(validator(check.schema), check.doc, check.prefix, check.inserted):
            report.add(error)


def older_runtime_warning(doc: object, is_list: bool) -> str | None:
    """Why runtimes on libcni < 1.2 cannot run this config, or None if they can."""
    declared = doc.get("cniVersion") if isinstance(doc, dict) else None
    try:
        newer = isinstance(declared, str) and not versions.at_least(
            versions.LEGACY_LIBCNI_MAX, declared
        )
    except ValueError:
        return None  # the envelope check reports a malformed version
    if not newer:
        return None
    legacy = versions.LEGACY_LIBCNI_MAX
    fix = (
        f'set "cniVersion": "{legacy}" and list "{declared}" in "cniVersions" (libcni 1.2+'
        " selects it from there)"
        if is_list
        else f'a single network config has no cniVersions: use "cniVersion": "{legacy}", or a'
        " .conflist with cniVersions"
    )
    return (
        f"cniVersion {declared}: runtimes on libcni < 1.2 ({versions.LEGACY_RUNTIMES}) ignore"
        f" cniVersions, send {declared} and cannot parse the result: they cannot run this"
        f" network; {fix}"
    )


def plan(doc: object, is_list: bool) -> tuple[list[Check], list[str]]:
    """The checks of our plugins in `doc`, and notes on the plugins that are not ours."""
    if not isinstance(doc, dict):
        return [], []
    if not is_list:
        return _plugin_checks(doc, doc, "$", ())
    plugins = doc.get("plugins")
    if not isinstance(plugins, list):
        return [], []
    checks: list[Check] = []
    notes: list[str] = []
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            continue
        sent = {k: v for k, v in plugin.items() if k != "capabilities"}
        inserted = tuple(k for k in ("cniVersion", "name") if k in doc)
        sent.update((k, doc[k]) for k in inserted)
        more, why = _plugin_checks(plugin, sent, f"$.plugins[{index}]", inserted)
        checks += more
        notes += why
    return checks, notes


def _plugin_checks(
    plugin: dict[str, Any], sent: dict[str, object], prefix: str, inserted: tuple[str, ...]
) -> tuple[list[Check], list[str]]:
    plugin_type = plugin.get("type")
    ipam = plugin.get("ipam")
    ipam_type = ipam.get("type") if isinstance(ipam, dict) else None
    schemas = []
    if isinstance(plugin_type, str) and plugin_type in PLUGIN_SCHEMAS:
        schemas.append(PLUGIN_SCHEMAS[plugin_type])
    if isinstance(ipam_type, str) and ipam_type in IPAM_SCHEMAS:
        schemas.append(IPAM_SCHEMAS[ipam_type])
    if not schemas:
        label = f"{prefix} ({plugin_type})" if isinstance(plugin_type, str) else prefix
        return [], [f"{label}: not checked (not a pycni plugin)"]
    return [Check(schema, sent, prefix, inserted) for schema in dict.fromkeys(schemas)], []


def problems(
    validator: Any, doc: object, prefix: str, inserted: tuple[str, ...] = ()
) -> Iterator[CniError]:
    """Every violation jsonschema finds, as the CNI error a plugin would answer with.

    Paths are relative to `prefix`, except for the `inserted` keys, which the runtime took from
    the top of the file."""
    for error in validator.iter_errors(doc):
        parts = list(error.absolute_path)
        base = "$" if parts and parts[0] in inserted else prefix
        keyword = error.validator
        instance = error.instance
        if keyword == "required":
            for key in error.validator_value:
                if key not in instance:
                    yield ConfigError(json_path(base, [*parts, key]), "is required")
        elif keyword == "additionalProperties":
            allowed = error.schema.get("properties", {})
            for key in instance:
                if key not in allowed:
                    yield UnsupportedField(json_path(base, [*parts, key]), instance[key])
        else:
            problem = _sentence(keyword, error.validator_value, instance, error)
            yield ConfigError(json_path(base, parts), problem)


def _sentence(keyword: str, expected: Any, instance: Any, error: Any) -> str:
    """The problem in the words of the generated validators (tests hold the two together)."""
    if keyword == "type":
        types = [expected] if isinstance(expected, str) else expected
        words = " or ".join(_TYPE_WORDS[t] for t in types)
        return f"expected {words}, found {json_kind(instance)}"
    if keyword == "format":
        return str(error.cause) if error.cause is not None else str(error.message)
    if keyword == "enum":
        return f"must be one of {', '.join(shown(v) for v in expected)}; found {shown(instance)}"
    if keyword == "const":
        return f"must be {shown(expected)}; found {shown(instance)}"
    if keyword in ("minLength", "minItems") and expected == 1:
        return "must not be empty"
    if keyword == "minLength":
        return f"must be at least {expected} characters long, found {len(instance)}"
    if keyword == "maxLength":
        chars = "character" if expected == 1 else "characters"
        return f"must be at most {expected} {chars} long, found {len(instance)}"
    if keyword == "minimum":
        return f"must be at least {shown(expected)}, found {shown(instance)}"
    if keyword == "maximum":
        return f"must be at most {shown(expected)}, found {shown(instance)}"
    if keyword == "minItems":
        return f"must have at least {expected} items, found {len(instance)}"
    if keyword == "maxItems":
        items = "item" if expected == 1 else "items"
        return f"must have at most {expected} {items}, found {len(instance)}"
    return str(error.message)


def json_path(base: str, parts: Iterable[str | int]) -> str:
    """$ + ["ipam", "ranges", 0] -> $.ipam.ranges[0], the way the generated validators say it."""
    path = base
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else member_path(path, part)
    return path


# --- schemas -------------------------------------------------------------------------------


@cache
def load_schema(name: str) -> dict[str, Any]:
    """conf/schemas/<name>.schema.json, from the installed package pycni.schemas."""
    text = resources.files("pycni.schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    schema = jsonio.loads(text)
    if not isinstance(schema, dict):
        raise ValueError(f"{name}.schema.json is not a JSON object")
    return schema


@cache
def validator(name: str) -> Any:
    """A jsonschema validator for schema `name`, asserting our formats."""
    return schema_validator(load_schema(name))


@cache
def envelope_validator(kind: str) -> Any:
    """A validator for netconf.schema.json#/$defs/<kind> ('conflist' or 'conf')."""
    return schema_validator({**load_schema(ENVELOPE_SCHEMA), "$ref": f"#/$defs/{kind}"})


def schema_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema Draft 2020-12 validator for `schema`, asserting our formats."""
    import jsonschema  # type: ignore[import-untyped]

    return jsonschema.Draft202012Validator(schema, format_checker=format_checker())


def format_checker() -> Any:
    """A FormatChecker that knows exactly our formats (pycni.validators.formats), nothing else."""
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    for name, problem_of in FORMATS.items():
        checker.checks(name, raises=ValueError)(_asserting(problem_of))
    return checker


def _asserting(problem_of: Callable[[str], str | None]) -> Callable[[object], bool]:
    def check(instance: object) -> bool:
        if isinstance(instance, str) and (problem := problem_of(instance)) is not None:
            raise ValueError(problem)
        return True

    return check
