"""The two validators of a schema held to one verdict: the generated one (pycni.validators, what
the plugins run) and jsonschema on the schema itself (what `pycni validate` runs); and the
hypothesis strategies that make up JSON documents to feed them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from pycni.cni.errors import CniError
from pycni.conformance import validate

Validate = Callable[[object], None]


def generated_error(generated: Validate, doc: object) -> CniError | None:
    try:
        generated(doc)
    except CniError as err:
        return err
    return None


def assert_same_verdict(pair: tuple[Validate, Any], doc: object) -> CniError | None:
    """Both accept, or both reject and jsonschema's errors include the generated one."""
    generated, schema_validator = pair
    error = generated_error(generated, doc)
    reported = [(e.code, e.msg) for e in validate.problems(schema_validator, doc, "$")]
    if error is None:
        assert reported == [], f"generated validator accepts, jsonschema reports {reported}"
    else:
        assert reported, f"generated validator rejects ({error.msg}), jsonschema accepts"
        assert (error.code, error.msg) in reported, (
            f"generated: {(error.code, error.msg)}; jsonschema: {reported}"
        )
    return error


INTERESTING_STRINGS = [
    "",
    "pycni-host-local",
    "1.0.0",
    "net-1",
    "-net",
    "a b",
    "réseau",
    "net\n",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "10.0.0.0/032",
    "10.0.0.0/",
    "10.0.0.0/ 8",
    "010.0.0.1",
    "10.0.0.1",
    "10.0.0.256",
    "1.2.3",
    "::",
    "::/0",
    "fd00::1",
    "fd00::/129",
    "::ffff:1.2.3.4",
    "fe80::1%eth0",
    "fd00::1/64",
    "/var/lib/cni",
    "/var/lib/../cni",
    "/var/lib/..cni",
    "var/lib",
    "/a\0b",
    "/",
]
KNOWN_KEYS = sorted(
    {
        "cniVersion", "cniVersions", "name", "ipam", "logFile", "prevResult", "runtimeConfig",
        "args", "type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes",
        "dataDir", "resolvConf", "dst", "gw", "plugins", "disableCheck", "disableGC",
        "capabilities", "loadOnlyInlinedPlugins",
    }
)  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING_STRINGS)
)
json_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=25,
)
