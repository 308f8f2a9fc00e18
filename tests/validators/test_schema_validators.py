"""The generated validators (pycni.validators) against the schemas they come from.

The schemas are the single source of truth; the plugins run code generated from them, `pycni
validate` runs jsonschema on them. These tests hold the two together: on the examples, on a
corpus of invalid documents, and on documents hypothesis makes up, both must give the same
verdict, and the generated validator's error (code, JSON path, message) must be one of the
errors jsonschema reports. They also check that the generated files are up to date and that
the generator refuses keywords it does not implement.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.cni.errors import Code
from pycni.conformance import validate
from pycni.validators import bridge, host_local, ipip, netconf, vxlan
from tests.support.paths import EXAMPLES, REPO, load_module
from tests.support.validators import (
    INTERESTING_STRINGS,
    Validate,
    assert_same_verdict,
    generated_error,
    json_keys,
    json_scalars,
    json_values,
)

GENERATOR = REPO / "packaging" / "gen_validator.py"
EXAMPLE_FILES = sorted(EXAMPLES.iterdir())
DRAFT = "https://json-schema.org/draft/2020-12/schema"


gen = load_module(GENERATOR)


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _checks(path: Path) -> list[validate.Check]:
    """What `pycni validate` checks in an example: the docs our plugins would be sent."""
    checks, _notes = validate.plan(_read(path), path.suffix == ".conflist")
    return checks


# The (generated, jsonschema) validator pairs, by schema name.
HOST_LOCAL = (host_local.validate, validate.validator("host-local"))
BRIDGE = (bridge.validate, validate.validator("bridge"))
VXLAN = (vxlan.validate, validate.validator("vxlan"))
IPIP = (ipip.validate, validate.validator("ipip"))
PLUGIN_PAIRS = {"host-local": HOST_LOCAL, "bridge": BRIDGE, "vxlan": VXLAN, "ipip": IPIP}
CONFLIST = (netconf.check_conflist, validate.envelope_validator("conflist"))
CONF = (netconf.check_conf, validate.envelope_validator("conf"))


# --- examples ------------------------------------------------------------------------------


def test_there_are_examples_for_every_form() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {"host-local-ipam.json", "host-local-legacy.json", "host-local-ipv6.json"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_is_valid_under_both(path: Path) -> None:
    doc = _read(path)
    envelope = CONFLIST if path.suffix == ".conflist" else CONF
    assert assert_same_verdict(envelope, doc) is None
    checks = _checks(path)
    assert checks, f"{path.name} has no pycni plugin"
    assert "host-local" in {check.schema for check in checks}  # every example uses it
    for check in checks:
        assert assert_same_verdict(PLUGIN_PAIRS[check.schema], check.doc) is None


# --- a corpus of invalid documents ---------------------------------------------------------

BASE: dict[str, Any] = _read(EXAMPLES / "host-local-ipam.json")
DEEP: Any = "bottom"
for _ in range(300):
    DEEP = [DEEP]


def _with(path: str, value: object) -> dict[str, Any]:
    """BASE with the value at a dotted path ("ipam.ranges.0.0.subnet") replaced; the value
    DELETE removes the key."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return doc


DELETE = object()
INVALID: list[tuple[str, object, int, str]] = [
    # (what, document, CNI code, JSON path of the bad field)
    ("document is an array", [BASE], 7, "$"),
    ("document is null", None, 7, "$"),
    ("document is a string", "{}", 7, "$"),
    ("cniVersion missing", _with("cniVersion", DELETE), 7, "$.cniVersion"),
    ("name missing", _with("name", DELETE), 7, "$.name"),
    ("ipam missing", _with("ipam", DELETE), 7, "$.ipam"),
    ("cniVersion is a number", _with("cniVersion", 1.0), 7, "$.cniVersion"),
    ("cniVersions is a string", _with("cniVersions", "1.0.0"), 7, "$.cniVersions"),
    ("cniVersions holds a number", _with("cniVersions", ["1.0.0", 1]), 7, "$.cniVersions[1]"),
    ("name has a space", _with("name", "pod network"), 7, "$.name"),
    ("name starts with a dash", _with("name", "-net"), 7, "$.name"),
    ("name is not ASCII", _with("name", "réseau"), 7, "$.name"),
    ("name ends in a newline", _with("name", "net\n"), 7, "$.name"),
    ("name is empty", _with("name", ""), 7, "$.name"),
    ("name is huge", _with("name", "n" * 1_000_000 + "!"), 7, "$.name"),
    ("name is a boolean", _with("name", True), 7, "$.name"),
    ("ipam is a string", _with("ipam", "pycni-host-local"), 7, "$.ipam"),
    ("ipam type missing", _with("ipam.type", DELETE), 7, "$.ipam.type"),
    ("ipam type empty", _with("ipam.type", ""), 7, "$.ipam.type"),
    ("ipam type is a boolean", _with("ipam.type", True), 7, "$.ipam.type"),
    ("unknown ipam key", _with("ipam.subnets", ["10.0.0.0/8"]), 2, "$.ipam.subnets"),
    ("unknown non-ASCII ipam key", _with("ipam.rängés", 1), 2, '$.ipam["rängés"]'),
    ("unknown ipam key with a quote", _with('ipam.a"b', 1), 2, '$.ipam["a\\"b"]'),
    ("unknown ipam key holding deep junk", _with("ipam.junk", DEEP), 2, "$.ipam.junk"),
    ("ranges empty", _with("ipam.ranges", []), 7, "$.ipam.ranges"),
    ("ranges is an object", _with("ipam.ranges", {"subnet": "10.0.0.0/8"}), 7, "$.ipam.ranges"),
    ("range set empty", _with("ipam.ranges.1", []), 7, "$.ipam.ranges[1]"),
    ("range set is an object", _with("ipam.ranges.0", {}), 7, "$.ipam.ranges[0]"),
    ("range is a string", _with("ipam.ranges.0.0", "10.0.0.0/8"), 7, "$.ipam.ranges[0][0]"),
    ("range is deep junk", _with("ipam.ranges.0", [DEEP]), 7, "$.ipam.ranges[0][0]"),
    ("ranges are deep junk", _with("ipam.ranges", DEEP), 7, "$.ipam.ranges[0][0]"),
    (
        "subnet missing",
        _with("ipam.ranges.0.0.subnet", DELETE),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    (
        "prefix length over 32",
        _with("ipam.ranges.0.0.subnet", "10.0.0.0/33"),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    (
        "prefix length over 128",
        _with("ipam.ranges.1.0.subnet", "fd00::/129"),
        7,
        "$.ipam.ranges[1][0].subnet",
    ),
    (
        "CIDR without a length",
        _with("ipam.ranges.0.0.subnet", "10.0.0.0"),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    (
        "CIDR, bad address",
        _with("ipam.ranges.0.0.subnet", "10.0.0.256/24"),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    (
        "CIDR, signed length",
        _with("ipam.ranges.0.0.subnet", "10.0.0.0/+8"),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    (
        "CIDR is huge",
        _with("ipam.ranges.0.0.subnet", "1" * 1_000_000),
        7,
        "$.ipam.ranges[0][0].subnet",
    ),
    ("subnet is a number", _with("ipam.ranges.0.0.subnet", 10), 7, "$.ipam.ranges[0][0].subnet"),
    (
        "rangeStart has five parts",
        _with("ipam.ranges.0.0.rangeStart", "10.0.0.1.5"),
        7,
        "$.ipam.ranges[0][0].rangeStart",
    ),
    (
        "rangeEnd is a CIDR",
        _with("ipam.ranges.0.0.rangeEnd", "10.244.1.250/24"),
        7,
        "$.ipam.ranges[0][0].rangeEnd",
    ),
    (
        "gateway is a boolean",
        _with("ipam.ranges.0.0.gateway", True),
        7,
        "$.ipam.ranges[0][0].gateway",
    ),
    (
        "gateway has a zone",
        _with("ipam.ranges.1.0.gateway", "fe80::1%eth0"),
        7,
        "$.ipam.ranges[1][0].gateway",
    ),
    (
        "unknown range key",
        _with("ipam.ranges.1.0.exclude", ["fd00::5"]),
        2,
        "$.ipam.ranges[1][0].exclude",
    ),
    ("legacy subnet is bad", _with("ipam.subnet", "10.22.0.0/40"), 7, "$.ipam.subnet"),
    ("legacy rangeStart is an int", _with("ipam.rangeStart", 167772161), 7, "$.ipam.rangeStart"),
    ("routes is an object", _with("ipam.routes", {"dst": "0.0.0.0/0"}), 7, "$.ipam.routes"),
    ("route dst missing", _with("ipam.routes.2.dst", DELETE), 7, "$.ipam.routes[2].dst"),
    ("route gw is bad", _with("ipam.routes.2.gw", "10.244.1"), 7, "$.ipam.routes[2].gw"),
    ("route mtu (CNI 1.1)", _with("ipam.routes.0.mtu", 1400), 2, "$.ipam.routes[0].mtu"),
    ("dataDir is relative", _with("ipam.dataDir", "var/lib/cni"), 7, "$.ipam.dataDir"),
    ("dataDir climbs up", _with("ipam.dataDir", "/var/lib/../../etc"), 7, "$.ipam.dataDir"),
    ("dataDir holds NUL", _with("ipam.dataDir", "/var/lib\0cni"), 7, "$.ipam.dataDir"),
    ("resolvConf is a number", _with("ipam.resolvConf", 1), 7, "$.ipam.resolvConf"),
    ("logFile is relative", _with("logFile", "pycni.log"), 7, "$.logFile"),
    ("prevResult is an array", _with("prevResult", []), 7, "$.prevResult"),
    ("runtimeConfig is a string", _with("runtimeConfig", "{}"), 7, "$.runtimeConfig"),
    ("args is null", _with("args", None), 7, "$.args"),
]


@pytest.mark.parametrize(
    ("document", "code", "path"),
    [pytest.param(doc, code, path, id=what) for what, doc, code, path in INVALID],
)
def test_invalid_document_gets_the_same_verdict(document: object, code: int, path: str) -> None:
    error = assert_same_verdict(HOST_LOCAL, document)
    assert error is not None
    assert (error.code, error.details) == (code, path)
    assert path in error.msg
    assert len(error.msg) < 300, "messages quote long values shortened"


def test_messages_say_what_was_expected_and_what_was_found() -> None:
    def message(doc: object) -> str:
        error = generated_error(host_local.validate, doc)
        assert error is not None
        return error.msg

    assert message(_with("cniVersion", 1)) == (
        "invalid network config: $.cniVersion: expected a string, found a number"
    )
    assert message(_with("ipam.ranges.0.0.subnet", "10.0.0.0/33")) == (
        "invalid network config: $.ipam.ranges[0][0].subnet:"
        " '10.0.0.0/33' is not a valid CIDR: prefix length exceeds 32"
    )
    assert message(_with("ipam.subnets", "10.0.0.0/8")) == (
        "unsupported field $.ipam.subnets = '10.0.0.0/8'"
    )
    assert message(_with("ipam.type", DELETE)) == "invalid network config: $.ipam.type: is required"
    assert Code.UNSUPPORTED_FIELD == 2 and Code.INVALID_CONFIG == 7


ACCEPTED: list[tuple[str, object]] = [
    ("other plugins' keys at the top", _with("hairpinMode", {"any": ["thing"]})),
    ("the legacy form next to ranges", _with("ipam.subnet", "10.22.0.0/16")),
    ("a CIDR with host bits (the plugin decides)", _with("ipam.ranges.0.0.subnet", "10.1.2.3/8")),
    ("IPv4-mapped IPv6", _with("ipam.routes.2.gw", "::ffff:10.0.0.1")),
    (
        "prevResult, runtimeConfig and args",
        {**BASE, "prevResult": {}, "runtimeConfig": {}, "args": {}},
    ),
    ("a huge valid name", _with("name", "n" * 100_000)),
    ("a cni.dev key", {**BASE, "cni.dev/valid-attachments": []}),
]


@pytest.mark.parametrize("document", [pytest.param(d, id=w) for w, d in ACCEPTED])
def test_valid_edge_cases_are_accepted_by_both(document: object) -> None:
    assert assert_same_verdict(HOST_LOCAL, document) is None


# --- hypothesis: both validators agree on made-up documents --------------------------------


def _containers(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, (dict, list)):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, out)
    return out


EXAMPLE_DOCS = [check.doc for path in EXAMPLE_FILES for check in _checks(path)]


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    """An example (as host-local is sent it) with one to three random edits."""
    doc = copy.deepcopy(draw(st.sampled_from(EXAMPLE_DOCS)))
    for _ in range(draw(st.integers(1, 3))):
        node = draw(st.sampled_from(_containers(doc, [])))
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(node, dict):
            if action == "add" or not node:
                node[draw(json_keys)] = draw(json_values)
                continue
            key = draw(st.sampled_from(sorted(node)))
        else:
            if action == "add" or not node:
                node.append(draw(json_values))
                continue
            key = draw(st.integers(0, len(node) - 1))
        if action == "delete":
            del node[key]
        else:
            node[key] = draw(json_values | st.sampled_from(INTERESTING_STRINGS))
    return doc


AGREE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@AGREE
@given(mutated_examples())
def test_host_local_validators_agree_on_mutated_examples(doc: dict[str, Any]) -> None:
    assert_same_verdict(HOST_LOCAL, doc)


@AGREE
@given(mutated_examples())
def test_bridge_validators_agree_on_mutated_examples(doc: dict[str, Any]) -> None:
    assert_same_verdict(BRIDGE, doc)


@AGREE
@given(json_values)
def test_host_local_validators_agree_on_random_json(doc: object) -> None:
    assert_same_verdict(HOST_LOCAL, doc)


@AGREE
@given(
    st.fixed_dictionaries(
        {"cniVersion": json_scalars, "name": json_scalars, "ipam": json_values},
        optional={"logFile": json_scalars, "args": json_values},
    )
)
def test_host_local_validators_agree_on_plausible_shapes(doc: dict[str, Any]) -> None:
    assert_same_verdict(HOST_LOCAL, doc)


@AGREE
@given(json_values, st.booleans())
def test_envelope_validators_agree(doc: object, as_list: bool) -> None:
    if isinstance(doc, dict) and as_list:
        doc.setdefault("plugins", [{"type": "bridge", "ipam": {"type": "x"}}])
    assert_same_verdict(CONFLIST if as_list else CONF, doc)


# --- the generator: every supported keyword means the same as in jsonschema ----------------

KITCHEN_SINK: dict[str, Any] = {
    "$schema": DRAFT,
    "$id": "urn:pycni:test:kitchen-sink",
    "$comment": "every keyword gen_validator supports",
    "title": "kitchen sink",
    "type": "object",
    "required": ["kind"],
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["a", "b", 1, True, None, [1, 2], {"k": 1}]},
        "mode": {"enum": ["fast", "slow"], "default": "fast", "examples": ["slow"]},
        "fixed": {"const": 3},
        "fixedText": {"const": "x"},
        "fixedList": {"const": [True, 0]},
        "count": {"type": "integer", "minimum": 0, "maximum": 10},
        "ratio": {"type": "number", "minimum": -1.5, "maximum": 2.5},
        "anyNumber": {"minimum": 3},
        "label": {"type": ["string", "null"], "minLength": 2, "maxLength": 5},
        "short": {"type": "string", "minLength": 1, "maxLength": 1},
        "flag": {"type": "boolean"},
        "nothing": {"type": "null"},
        "tags": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "format": "cni-name"},
        },
        "pair": {"type": "array", "minItems": 2, "maxItems": 1},
        "anyArray": {"maxItems": 1, "minItems": 0},
        "tree": {"$ref": "#/$defs/node"},
        "weird key/é\n": {"type": "string", "format": "abs-path"},
        "addr": {"type": ["string", "integer"], "format": "ip"},
        "net": {"format": "cidr"},
        "open": {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}},
        "closedEmpty": {"type": "object", "additionalProperties": False},
        "untyped": {
            "required": ["a"],
            "properties": {"a": {"type": "string"}},
            "items": {"type": "integer"},
        },
        "refWithSiblings": {"$ref": "#/$defs/positive", "maximum": 100},
    },
    "$defs": {
        "node": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
        },
        "positive": {"type": "number", "minimum": 1},
    },
}


def _import_generated(schema: dict[str, Any], name: str) -> ModuleType:
    """Generate a validator module for `schema` and load it (from memory: no files left)."""
    text = gen.generate(schema, f"tests/{name}.schema.json")
    module = ModuleType(f"generated_{name}")
    exec(compile(text, f"<generated {name}>", "exec"), module.__dict__)
    return module


_SINK_CACHE: list[tuple[Validate, Any]] = []


def _kitchen_sink() -> tuple[Validate, Any]:
    """The kitchen sink's generated validator (built once) and its jsonschema validator."""
    if not _SINK_CACHE:
        module = _import_generated(KITCHEN_SINK, "kitchen_sink")
        _SINK_CACHE.append((module.validate, validate.schema_validator(KITCHEN_SINK)))
    return _SINK_CACHE[0]


SINK_CASES: list[tuple[str, object, int | None, str]] = [
    # (what, document, code or None when valid, path)
    ("minimal", {"kind": "a"}, None, ""),
    ("enum by JSON equality", {"kind": 1.0}, None, ""),
    ("enum object", {"kind": {"k": 1.0}}, None, ""),
    ("enum: true is not 1", {"kind": [True, 2]}, 7, "$.kind"),
    ("enum: 1 is not true", {"kind": "a", "fixedList": [1, 0]}, 7, "$.fixedList"),
    ("string enum", {"kind": "a", "mode": "medium"}, 7, "$.mode"),
    ("const", {"kind": "a", "fixed": 3.0, "fixedText": "x"}, None, ""),
    ("const mismatch", {"kind": "a", "fixed": "3"}, 7, "$.fixed"),
    ("integer", {"kind": "a", "count": 10}, None, ""),
    ("integer 1.0", {"kind": "a", "count": 1.0}, None, ""),
    ("boolean is not an integer", {"kind": "a", "count": True}, 7, "$.count"),
    ("false is not an integer", {"kind": "a", "count": False}, 7, "$.count"),
    ("fraction is not an integer", {"kind": "a", "count": 1.5}, 7, "$.count"),
    ("integer over maximum", {"kind": "a", "count": 11}, 7, "$.count"),
    ("integer under minimum", {"kind": "a", "count": -1}, 7, "$.count"),
    ("huge integer", {"kind": "a", "count": 10**400}, 7, "$.count"),
    ("boolean is not a number", {"kind": "a", "ratio": False}, 7, "$.ratio"),
    ("minimum ignores booleans", {"kind": "a", "anyNumber": True}, None, ""),
    ("minimum ignores strings", {"kind": "a", "anyNumber": "1"}, None, ""),
    ("untyped minimum", {"kind": "a", "anyNumber": 2}, 7, "$.anyNumber"),
    ("string or null", {"kind": "a", "label": None}, None, ""),
    ("string or null: number", {"kind": "a", "label": 5}, 7, "$.label"),
    ("minLength", {"kind": "a", "label": "x"}, 7, "$.label"),
    ("maxLength counts code points", {"kind": "a", "label": "ééééé"}, None, ""),
    ("maxLength", {"kind": "a", "label": "x" * 100_000}, 7, "$.label"),
    ("exactly one char", {"kind": "a", "short": ""}, 7, "$.short"),
    ("null", {"kind": "a", "nothing": 0}, 7, "$.nothing"),
    ("items format", {"kind": "a", "tags": ["ok", "not ok"]}, 7, "$.tags[1]"),
    ("maxItems", {"kind": "a", "tags": ["a", "b", "c", "d"]}, 7, "$.tags"),
    ("minItems 2", {"kind": "a", "pair": [1]}, 7, "$.pair"),
    ("maxItems 1", {"kind": "a", "anyArray": [1, 2]}, 7, "$.anyArray"),
    ("untyped maxItems ignores strings", {"kind": "a", "anyArray": "ab"}, None, ""),
    (
        "recursive $ref",
        {"kind": "a", "tree": {"children": [{"children": [{"value": 1}]}]}},
        None,
        "",
    ),
    (
        "deep in a recursive $ref",
        {"kind": "a", "tree": {"children": [{"children": [{"value": "1"}]}]}},
        7,
        "$.tree.children[0].children[0].value",
    ),
    (
        "unknown key in a $def",
        {"kind": "a", "tree": {"children": [{"leaf": 1}]}},
        2,
        "$.tree.children[0].leaf",
    ),
    ("weird key", {"kind": "a", "weird key/é\n": "relative"}, 7, '$["weird key/é\\u000a"]'),
    ("ip format on a string", {"kind": "a", "addr": "300.1.1.1"}, 7, "$.addr"),
    ("ip format skips integers", {"kind": "a", "addr": 5}, None, ""),
    ("untyped cidr format skips non-strings", {"kind": "a", "net": [1]}, None, ""),
    ("untyped cidr format", {"kind": "a", "net": "10.0.0.0/99"}, 7, "$.net"),
    ("nested required", {"kind": "a", "open": {}}, 7, "$.open.x"),
    ("open object allows more", {"kind": "a", "open": {"x": 1, "y": 2}}, None, ""),
    ("closed empty object", {"kind": "a", "closedEmpty": {"z": 1}}, 2, "$.closedEmpty.z"),
    ("untyped: object", {"kind": "a", "untyped": {"a": 1}}, 7, "$.untyped.a"),
    ("untyped: array", {"kind": "a", "untyped": [1, "2"]}, 7, "$.untyped[1]"),
    ("untyped: scalar", {"kind": "a", "untyped": "anything"}, None, ""),
    ("$ref with siblings: the $ref", {"kind": "a", "refWithSiblings": 0}, 7, "$.refWithSiblings"),
    (
        "$ref with siblings: the sibling",
        {"kind": "a", "refWithSiblings": 101},
        7,
        "$.refWithSiblings",
    ),
    ("unknown top-level key", {"kind": "a", "extra": None}, 2, "$.extra"),
    ("required", {}, 7, "$.kind"),
]


@pytest.mark.parametrize(
    ("document", "code", "path"),
    [pytest.param(doc, code, path, id=what) for what, doc, code, path in SINK_CASES],
)
def test_every_keyword_means_what_jsonschema_says(
    document: object, code: int | None, path: str
) -> None:
    error = assert_same_verdict(_kitchen_sink(), document)
    if code is None:
        assert error is None
    else:
        assert error is not None
        assert (error.code, error.details) == (code, path)


@AGREE
@given(st.dictionaries(st.sampled_from(sorted(KITCHEN_SINK["properties"])), json_values))
def test_kitchen_sink_validators_agree(doc: dict[str, Any]) -> None:
    assert_same_verdict(_kitchen_sink(), doc)


def test_generated_code_passes_ruff_and_mypy(tmp_path: Path) -> None:
    """The kitchen sink exercises every code path of the generator; its output must pass the
    project's own checks (the real generated modules are checked by the project-wide run)."""
    module = tmp_path / "kitchen_sink.py"
    module.write_text(gen.generate(KITCHEN_SINK, "tests/kitchen-sink.schema.json"))
    bin_dir = Path(sys.executable).parent
    config = ["--config", str(REPO / "pyproject.toml")]
    for command in (
        [str(bin_dir / "ruff"), "check", *config, str(module)],
        [str(bin_dir / "ruff"), "format", "--check", "--diff", *config, str(module)],
        [str(bin_dir / "mypy"), "--strict", "--follow-imports=silent", str(module)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}{done.stderr}"


# --- the generator: up to date, and loud about what it does not implement ------------------


def test_generated_validators_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_reports_a_hand_edited_or_stale_module(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, str(GENERATOR), "--out-dir", str(out)]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    assert subprocess.run([*command, "--check"], capture_output=True, check=False).returncode == 0
    generated = out / "host_local.py"
    generated.write_text(generated.read_text().replace('"is required"', '"is needed"'))
    stale = out / "gone.py"
    stale.write_text(f'"""{gen.GENERATED_MARK} from conf/schemas/gone.schema.json."""\n')
    done = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "host_local.py is not what its schema produces" in done.stderr
    assert "gone.py was generated from a schema that is gone" in done.stderr


def _schema(**properties: Any) -> dict[str, Any]:
    return {"$schema": DRAFT, "type": "object", "properties": properties}


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        (_schema(name={"type": "string", "pattern": "^a"}), "unsupported keyword 'pattern'"),
        (_schema(x={"anyOf": [{"type": "string"}]}), "unsupported keyword 'anyOf'"),
        (_schema(x={"exclusiveMinimum": 0}), "unsupported keyword 'exclusiveMinimum'"),
        (_schema(x={"prefixItems": [{"type": "string"}]}), "unsupported keyword 'prefixItems'"),
        (_schema(x={"uniqueItems": True}), "unsupported keyword 'uniqueItems'"),
        (_schema(x={"deprecated": True}), "unsupported keyword 'deprecated'"),
        (
            {**_schema(), "patternProperties": {"^x": {"type": "string"}}},
            "unsupported keyword 'patternProperties'",
        ),
        (
            {**_schema(), "additionalProperties": {"type": "string"}},
            "additionalProperties must be true or false",
        ),
        (_schema(x={"format": "email"}), "unknown format 'email'"),
        (_schema(x={"$ref": "other.json#/$defs/y"}), "$ref 'other.json#/$defs/y'"),
        (_schema(x={"$ref": "#/$defs/missing"}), "$ref '#/$defs/missing'"),
        (_schema(x=True), "boolean schemas are not supported"),
        (_schema(x={"$defs": {"y": {}}}), "'$defs' belongs at the root only"),
        (_schema(x={"type": "strin"}), "#/properties/x/type"),
        ({"type": "object"}, '"$schema" must be'),
    ],
)
def test_generator_refuses_what_it_cannot_implement(schema: dict[str, Any], complaint: str) -> None:
    with pytest.raises(gen.SchemaError) as caught:
        gen.generate(schema, "tests/bad.schema.json")
    assert complaint in str(caught.value)


def test_generator_fails_loudly_from_the_command_line(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "bad.schema.json").write_text(json.dumps(_schema(x={"oneOf": [{"type": "string"}]})))
    done = subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--schema-dir",
            str(schemas),
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unsupported keyword 'oneOf'" in done.stderr
    assert not (tmp_path / "bad.py").exists()


def test_generated_modules_import_only_errors_and_schema_formats() -> None:
    for path in (REPO / "pycni" / "validators").glob("*.py"):
        text = path.read_text()
        if gen.GENERATED_MARK not in text:
            continue
        imports = {
            line.split()[1] for line in text.splitlines() if line.startswith(("from ", "import "))
        }
        assert imports <= {"__future__", "pycni.cni.errors", "pycni.validators.formats"}, path.name
