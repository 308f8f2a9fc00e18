"""pycni conformance: the harness, proved right against plugins whose verdicts we know.

- The Go reference plugins (bridge and ptp, with host-local) pass every check they can take;
  GC and STATUS are not applicable to them (their VERSION stops at 1.0.0) and never pass.
- Broken plugins -- small wrappers around a working plugin that break one rule each -- are
  each caught by the check that owns that rule (and not by the ones that do not).
- pycni's own frozen plugins pass every check.

Plus the parts that need no root: check selection, result validation, tiny ranges, reports.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pycni import cli
from pycni.conformance import checks, nodestate, runner
from pycni.conformance.checks import Verdict
from pycni.conformance.runner import CheckResult, Report, run_suite
from pycni.lab import runtime as runtime_mod
from tests.support.capture import kernel_has_ipip
from tests.support.ci import unavailable
from tests.support.paths import EXAMPLES, KIND

REFERENCE_ONLY_TO_1_0 = {"gc.unlisted", "gc.empty-list", "status.ready"}
CORE = [
    "add.result-shape",
    "add.result-matches-netns",
    "add.duplicate",
    "check.after-add",
    "check.removed-address",
    "del.twice",
    "del.netns-gone",
    "del.empty-netns",
    "del.no-prev-result",
    "del.releases",
]


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        unavailable("the conformance suite creates network namespaces: needs root")


def reference_conf(plugin: str, subnet: str) -> dict[str, Any]:
    main: dict[str, Any] = {"type": plugin, "ipMasq": True}
    if plugin == "bridge":
        main.update(bridge="cni0", isGateway=True)
    main["ipam"] = {
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    return {"cniVersion": "1.0.0", "name": f"ref-{plugin}", "plugins": [main]}


def verdicts(report: Report) -> dict[str, Verdict]:
    return {r.id: r.verdict for r in report.results}


def assert_no_leftover_namespaces() -> None:
    """None of the namespaces this process made for the suite is left."""
    ours = tuple(
        f"{prefix}-{os.getpid()}-" for prefix in (runner.NODE_NETNS_PREFIX, checks.POD_NETNS_PREFIX)
    )
    left = [name for name in os.listdir("/run/netns") if name.startswith(ours)]
    assert not left, f"namespaces left behind: {left}"


# --- the Go reference plugins --------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize(
    ("plugin", "subnet"), [("bridge", "10.88.0.0/24"), ("ptp", "10.89.0.0/24")]
)
def test_reference_plugins_pass_what_they_implement(
    root: None, reference: Path, plugin: str, subnet: str
) -> None:
    report = run_suite([str(reference)], reference_conf(plugin, subnet))
    print(runner.render_table(report))
    found = verdicts(report)
    assert set(found) == {c.id for c in checks.CHECKS}
    failed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert set(failed) == REFERENCE_ONLY_TO_1_0, failed
    for check_id in REFERENCE_ONLY_TO_1_0:  # host-local has no GC: never a pass
        assert found[check_id] == Verdict.NOT_APPLICABLE
        assert "1.1.0" in report.verdict(check_id).detail
    assert not report.failed
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.reference
def test_gc_is_not_applicable_when_the_plugins_stop_before_1_1_0(
    root: None, reference: Path
) -> None:
    """A 1.1.0 config: the runtime selects 1.1.0, the reference plugins do not list it."""
    conf = {**reference_conf("bridge", "10.88.0.0/24"), "cniVersion": "1.1.0"}
    report = run_suite([str(reference)], conf, only=["version.negotiation", "gc", "status"])
    found = verdicts(report)
    assert found["version.negotiation"] == Verdict.FAIL
    assert "not supported by bridge" in report.verdict("version.negotiation").detail
    for check_id in REFERENCE_ONLY_TO_1_0:
        assert found[check_id] == Verdict.NOT_APPLICABLE
        assert "VERSION lists" in report.verdict(check_id).detail


@pytest.mark.netns
@pytest.mark.reference
def test_a_single_plugin_conf_is_a_one_plugin_chain(root: None, reference: Path) -> None:
    """A `.conf` (no `plugins`), with the harness's failing plugin chained after it."""
    conflist = reference_conf("ptp", "10.92.0.0/24")
    conf = {"cniVersion": "0.4.0", "name": "single", **conflist["plugins"][0]}
    report = run_suite([str(reference)], conf, only=["add.result-shape", "chain", "check"])
    assert {r.id: r.verdict for r in report.results} == {
        "add.result-shape": Verdict.PASS,
        "chain.failed-add-cleanup": Verdict.PASS,
        "chain.prev-result": Verdict.PASS,
        "check.after-add": Verdict.PASS,
        "check.removed-address": Verdict.PASS,
    }
    assert report.verdict("add.result-shape").detail.startswith("cniVersion 0.4.0")


# --- broken plugins: each caught by the right check --------------------------------------------

# A wrapper execs the real plugin with the same environment and stdin, then breaks one rule.
BROKEN_PLUGIN = r"""#!@PYTHON@ -I
import json, os, subprocess, sys
KIND, REAL, STATE = "@KIND@", "@REAL@", "@STATE@"
command = os.environ.get("CNI_COMMAND", "")
stdin = sys.stdin.buffer.read()
attachment = os.environ.get("CNI_CONTAINERID", "") + "-" + os.environ.get("CNI_IFNAME", "")
key = os.path.join(STATE, attachment)

def real(data=stdin):
    done = subprocess.run([REAL], input=data, capture_output=True)
    sys.stderr.buffer.write(done.stderr)
    return done.returncode, done.stdout

def finish(status, out):
    sys.stdout.buffer.write(out)
    sys.exit(status)

if KIND == "prints-on-del" and command == "DEL":
    status, out = real()
    finish(status, out or b'{"deleted": true}\n')
if KIND == "fails-second-del" and command in ("ADD", "DEL"):
    if command == "DEL" and not os.path.exists(key):
        finish(1, b'{"cniVersion": "1.0.0", "code": 11, "msg": "no such attachment"}')
    status, out = real()
    if status == 0:
        open(key, "w").close() if command == "ADD" else os.unlink(key)
    finish(status, out)
if KIND == "phantom-address" and command == "ADD":
    status, out = real()
    if status == 0:
        result = json.loads(out)
        index = next(i for i, itf in enumerate(result["interfaces"]) if itf.get("sandbox"))
        result["ips"].append({"address": "192.0.2.77/32", "interface": index})
        out = json.dumps(result).encode()
    finish(status, out)
if KIND == "leaks-on-del" and command == "DEL":
    finish(0, b"")
if KIND == "error-exit-0":
    finish(0, real()[1])
if KIND == "accepts-duplicate" and command == "ADD":
    status, out = real()
    if status != 0 and os.path.exists(key):
        finish(0, open(key, "rb").read())
    if status == 0:
        open(key, "wb").write(out)
    finish(status, out)
if KIND == "check-always-ok" and command == "CHECK":
    finish(0, b"")
if KIND == "bad-version" and command == "VERSION":
    finish(0, b'{"cniVersion": "1.0.0", "supportedVersions": ["1.0"]}')
if KIND == "gc-noop" and command == "GC":
    finish(0, b"")
if KIND == "gc-ignores-valid-list" and command == "GC":
    config = json.loads(stdin)
    config["cni.dev/valid-attachments"] = config["cni.dev/attachments"] = []
    finish(*real(json.dumps(config).encode()))
# del.node-as-found: per-pod state left on the node (the plugin runs inside the node namespace)
def pod_address(out):
    return json.loads(out)["ips"][0]["address"].split("/")[0]
if KIND == "leaks-neighbour" and command == "ADD":
    status, out = real()
    if status == 0:
        subprocess.run(["ip", "neigh", "replace", pod_address(out), "lladdr", "02:00:00:00:0e:01",
                        "dev", "@UPLINK@", "nud", "permanent"], check=True)
    finish(status, out)
if KIND == "leaks-nft-element" and command == "ADD":
    status, out = real()
    if status == 0:  # the table and set are the network's; the element is the pod's
        script = ("add table inet leaky\nadd set inet leaky pods { type ipv4_addr; }\n"
                  f"add element inet leaky pods {{ {pod_address(out)} }}\n")
        subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True)
    finish(status, out)
if KIND == "leaks-rule" and command == "ADD":
    status, out = real()
    if status == 0:  # with static IPAM every pod has the same address: the same rule each time
        subprocess.run(["ip", "rule", "add", "from", pod_address(out), "lookup", "100",
                        "priority", "1000"], capture_output=True)
    finish(status, out)
if KIND == "reserves-port" and command == "ADD":
    status, out = real()
    if status == 0:  # a port per pod kept from ephemeral use, and never given back
        port = 30000 + int(pod_address(out).rsplit(".", 1)[1])
        path = "/proc/sys/net/ipv4/ip_local_reserved_ports"
        reserved = open(path).read().strip()
        open(path, "w").write(f"{reserved},{port}" if reserved else str(port))
    finish(status, out)
# chain.prev-result: chained plugins that lose part of the prevResult they pass on
if KIND in ("drops-dns-nameserver", "rewrites-ip", "drops-route") and command == "ADD":
    status, out = real()
    if status == 0:
        result = json.loads(out)
        if KIND == "drops-dns-nameserver":
            result["dns"]["nameservers"] = result["dns"]["nameservers"][1:]
        elif KIND == "rewrites-ip":
            address, prefix = result["ips"][0]["address"].split("/")
            result["ips"][0]["address"] = address.rsplit(".", 1)[0] + ".99/" + prefix
        else:
            result["routes"] = result["routes"][:-1]
        out = json.dumps(result).encode()
    finish(status, out)
finish(*real())
"""


def install_broken(directory: Path, kind: str, real: Path) -> str:
    """A plugin named `broken-<kind>` in `directory` that wraps `real`."""
    state = directory / f"state-{kind}"
    state.mkdir(parents=True, exist_ok=True)
    name = f"broken-{kind}"
    script = (
        BROKEN_PLUGIN.replace("@PYTHON@", os.path.realpath(sys.executable))
        .replace("@KIND@", kind)
        .replace("@REAL@", str(real))
        .replace("@STATE@", str(state))
        .replace("@UPLINK@", runner.NODE_UPLINK[0])
    )
    path = directory / name
    path.write_text(script)
    path.chmod(0o755)
    return name


# kind -> (the check that must fail, checks of the same run that must still pass)
BROKEN_MAIN_PLUGINS = {
    "prints-on-del": ("output.silent", ["del.twice"]),
    "fails-second-del": ("del.twice", ["check.after-add"]),
    "phantom-address": ("add.result-matches-netns", ["add.result-shape"]),
    "leaks-on-del": ("del.releases", ["add.result-shape"]),
    "error-exit-0": ("error.object", ["add.result-shape"]),
    "accepts-duplicate": ("add.duplicate", ["del.twice"]),
    "check-always-ok": ("check.removed-address", ["check.after-add"]),
    "bad-version": ("version.output", ["add.result-shape"]),
}


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize("kind", sorted(BROKEN_MAIN_PLUGINS))
def test_a_broken_plugin_is_caught_by_the_right_check(
    root: None, reference: Path, tmp_path: Path, kind: str
) -> None:
    caught_by, still_passing = BROKEN_MAIN_PLUGINS[kind]
    name = install_broken(tmp_path, kind, reference / "ptp")
    conf = reference_conf("ptp", "10.90.0.0/24")
    conf["plugins"][0]["type"] = name
    report = run_suite([str(tmp_path), str(reference)], conf, only=[caught_by, *still_passing])
    found = verdicts(report)
    assert found[caught_by] == Verdict.FAIL, report.verdict(caught_by)
    for check_id in still_passing:
        assert found[check_id] == Verdict.PASS, report.verdict(check_id)
    assert report.failed
    assert_no_leftover_namespaces()


def pycni_conf(tmp_path: Path, ipam_type: str = "pycni-host-local") -> dict[str, Any]:
    """conf/examples/10-pycni-bridge.conflist with its lease store in tmp_path."""
    conf: dict[str, Any] = json.loads((EXAMPLES / "10-pycni-bridge.conflist").read_text())
    conf["plugins"][0]["ipam"].update(type=ipam_type, dataDir=str(tmp_path / "ipam"))
    return conf


@pytest.mark.netns
@pytest.mark.frozen
@pytest.mark.parametrize("kind", ["gc-noop", "gc-ignores-valid-list"])
def test_a_broken_gc_is_caught(root: None, bundle: Path, tmp_path: Path, kind: str) -> None:
    """IPAM wrappers around pycni-host-local (which implements GC), reached by pycni-bridge."""
    name = install_broken(tmp_path, kind, bundle / "pycni-host-local")
    report = run_suite(
        [str(bundle), str(tmp_path)], pycni_conf(tmp_path, name), only=["gc", "del.releases"]
    )
    found = verdicts(report)
    assert found["gc.unlisted"] == Verdict.FAIL, report.verdict("gc.unlisted")
    expected_empty = Verdict.FAIL if kind == "gc-noop" else Verdict.PASS
    assert found["gc.empty-list"] == expected_empty, report.verdict("gc.empty-list")
    assert found["del.releases"] == Verdict.PASS


# --- del.node-as-found and chain.prev-result ----------------------------------------------------

NODE_AND_CHAIN = ["del.node-as-found", "chain.prev-result"]
HOST_PORT = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
NAMESERVERS = ["10.96.0.10", "10.96.0.11"]


def reference_chain(subnet: str) -> dict[str, Any]:
    """bridge -> tuning -> portmap -> firewall, as a Go-plugin node would chain them; the
    bridge passes its `dns` on, so the chain carries interfaces, an IP, a route and DNS."""
    conf = reference_conf("bridge", subnet)
    conf["name"] = "ref-chain"
    conf["plugins"][0]["dns"] = {"nameservers": NAMESERVERS, "search": ["svc.cluster.local"]}
    conf["plugins"] += [
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "500"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
    ]
    return conf


@pytest.mark.netns
@pytest.mark.reference
def test_the_reference_chain_leaves_the_node_as_found_and_passes_prev_result_on(
    root: None, reference: Path
) -> None:
    conf = reference_chain("10.93.0.0/24")
    plain = run_suite(
        [str(reference)], conf, only=[*NODE_AND_CHAIN, "add.result-shape", "check.after-add"]
    )
    # with a hostPort, portmap's ADD writes per-pod iptables rules its DEL must take away
    mapped = run_suite([str(reference)], conf, only=NODE_AND_CHAIN, capability_args=HOST_PORT)
    for report in (plain, mapped):
        print(runner.render_table(report))
        assert not report.failed, runner.render_failures(report)
        assert set(verdicts(report).values()) == {Verdict.PASS}
    carried = plain.verdict("chain.prev-result").detail
    assert carried.startswith("tuning, portmap, firewall kept every entry"), carried
    assert "CHECK and DEL of every plugin got the cached result" in carried
    # Debian's portmap 1.1.1 fails CHECK for an IPv4-only pod with a hostPort (#819): the
    # check says the plugins after it got no CHECK, and judges what was handed
    assert "portmap's CHECK failed" in mapped.verdict("chain.prev-result").detail
    assert "iptables" in mapped.verdict("del.node-as-found").detail


@pytest.mark.netns
@pytest.mark.reference
def test_the_reference_bridge_with_static_ipam_passes_what_applies(
    root: None, reference: Path
) -> None:
    conf = reference_conf("bridge", "10.94.0.0/24")
    conf["plugins"][0]["ipam"] = {
        "type": "static",
        "addresses": [{"address": "10.94.0.5/24", "gateway": "10.94.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    report = run_suite([str(reference)], conf)
    print(runner.render_table(report))
    assert not report.failed, runner.render_failures(report)
    for check_id in NODE_AND_CHAIN:
        assert report.verdict(check_id).verdict == Verdict.PASS
    assert_no_leftover_namespaces()


# kind -> (main plugin it wraps or "chained" (it wraps tuning after ptp), IPAM, what the
# failure must say)
LEAKY_PLUGINS: dict[str, tuple[str, str, list[str]]] = {
    "leaks-neighbour": (
        "main",
        "host-local",
        [
            "neighbour 10.95.0.3 dev uplink0 (lladdr 02:00:00:00:0e:01 PERMANENT): added by ADD"
            " of pod 2 (broken-leaks-neighbour), not removed by its DEL",
        ],
    ),
    "leaks-nft-element": (
        "chained",
        "host-local",
        [
            "nft inet leaky set pods: element 10.95.0.3: added by ADD of pod 2"
            " (broken-leaks-nft-element), not removed by its DEL",
        ],
    ),
    "reserves-port": (
        "chained",
        "host-local",
        [
            "sysctl net/ipv4/ip_local_reserved_ports: '30002' -> '30002-30003' by ADD of pod 2"
            " (broken-reserves-port), not put back by its DEL",
        ],
    ),
    # every pod gets 10.95.0.5: the same rule each time, so the node after pod 2 equals the
    # node after pod 1; what gives it away is that it names pod 1's address
    "leaks-rule": (
        "main",
        "static",
        [
            "rule -4 priority 1000 src 10.95.0.5 table 100: added by ADD of pod 1"
            " (broken-leaks-rule), not removed by its DEL (it names pod 1's 10.95.0.5)",
        ],
    ),
}


def ptp_chain(tmp_path: Path, reference: Path, kind: str, role: str, ipam: str) -> dict[str, Any]:
    """ptp (or the broken wrapper of it) with `ipam`, and for a chained kind the broken wrapper
    of tuning (which passes prevResult on unchanged) after it."""
    conf = reference_conf("ptp", "10.95.0.0/24")
    main = conf["plugins"][0]
    main["dns"] = {"nameservers": NAMESERVERS}
    main["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16", "gw": "10.95.0.1"}]
    if ipam == "static":
        main["ipam"] = {
            "type": "static",
            "addresses": [{"address": "10.95.0.5/24", "gateway": "10.95.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
        }
    if role == "main":
        main["type"] = install_broken(tmp_path, kind, reference / "ptp")
    else:
        conf["plugins"].append({"type": install_broken(tmp_path, kind, reference / "tuning")})
    return conf


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize("kind", sorted(LEAKY_PLUGINS))
def test_a_plugin_that_leaves_pod_state_on_the_node_is_named_with_what_it_left(
    root: None, reference: Path, tmp_path: Path, kind: str
) -> None:
    role, ipam, expected = LEAKY_PLUGINS[kind]
    conf = ptp_chain(tmp_path, reference, kind, role, ipam)
    dirs = [str(tmp_path), str(reference)]
    report = run_suite(dirs, conf, only=NODE_AND_CHAIN)
    print(runner.render_failures(report))
    found = verdicts(report)
    assert found["del.node-as-found"] == Verdict.FAIL
    detail = report.verdict("del.node-as-found").detail
    for words in expected:
        assert words in detail
    assert "table inet leaky:" not in detail  # the network's table and set: made once, kept
    assert found["chain.prev-result"] == Verdict.PASS
    # after another check whose pod left the same on the suite's node: the check has a node
    # of its own, so the same is said
    report = run_suite(dirs, conf, only=["add.result-shape", "del.node-as-found"])
    assert report.verdict("add.result-shape").verdict == Verdict.PASS
    detail = report.verdict("del.node-as-found").detail
    for words in expected:
        assert words in detail
    assert_no_leftover_namespaces()


# kind -> what chain.prev-result must say (after "broken-<kind> dropped ")
DROPPING_PLUGINS = {
    "drops-dns-nameserver": "dns nameserver 10.96.0.10 from the prevResult it was given"
    " (ptp's result)",
    "drops-route": "route 10.200.0.0/16 via 10.95.0.1 from the prevResult it was given",
    "rewrites-ip": "ip 10.95.0.2/24 on eth0 in /run/netns/",
}


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize("kind", sorted(DROPPING_PLUGINS))
def test_a_chained_plugin_that_loses_part_of_its_prev_result_is_named(
    root: None, reference: Path, tmp_path: Path, kind: str
) -> None:
    conf = ptp_chain(tmp_path, reference, kind, "chained", "host-local")
    report = run_suite(
        [str(tmp_path), str(reference)], conf, only=[*NODE_AND_CHAIN, "check.after-add"]
    )
    print(runner.render_failures(report))
    found = verdicts(report)
    assert found["chain.prev-result"] == Verdict.FAIL
    detail = report.verdict("chain.prev-result").detail
    assert detail.startswith(f"broken-{kind} dropped {DROPPING_PLUGINS[kind]}"), detail
    assert "ptp dropped" not in detail
    assert found["del.node-as-found"] == Verdict.PASS
    if kind == "rewrites-ip":
        assert "its result has ip 10.95.0.99/24 on eth0" in detail
        # ptp's CHECK then fails on an address that is not in the pod; the failure says
        # whose doing the prevResult it was handed is
        after_add = report.verdict("check.after-add")
        assert after_add.verdict == Verdict.FAIL
        assert 'plugin type="ptp" failed (check)' in after_add.detail
        assert "broken-rewrites-ip dropped ip 10.95.0.2/24" in after_add.detail
    else:
        assert found["check.after-add"] == Verdict.PASS


class _RuntimeThatMixesUpPrevResults(runtime_mod.Runtime):
    """A runtime with a bug: it hands tuning's DEL the cached result without its routes."""

    def _exec(self, command: str, plugin: Any, request: Any, attachment: Any) -> Any:
        prev = request.get("prevResult")
        if command == "DEL" and plugin["type"] == "tuning" and prev:
            request = {**request, "prevResult": {**prev, "routes": []}}
        return super()._exec(command, plugin, request, attachment)


@pytest.mark.netns
@pytest.mark.reference
def test_a_plugin_handed_the_wrong_prev_result_is_named(
    root: None, reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness checks its own runtime side: which plugin got which prevResult."""
    monkeypatch.setattr(checks, "Runtime", _RuntimeThatMixesUpPrevResults)
    report = run_suite([str(reference)], reference_chain("10.96.0.0/24"), only=NODE_AND_CHAIN)
    wrong = report.verdict("chain.prev-result")
    assert wrong.verdict == Verdict.FAIL
    assert wrong.detail == (
        "the runtime handed tuning's DEL a prevResult that is not the cached result: it lacks"
        " route 0.0.0.0/0"
    )


def shipped_conflists() -> list[Path]:
    return sorted([*EXAMPLES.glob("*.conflist"), *KIND.glob("*.conflist")])


# A remote node on the harness node's uplink subnet (runner.NODE_UPLINK), so that the overlays
# keep network-wide state (routes, neighbours, FDB) on the node while pods come and go.
REMOTE_PEER = {"name": "node9", "nodeIP": "192.0.2.9", "podCIDRs": ["10.244.9.0/24"]}


def harness_conf(path: Path, tmp_path: Path) -> dict[str, Any]:
    """A shipped conflist as it runs on the harness's node: lease store in tmp_path, one remote
    peer instead of the agent's peersFile, the node's own address as localIP."""
    conf: dict[str, Any] = json.loads(path.read_text())
    for plugin in conf["plugins"]:
        if isinstance(plugin.get("ipam"), dict):
            plugin["ipam"]["dataDir"] = str(tmp_path / "ipam")
        if "peersFile" in plugin or "peers" in plugin:
            plugin.pop("peersFile", None)
            plugin["peers"] = [REMOTE_PEER]
        if "localIP" in plugin:
            plugin["localIP"] = runner.NODE_UPLINK[1].split("/")[0]
    return conf


def needs_ipip(path: Path) -> bool:
    """Always encapsulates in IPIP, which this host's kernel lacks. (CrossSubnet needs it only
    for peers on another subnet; the harness's peer is on the node's.)"""
    plugins = json.loads(path.read_text())["plugins"]
    return any(p.get("encapsulation") == "Always" for p in plugins)


def run_node_and_chain(bundle: Path, reference: Path, conf: dict[str, Any]) -> list[Report]:
    """The two checks, with pods without hostPorts and, when portmap is chained, with one."""
    dirs = [str(bundle), str(reference)]  # pod-network.conflist chains the Go bridge
    reports = [run_suite(dirs, conf, only=NODE_AND_CHAIN)]
    if any(p.get("capabilities", {}).get("portMappings") for p in conf["plugins"]):
        reports.append(run_suite(dirs, conf, only=NODE_AND_CHAIN, capability_args=HOST_PORT))
    for report in reports:
        print(runner.render_table(report))
    return reports


@pytest.mark.netns
@pytest.mark.frozen
@pytest.mark.reference
@pytest.mark.parametrize(
    "path",
    [p for p in shipped_conflists() if not needs_ipip(p)],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_shipped_conflist_leaves_the_node_as_found_and_passes_prev_result_on(
    root: None, bundle: Path, reference: Path, tmp_path: Path, path: Path
) -> None:
    for report in run_node_and_chain(bundle, reference, harness_conf(path, tmp_path)):
        assert not report.failed, runner.render_failures(report)
        assert set(verdicts(report).values()) == {Verdict.PASS}
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
@pytest.mark.reference
@pytest.mark.parametrize(
    "path", [p for p in shipped_conflists() if needs_ipip(p)], ids=lambda p: p.name
)
def test_a_shipped_conflist_needing_ipip_on_a_kernel_without_it(
    root: None, bundle: Path, reference: Path, tmp_path: Path, path: Path
) -> None:
    """Not verified on this host: the pods cannot be made. The harness says why, in the
    plugin's words (code 50, `modprobe ipip`); on a kernel with ipip both checks must pass."""
    reports = run_node_and_chain(bundle, reference, harness_conf(path, tmp_path))
    has_ipip = kernel_has_ipip()
    for report in reports:
        for result in report.results:
            if has_ipip:
                assert result.verdict == Verdict.PASS, result.detail
            else:
                assert result.verdict == Verdict.FAIL
                assert "modprobe ipip" in result.detail, result.detail


def test_the_shipped_conflists_are_all_exercised() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in shipped_conflists()}
    assert {f"{p.parent.name}/{p.name}" for p in shipped_conflists() if needs_ipip(p)} == {
        "examples/10-pycni-ipip-always.conflist",
        "kind/00-pycni-ipip-always.conflist",
    }
    assert len(names) == 11  # bridge, vxlan, ipip x3 in both; pod-network.conflist


# --- pycni's own plugins ----------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.frozen
def test_pycni_plugins_pass_every_check(root: None, bundle: Path, tmp_path: Path) -> None:
    report = run_suite([str(bundle)], pycni_conf(tmp_path))
    print(runner.render_table(report))
    not_passed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert not not_passed
    assert len(report.results) == len(checks.CHECKS)
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_a_config_at_1_1_0_fails_for_older_runtimes(
    root: None, bundle: Path, tmp_path: Path
) -> None:
    """What the shipped conflists said before: cniVersion 1.1.0, lower versions only listed."""
    old = {**pycni_conf(tmp_path), "cniVersion": "1.1.0"}
    report = run_suite([str(bundle)], old, only=["config.older-runtimes", "add.result-shape"])
    assert verdicts(report) == {
        "config.older-runtimes": Verdict.FAIL,
        "add.result-shape": Verdict.PASS,  # the default runtime reads cniVersions (1.1.0)
    }
    detail = report.verdict("config.older-runtimes").detail
    assert 'unsupported CNI result version "1.1.0"' in detail, detail
    assert "containerd 1.6/1.7" in detail and "set cniVersion 1.0.0 and list 1.1.0" in detail
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_the_suite_as_a_runtime_at_1_0_0(root: None, bundle: Path, tmp_path: Path) -> None:
    """--runtime-cni-version 1.0.0: cniVersions ignored, results above 1.0.0 refused."""
    shipped = pycni_conf(tmp_path)  # 1.0.0, with 1.1.0 in cniVersions
    report = run_suite([str(bundle)], shipped, runtime_cni_version="1.0.0")
    print(runner.render_table(report))
    assert report.cni_version == "1.0.0"
    assert "as a runtime at 1.0.0 (ignores cniVersions)" in runner.render_table(report)
    not_passed = {r.id for r in report.results if r.verdict != Verdict.PASS}
    assert not_passed == REFERENCE_ONLY_TO_1_0  # GC and STATUS: not at 1.0.0
    assert "cniVersion 1.0.0" in report.verdict("add.result-shape").detail

    old = {**shipped, "cniVersion": "1.1.0"}
    report = run_suite([str(bundle)], old, only=["add.result-shape"], runtime_cni_version="1.0.0")
    assert verdicts(report) == {"add.result-shape": Verdict.FAIL}
    assert 'unsupported CNI result version "1.1.0"' in report.verdict("add.result-shape").detail
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_pycni_ipip_in_never_mode_passes_every_check(
    root: None, bundle: Path, tmp_path: Path
) -> None:
    """conf/examples/10-pycni-ipip-never.conflist with no peers (a one-node cluster): the
    routed model -- /32 pods, proxy-ARP gateway, host routes -- on the harness's node."""
    conf: dict[str, Any] = json.loads((EXAMPLES / "10-pycni-ipip-never.conflist").read_text())
    plugin = conf["plugins"][0]
    plugin.pop("peersFile")
    plugin["peers"] = []
    plugin["ipam"]["dataDir"] = str(tmp_path / "ipam")
    report = run_suite([str(bundle)], conf)
    print(runner.render_table(report))
    not_passed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert not not_passed
    assert len(report.results) == len(checks.CHECKS)
    assert report.verdict("add.result-shape").detail.endswith(
        "ips 10.244.1.2/32, fd00:10:244:1::2/128"
    )
    assert_no_leftover_namespaces()


# --- the command ------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.reference
def test_the_command_writes_junit_and_json_and_exits_by_verdict(
    root: None, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_file = tmp_path / "ref.conflist"
    conf_file.write_text(json.dumps(reference_conf("ptp", "10.91.0.0/24")))
    junit, report_json = tmp_path / "report.xml", tmp_path / "report.json"
    argv = ["conformance", "--plugin-dir", str(reference), "--conf", str(conf_file)]
    status = cli.main(
        [
            *argv,
            "--check",
            "del",
            "--check",
            "gc.unlisted",
            "--junit",
            str(junit),
            "--json",
            str(report_json),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "\033[" not in out  # no colour when stdout is not a terminal
    assert "PASS  del.twice" in out and "N/A   gc.unlisted" in out
    data = json.loads(report_json.read_text())
    assert data["summary"] == {"pass": 6, "fail": 0, "n/a": 1}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "7" and suite.get("skipped") == "1"

    name = install_broken(tmp_path, "prints-on-del", reference / "ptp")
    conf = reference_conf("ptp", "10.91.0.0/24")
    conf["plugins"][0]["type"] = name
    conf_file.write_text(json.dumps(conf))
    argv = ["conformance", "--plugin-dir", str(tmp_path), "--plugin-dir", str(reference)]
    assert cli.main([*argv, "--conf", str(conf_file), "--check", "output.silent"]) == 1
    assert "FAILED: 0 passed, 1 failed" in capsys.readouterr().out


def test_the_command_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_file = tmp_path / "x.conflist"
    conf_file.write_text(json.dumps(reference_conf("ptp", "10.91.0.0/24")))
    assert cli.main(["conformance", "--conf", str(conf_file)]) == 2
    assert "--plugin-dir" in capsys.readouterr().err
    argv = ["conformance", "--plugin-dir", str(tmp_path), "--conf", str(conf_file)]
    assert cli.main([*argv, "--check", "no.such"]) == 2
    assert "no such check: no.such" in capsys.readouterr().err
    assert cli.main([*argv, "--runtime-cni-version", "1.0"]) == 2
    assert "--runtime-cni-version: '1.0' is not a version" in capsys.readouterr().err
    assert cli.main(["conformance", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(check.id in listed for check in checks.CHECKS)


# --- without root ---------------------------------------------------------------------------


def test_checks_have_unique_ids_and_a_spec_section() -> None:
    ids = [c.id for c in checks.CHECKS]
    assert len(ids) == len(set(ids))
    assert all(c.section and c.title for c in checks.CHECKS)


def test_selection_by_id_or_group() -> None:
    assert [c.id for c in checks.select(["del.twice"])] == ["del.twice"]
    assert {c.id for c in checks.select(["gc"])} == {"gc.unlisted", "gc.empty-list"}
    assert checks.select([]) == checks.CHECKS
    with pytest.raises(ValueError, match=r"no such check: del\.tw"):
        checks.select(["del.tw"])


@pytest.mark.parametrize(
    ("result", "version", "problem"),
    [
        ({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}]}, "0.4.0", "version is None"),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "version": "4"}]},
            "1.0.0",
            "removed in 1.0.0",
        ),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}, "1.0.0", "no prefix length"),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 0}]},
            "1.0.0",
            "not an index",
        ),
        ({"cniVersion": "0.4.0"}, "1.0.0", "the request's is 1.0.0"),
        ({"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mac": "zz"}]}, "1.0.0", "not a MAC"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "nowhere"}]}, "1.0.0", "not a network"),
    ],
)
def test_result_problems(result: dict[str, Any], version: str, problem: str) -> None:
    assert any(problem in p for p in checks.result_problems(result, version))


def test_a_good_result_has_no_problems() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
        "dns": {},
    }
    assert checks.result_problems(result, "1.0.0") == []


def test_tiny_ranges_keep_the_subnet_and_skip_the_gateway() -> None:
    ipam: dict[str, Any] = {"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "10.1.0.0/16"}]]}
    assert checks._shrink_range(ipam, 2)
    assert ipam["ranges"] == [
        [
            {
                "subnet": "10.1.0.0/16",
                "gateway": "10.1.0.1",
                "rangeStart": "10.1.0.2",
                "rangeEnd": "10.1.0.3",
            }
        ]
    ]
    legacy: dict[str, Any] = {"subnet": "10.2.0.0/24", "gateway": "10.2.0.2"}
    assert checks._shrink_range(legacy, 1)
    assert (legacy["rangeStart"], legacy["rangeEnd"]) == ("10.2.0.1", "10.2.0.1")
    assert not checks._shrink_range({"type": "dhcp"}, 1)


def test_reports_for_people_and_for_ci(tmp_path: Path) -> None:
    report = Report("net", "1.0.0", ["bridge"], ["/usr/lib/cni"], seconds=1.5)
    report.results = [
        CheckResult("a.one", "SPEC §2", "one", Verdict.PASS, "fine", 0.1),
        CheckResult("a.two", "SPEC §2", "two", Verdict.FAIL, "x" * 200, 0.2),
        CheckResult("a.three", "SPEC §2", "three", Verdict.NOT_APPLICABLE, "why", 0.0),
    ]
    table = runner.render_table(report)
    assert "FAIL  a.two" in table and "..." in table
    assert table.endswith("FAILED: 1 passed, 1 failed, 1 not applicable (3 checks, 1.5s)")
    assert "\033[" in runner.render_table(report, colour=True)
    runner.write_junit(report, tmp_path / "j.xml")
    case = ET.parse(tmp_path / "j.xml").getroot().findall("testsuite/testcase")
    assert [c.get("name") for c in case] == ["a.one", "a.two", "a.three"]
    assert case[1].find("failure") is not None and case[2].find("skipped") is not None
    runner.write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"] == {"pass": 1, "fail": 1, "n/a": 1}
    assert data["checks"][1]["detail"] == "x" * 200


# --- the node's state and the prevResult comparison, without root ------------------------

NFT_RULESET = (  # as `nft -s list ruleset` prints it, tabs and all
    "table inet pycni {\n"
    "\tmap hostports {\n"
    "\t\ttype nf_proto . inet_proto . inet_service : verdict\n"
    "\t\telements = { ipv4 . tcp . 8080 : jump hp_1,\n"
    "\t\t\t     ipv6 . tcp . 8080 : jump hp_1 }\n"
    "\t}\n"
    "\n"
    "\tchain hp_1 {\n"
    '\t\tcomment "kubenet c1/eth0"\n'
    "\t\ttcp dport 8080 ip saddr { 10.244.1.2, 127.0.0.0/8 } meta mark set meta mark | 0x00002000\n"
    "\t\tmeta nfproto ipv4 tcp dport 8080 dnat ip to 10.244.1.2:80\n"
    "\t}\n"
    "}\n"
    "table ip nat {\n"
    "\tchain POSTROUTING {\n"
    "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    "\t\t counter jump CNI-HOSTPORT-MASQ\n"
    "\t}\n"
    "}\n"
)
IPTABLES_SAVE = """# Generated by iptables-save v1.8.9 (nf_tables) on Wed Dec  2 06:05:23 2026
*nat
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-MASQ - [0:0]
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
COMMIT
# Completed on Wed Dec  2 06:05:23 2026
"""


def keys(snapshot: nodestate.Snapshot, kind: str) -> list[str]:
    return sorted(item.key for item in snapshot.items if item.kind == kind)


def test_nft_and_iptables_views_one_item_per_rule_element_and_chain() -> None:
    snapshot = nodestate.build({"nft": NFT_RULESET, "iptables": IPTABLES_SAVE})
    assert keys(snapshot, "nft") == [
        'inet pycni chain hp_1: comment "kubenet c1/eth0"',
        "inet pycni chain hp_1: meta nfproto ipv4 tcp dport 8080 dnat ip to 10.244.1.2:80",
        "inet pycni chain hp_1: tcp dport 8080 ip saddr { 10.244.1.2, 127.0.0.0/8 } meta mark"
        " set meta mark | 0x00002000",
        "inet pycni map hostports: element ipv4 . tcp . 8080 : jump hp_1",
        "inet pycni map hostports: element ipv6 . tcp . 8080 : jump hp_1",
        "inet pycni map hostports: type nf_proto . inet_proto . inet_service : verdict",
        "inet pycni: chain hp_1",
        "inet pycni: map hostports",
        "table inet pycni",
    ]  # `table ip nat` is iptables-nft's: compared in iptables' words, not twice
    assert keys(snapshot, "iptables") == [
        '-t nat -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j'
        " CNI-HOSTPORT-MASQ",
        '-t nat -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j'
        " CNI-HOSTPORT-MASQ (copy 2)",  # a rule added twice is two items
        "-t nat chain CNI-HOSTPORT-MASQ policy -",
        "-t nat chain POSTROUTING policy ACCEPT",
    ]
    legacy = IPTABLES_SAVE.replace("(nf_tables)", "(legacy)")
    assert "table ip nat" in keys(nodestate.build({"nft": NFT_RULESET, "iptables": legacy}), "nft")


def test_what_the_kernel_changes_on_its_own_is_left_out() -> None:
    links = [
        {"ifname": "cni0", "flags": ["NO-CARRIER", "UP"], "operstate": "DOWN", "mtu": 1500,
         "address": "02:00:00:00:00:01", "promiscuity": 3, "ifindex": 7,
         "linkinfo": {"info_kind": "bridge", "info_data": {"gc_timer": 299.0, "stp_state": 0,
                                                           "root_id": "8000.2:0:0:0:0:1"}}},
        {"ifname": "veth1", "flags": ["UP"], "mtu": 1500, "address": "02:00:00:00:00:02",
         "link_netnsid": 4, "master": "cni0"},
    ]  # fmt: skip
    later: list[dict[str, Any]] = copy.deepcopy(links)
    later[0].update(flags=["UP", "LOWER_UP"], operstate="UP", promiscuity=0, ifindex=9)
    later[0]["linkinfo"]["info_data"]["gc_timer"] = 12.5
    addresses = [
        {"ifname": "cni0", "addr_info": [
            {"local": "10.88.0.1", "prefixlen": 24, "scope": "global", "tentative": True},
            {"local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
    ]  # fmt: skip
    routes = [
        {"dst": "10.88.0.0/24", "dev": "cni0", "protocol": "kernel", "flags": ["linkdown"]},
        {"type": "local", "dst": "10.88.0.1", "dev": "cni0", "table": "local",
         "protocol": "kernel"},
        {"dst": "fe80::/64", "dev": "cni0", "protocol": "kernel"},
        {"dst": "10.246.3.0/24", "dev": "lo", "flags": ["onlink"]},
    ]  # fmt: skip
    neighbours = [
        {"dst": "10.88.0.5", "dev": "cni0", "lladdr": "02:00:00:00:00:05", "state": ["STALE"]},
        {"dst": "10.88.0.6", "dev": "cni0", "lladdr": "02:00:00:00:00:06", "state": ["PERMANENT"]},
    ]
    fdb = [
        {"mac": "33:33:00:00:00:01", "ifname": "cni0", "flags": ["self"], "state": "permanent"},
        {"mac": "02:00:00:00:00:01", "ifname": "cni0", "master": "cni0", "state": "permanent"},
        {"mac": "02:00:00:00:00:09", "ifname": "veth1", "master": "cni0", "state": ""},
        {"mac": "02:00:00:00:00:0a", "ifname": "vx", "dst": "192.0.2.9", "flags": ["self"],
         "state": "permanent"},
    ]  # fmt: skip
    sysctls = "\n".join(
        [
            "/proc/sys/net/ipv4/ip_forward:1",
            "/proc/sys/net/netfilter/nf_conntrack_count:17",
            "/proc/sys/net/ipv4/conf/cni0/route_localnet:1",
            "/proc/sys/net/ipv4/ip_local_port_range:32768\t60999",
            "/sys/class/net/cni0/addr_assign_type:3",
        ]
    )
    raw = {
        "links": json.dumps(links),
        "addresses": json.dumps(addresses),
        "routes4": json.dumps(routes),
        "neighbours": json.dumps(neighbours),
        "fdb": json.dumps(fdb),
        "sysctls": sysctls,
        "nsids": json.dumps([{"nsid": 3, "name": "pod"}]),
    }
    snapshot = nodestate.build(raw, {"ipam/net/lock": ""})
    assert snapshot.dying == {"veth1"}  # its peer's namespace (nsid 4) is gone
    assert nodestate.build({"links": raw["links"]}).dying == set()  # no nsids: none known
    assert keys(snapshot, "address") == ["10.88.0.1/24 dev cni0"]
    assert keys(snapshot, "route") == [
        "10.246.3.0/24 dev lo onlink",
        "10.88.0.0/24 dev cni0 proto kernel",
    ]
    assert keys(snapshot, "neighbour") == ["10.88.0.6 dev cni0"]
    assert keys(snapshot, "fdb") == ["02:00:00:00:00:0a dev vx dst 192.0.2.9 self permanent"]
    assert keys(snapshot, "sysctl") == [
        "net/ipv4/conf/cni0/route_localnet",
        "net/ipv4/ip_forward",
        "net/ipv4/ip_local_port_range",
    ]
    assert keys(snapshot, "file") == ["ipam/net/lock"]
    link = snapshot.items[nodestate.Item("link", "cni0", "cni0")]
    assert "mac 02:00:00:00:00:01" in link and "stp_state" in link and "timer" not in link
    later_snapshot = nodestate.build({**raw, "links": json.dumps(later)}, {"ipam/net/lock": ""})
    assert nodestate.compare(snapshot, later_snapshot) == []


def test_compare_folds_what_lives_on_a_link_into_the_link() -> None:
    def node(*links: str) -> nodestate.Snapshot:
        snapshot = nodestate.Snapshot()
        for name in links:
            snapshot.items[nodestate.Item("link", name, name)] = "veth, master cni0"
            snapshot.items[nodestate.Item("sysctl", f"net/ipv4/conf/{name}/forwarding", name)] = "1"
            snapshot.items[nodestate.Item("route", f"10.0.0.9 dev {name}", name)] = ""
        snapshot.items[nodestate.Item("sysctl", "net/ipv4/ip_forward")] = str(len(links))
        return snapshot

    changes = nodestate.compare(node("cni0"), node("cni0", "veth9"))
    assert [(str(c.item), c.before, c.after) for c in changes] == [
        ("link veth9", None, "veth, master cni0"),
        ("sysctl net/ipv4/ip_forward", "1", "2"),
    ]
    assert nodestate.with_it_summary(changes[0].with_it) == "1 route, 1 sysctl"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("10.1.0.2/32 dev lo", "10.1.0.2"),
        ("meta nfproto ipv4 tcp dport 80 dnat ip to 10.1.0.2:80", "10.1.0.2"),
        ("ipam/net/10.1.0.2", "10.1.0.2"),
        ("10.1.0.20/32 dev lo", None),
        ("110.1.0.2 dev lo", None),
        ('--comment "name: \\"net\\" id: \\"ctr-1\\""', "ctr-1"),
        ("dnat ip6 to [fd00::2]:80", "fd00::2"),
        ("fd00::20 dev lo", None),
    ],
)
def test_mentions_finds_whole_addresses_and_ids(text: str, found: str | None) -> None:
    assert nodestate.mentions(text, ["10.1.0.2", "fd00::2", "ctr-1"]) == found


PREV: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "02:00:00:00:00:01"},
        {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"},
    ],
    "ips": [{"address": "10.88.0.2/24", "gateway": "10.88.0.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
}


def test_a_chained_result_may_add_and_set_fields_but_not_lose_entries() -> None:
    kept = copy.deepcopy(PREV)
    kept["interfaces"][1]["mac"] = "0a:58:0a:58:00:99"  # tuning sets the MAC
    kept["interfaces"].insert(0, {"name": "ifb0"})  # indices move: the IP stays on eth0
    kept["ips"][0]["interface"] = 2
    kept["routes"].append({"dst": "10.96.0.0/12"})
    assert checks.result_losses(PREV, kept) == ([], ["interface ifb0", "route 10.96.0.0/12"])
    lost = copy.deepcopy(PREV)
    lost["dns"]["nameservers"] = []
    lost["ips"][0]["address"] = "10.88.0.99/24"
    del lost["routes"]
    assert checks.result_losses(PREV, lost) == (
        [
            "ip 10.88.0.2/24 on eth0 in /run/netns/p",
            "route 0.0.0.0/0 via 10.88.0.1",
            "dns nameserver 10.96.0.10",
        ],
        ["ip 10.88.0.99/24 on eth0 in /run/netns/p"],
    )
    assert checks.result_losses(PREV, None) == (["everything (no result object)"], [])
