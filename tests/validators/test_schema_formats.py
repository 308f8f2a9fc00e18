"""pycni.validators.formats: the format checks both validators share, and the generated code's
helpers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema._utils import equal as jsonschema_equal  # type: ignore[import-untyped]

from pycni.cni.ip import IP, Prefix
from pycni.validators import formats
from tests.support.interpreter import python_output

CNI_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # the spec's ^...$, with Go's `$`


@pytest.mark.parametrize("name", ["a", "0", "pod-network", "k8s_pod.net-1", "A.B_C-D"])
def test_cni_name_accepts(name: str) -> None:
    assert formats.cni_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "a/b", "né", "a\n", "٣", "a:b"])
def test_cni_name_refuses(name: str) -> None:
    problem = formats.cni_name_problem(name)
    assert problem is not None
    assert problem.startswith(f"'{name}' is not a valid name: it must start with a letter")


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | st.from_regex(CNI_NAME))
def test_cni_name_is_the_spec_regex(name: str) -> None:
    assert (formats.cni_name_problem(name) is None) == bool(CNI_NAME.fullmatch(name))


def _parses(parse: type[IP] | type[Prefix], text: str) -> bool:
    try:
        parse.parse(text)
    except ValueError:
        return False
    return True


ADDRESSY = st.text(alphabet="0123456789abcdef.:/%+- x", max_size=24)


@settings(max_examples=500)
@given(ADDRESSY | st.text(max_size=10))
def test_ip_and_cidr_are_exactly_what_pycni_ip_parses(text: str) -> None:
    assert (formats.ip_problem(text) is None) == _parses(IP, text)
    assert (formats.cidr_problem(text) is None) == _parses(Prefix, text)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("10.0.0.0/33", "prefix length exceeds 32"),
        ("fd00::/129", "prefix length exceeds 128"),
        ("10.0.0.0", "expected an address and a prefix length, e.g. 10.1.0.0/16 or fd00::/64"),
        ("10.0.0.256/24", "'10.0.0.256' is not an IPv4 or IPv6 address"),
        ("10.0.0.0/+8", "the prefix length '+8' is not a number"),
        ("10.0.0.0/", "the prefix length '' is not a number"),
    ],
)
def test_cidr_problem_says_why(text: str, cause: str) -> None:
    assert formats.cidr_problem(text) == f"'{text}' is not a valid CIDR: {cause}"


def test_ip_problem() -> None:
    assert formats.ip_problem("10.0.0.1") is None
    assert formats.ip_problem("fd00::1") is None
    assert formats.ip_problem("10.0.0.1/8") == "'10.0.0.1/8' is not a valid IPv4 or IPv6 address"


@pytest.mark.parametrize(
    ("path", "cause"),
    [
        ("/var/lib/cni", None),
        ("/", None),
        ("/var/lib/..cni/a..", None),
        ("var/lib", "it must start with '/'"),
        ("", "it must start with '/'"),
        ("/var/../etc", "it must not contain a '..' component"),
        ("/var/..", "it must not contain a '..' component"),
        ("/var\0", "it contains a NUL character"),
    ],
)
def test_abs_path(path: str, cause: str | None) -> None:
    problem = formats.abs_path_problem(path)
    assert problem == (
        None if cause is None else f"{formats.quoted(path)} is not an absolute path: {cause}"
    )


def test_every_format_is_a_function_of_a_string() -> None:
    assert set(formats.FORMATS) == {"cni-name", "ifname", "ip", "cidr", "abs-path"}
    for check in formats.FORMATS.values():
        assert check("") is None or isinstance(check(""), str)


def test_long_values_are_shortened_in_messages() -> None:
    problem = formats.cidr_problem("1" * 1_000_000)
    assert problem is not None and len(problem) < 200
    assert formats.quoted("x" * 100) == "'" + "x" * 57 + "...'"


@pytest.mark.parametrize(
    ("value", "kind"),
    [("", "a string"), (True, "a boolean"), (0, "a number"), (0.5, "a number"), (None, "null"),
     ([], "an array"), ({}, "an object")],
)  # fmt: skip
def test_json_kind(value: object, kind: str) -> None:
    assert formats.json_kind(value) == kind


def test_json_number_and_integer() -> None:
    assert formats.is_json_number(1) and formats.is_json_number(1.5)
    assert not formats.is_json_number(True) and not formats.is_json_number("1")
    assert formats.is_json_integer(1) and formats.is_json_integer(1.0)
    assert not formats.is_json_integer(False) and not formats.is_json_integer(1.5)
    assert not formats.is_json_integer(float("inf"))


@pytest.mark.parametrize(
    ("key", "path"),
    [("ipam", "$.ipam"), ("_x1", "$._x1"), ("1x", '$["1x"]'), ("cni.dev/x", '$["cni.dev/x"]'),
     ("", '$[""]'), ('a"b\\', '$["a\\"b\\\\"]'), ("a\nb", '$["a\\u000ab"]'), ("é", '$["é"]')],
)  # fmt: skip
def test_member_path(key: str, path: str) -> None:
    assert formats.member_path("$", key) == path


small_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, 1.0, 1.5])
    | st.text("ab", max_size=2)
)
json_values = st.recursive(
    small_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text("ab", max_size=2), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=1000)
@given(json_values, json_values)
def test_json_equal_is_jsonschemas_equality(one: object, two: object) -> None:
    assert formats.json_equal(one, two) == jsonschema_equal(one, two)
    assert formats.json_equal(one, one)


def test_the_generated_validators_cost_no_heavy_import() -> None:
    """What a plugin pays for its config check: pycni modules and _socket, nothing heavy."""
    program = (
        "before = set(sys.modules);"
        " import pycni.validators.host_local, pycni.validators.netconf;"
        " print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = set(python_output(program, isolated=True).split())
    assert {m for m in loaded if not m.startswith("pycni")} <= {"__future__", "_socket", "_json"}, (
        loaded
    )


@pytest.mark.parametrize("name", ["eth0", "a" * 15, "net1", "é" * 7, "veth-1.2_x"])
def test_ifname_accepts_linux_interface_names(name: str) -> None:
    assert formats.ifname_problem(name) is None


@pytest.mark.parametrize("name", ["", "a" * 16, "é" * 8, ".", "..", "a/b", "a:b", "a b", "a\tb"])
def test_ifname_refuses_what_the_kernel_refuses(name: str) -> None:
    problem = formats.ifname_problem(name)
    assert problem is not None and "interface name" in problem
