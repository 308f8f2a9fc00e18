"""Hostile input for any plugin: stdin and CNI_* as hypothesis makes them up, a plugin run with
them, and the outcome the spec allows: success or the spec's error JSON (a plausible code, a
message, exit status 1), never a traceback on stdout, never an internal error (code 100)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pycni.lab.netns import Netns
from pycni.lab.runtime import Invocation, invoke

PLAUSIBLE_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 101, 102, 103, 104, 105, 106}
NETNS = "/proc/self/ns/net"  # exists; host-local never enters it
# The frozen plugins' hostile-input tests: each example is a process or two, so fewer of them;
# one node namespace (a function-scoped fixture) serves every example of a test.
FROZEN_EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PEERS = [{"name": "n2", "nodeIP": "172.30.0.3", "podCIDRs": ["10.41.0.0/24"]}]  # beyond uplink

BASE: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "name": "hostile",
    "ipam": {
        "type": "pycni-host-local",
        "ranges": [[{"subnet": "10.40.0.0/24"}], [{"subnet": "fd40::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    },
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "10.40.0.0/24",
            "10.40.0.0/99999999999999999999",
            "fd40::/64",
            "fd40::5",
            "::ffff:10.40.0.5",
            "10.40.0.256",
            "10.40.0.0/24\x00",
            "../../etc",
            "/",
            "\u202e\u0000x",
            "a" * 5000,
            "1.1.0",
            "0.1.0",
            "eth0",
            "IgnoreUnknown=1",
        ]
    )
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=12,
)
KEYS = [
    "cniVersion",
    "cniVersions",
    "name",
    "ipam",
    "type",
    "ranges",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "routes",
    "dst",
    "gw",
    "dataDir",
    "resolvConf",
    "prevResult",
    "runtimeConfig",
    "ips",
    "ipRanges",
    "args",
    "cni",
    "logFile",
    "ips",
    "interfaces",
]


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random-json", "bytes", "deep", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return (
            ("[" * depth + "]" * depth).encode()
            if draw(st.booleans())
            else ('{"a":' * depth + "1" + "}" * depth).encode()
        )
    if kind == "huge":
        return json.dumps({**BASE, "pad": "x" * draw(st.integers(1 << 19, 1 << 21))}).encode()
    if kind == "random-json":
        return json.dumps(draw(values)).encode()
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        ipam = doc.get("ipam")
        target = draw(st.sampled_from([doc, ipam] if isinstance(ipam, dict) else [doc]))
        key = draw(st.sampled_from(KEYS))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(values)
    return json.dumps(doc).encode()


envs = st.fixed_dictionaries(
    {
        "CNI_COMMAND": st.sampled_from(
            ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "add", ""]
        ),
        "CNI_CONTAINERID": st.sampled_from(["c1", "", "../../x", "a" * 300, "ok-id.1"])
        | st.text(max_size=20),
        "CNI_IFNAME": st.sampled_from(["eth0", "", "a" * 16, "..", "e/0", "net1"])
        | st.text(max_size=20),
        "CNI_NETNS": st.sampled_from([NETNS, "", "/run/netns/pycni-none", "/etc/passwd"]),
        "CNI_ARGS": st.sampled_from(
            ["", "IgnoreUnknown=1;IP=10.40.0.9", "IP=fd40::9", "X", "A=B=C", "IP=300.1.1.1"]
        ),
    }
)


def text_env(env: dict[str, str]) -> dict[str, str]:
    """A real environment cannot hold NUL; everything else goes."""
    return {k: v.replace("\x00", "") for k, v in env.items()}


def invoke_hostile(
    bundle: Path, plugin: str, env: dict[str, str], stdin: bytes, netns: Netns
) -> Invocation:
    """`plugin` from the bundle, run in `netns` (the node) with whatever `env` and `stdin` hold;
    a CNI_NETNS of NETNS means the node itself. Never left running: 20 s at most."""
    env = text_env(env)
    inv = invoke(
        str(bundle / plugin),
        env.get("CNI_COMMAND", ""),
        container_id=env["CNI_CONTAINERID"],
        netns=netns.path if env["CNI_NETNS"] == NETNS else env["CNI_NETNS"],
        ifname=env["CNI_IFNAME"],
        cni_args=env["CNI_ARGS"],
        cni_path=str(bundle),
        config=stdin,
        in_netns=netns.path,
        timeout=20,
    )
    assert not inv.timed_out
    return inv


def check_outcome(status: int, out: bytes) -> None:
    assert status in (0, 1), status
    text = out.decode("utf-8", errors="replace")
    assert "Traceback" not in text
    if status == 1:
        error = json.loads(text)
        assert isinstance(error, dict) and set(error) <= {"cniVersion", "code", "msg", "details"}
        assert error["code"] in PLAUSIBLE_CODES, error  # never 100: a hostile input is no bug
        assert isinstance(error["msg"], str) and error["msg"]
    elif text.strip():
        assert isinstance(json.loads(text), dict)


def as_json(stdin: bytes) -> Any:
    """The document `stdin` holds, or None where it is not JSON (or nested too deep to read)."""
    try:
        return json.loads(stdin)
    except (ValueError, RecursionError):
        return None


def give_uplink(netns: Netns) -> None:
    """An underlay link (172.30.0.2/24) and a default route in the node namespace, so that
    hostile configs get past underlay detection; once per namespace."""
    if "uplink" not in netns.link_names():
        netns.ip("link", "add", "uplink", "type", "veth", "peer", "name", "uplink-peer")
        netns.ip("addr", "add", "172.30.0.2/24", "dev", "uplink")
        netns.ip("link", "set", "uplink", "up")
        netns.ip("link", "set", "uplink-peer", "up")
        netns.ip("route", "add", "default", "via", "172.30.0.1")


def aimed_at(stdin: bytes, plugin_type: str, data_dir: Path, **defaults: Any) -> bytes:
    """`stdin` for `plugin_type`: where it holds a JSON object, its `type` and `defaults` are
    set unless present, and an ipam section's dataDir is pinned to `data_dir` (so the test
    knows where a plugin may write); anything else goes unchanged."""
    doc = as_json(stdin)
    if not isinstance(doc, dict):
        return stdin
    doc.setdefault("type", plugin_type)
    for key, value in defaults.items():
        doc.setdefault(key, value)
    if isinstance(doc.get("ipam"), dict):
        doc["ipam"]["dataDir"] = str(data_dir)
    return json.dumps(doc).encode()
