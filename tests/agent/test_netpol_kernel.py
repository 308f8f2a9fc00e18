"""NetworkPolicy's kernel side in one throwaway namespace, without a cluster: the programmer
(pycni.agent.netpol.program) and what it added to pycni.netlink.nftables (rules and sets read
back over nfnetlink, `nft -c`), and the frozen pycni-netpol plugin at ADD, CHECK, DEL and GC.

The programmer runs in a child process inside the namespace (nft acts on the namespace it
runs in; the test process never changes namespace)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.datapath.policy_names import pod_chain
from pycni.lab import netns as netns_mod
from pycni.lab.connectivity import python
from pycni.lab.runtime import invoke

pytestmark = [pytest.mark.netns]

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def ns() -> Iterator[netns_mod.Netns]:
    created = netns_mod.create("netpolk")
    try:
        yield created
    finally:
        created.delete()


def inside(ns: netns_mod.Netns, code: str) -> Any:
    """Run `code` (which sets `out`) with Python inside the namespace; `out` as JSON."""
    program = (
        f"import json, sys\nsys.path.insert(0, {str(REPO)!r})\n"
        f"{textwrap.dedent(code)}\nprint(json.dumps(out))"
    )
    done = ns.run([python(), "-c", program], check=False, timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"in {ns.name}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


SETUP = """
from pycni.agent.netpol.model import Engine
from pycni.agent.netpol.objects import ContainerPort, NamespaceInfo, PodInfo, Policy, labels
from pycni.agent.netpol.program import NftProgrammer

def policy(ns, name, spec):
    return Policy.parse({"metadata": {"namespace": ns, "name": name}, "spec": spec})

def engine(node="n1", pods=40, policies=200):
    e = Engine(node)
    for ns in ("x", "y"):
        e.upsert_namespace(NamespaceInfo(ns, labels({"ns": ns})))
    for i in range(pods):
        e.upsert_pod(PodInfo("x" if i % 2 else "y", f"p{i}", f"u{i}", "n1" if i < 20 else "n2",
                             labels({"app": f"a{i % 10}"}), (f"10.0.{i // 250}.{i % 250 + 1}",),
                             ports=(ContainerPort("web", "tcp", 8000 + i % 3),)))
    for j in range(policies):
        e.upsert_policy(policy("x", f"pol{j}", {
            "podSelector": {"matchLabels": {"app": f"a{j % 10}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"a{(j + 1) % 10}"}}},
                                  {"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                   "podSelector": {"matchLabels": {"app": f"a{j % 7}"}}}],
                         "ports": [{"port": 80 + j}, {"port": "web"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16",
                                            "except": [f"10.0.0.{j}/32"]}}]}],
        }))
    return e
"""


def test_a_restarted_programmer_changes_nothing_and_one_pod_is_a_small_transaction(
    ns: netns_mod.Netns,
) -> None:
    out = inside(
        ns,
        SETUP
        + """
e = engine()
first = NftProgrammer(); first.load()
assert first.apply(e.render()) == {}
full = first.stats.statements
again = NftProgrammer(); again.load()           # a restart: read the table back
assert again.apply(e.render()) == {}
restart = again.stats.transactions
# one pod added elsewhere in the cluster, then removed: a few elements, under 200 policies
e.upsert_pod(PodInfo("x", "new", "un", "n2", labels({"app": "a4"}), ("10.0.9.9",),
                     ports=(ContainerPort("web", "tcp", 8001),)))
assert again.apply(e.render()) == {}
added = again.stats.statements
e.delete_pod("x/new")
assert again.apply(e.render()) == {}
removed = again.stats.statements
# the same with 20 policies: the transaction does not grow with the ruleset
small = engine(policies=20)
p = NftProgrammer(); p.load(); p.apply(small.render())
small.upsert_pod(PodInfo("x", "new", "un", "n2", labels({"app": "a4"}), ("10.0.9.9",),
                         ports=(ContainerPort("web", "tcp", 8001),)))
p.apply(small.render())
out = {"full": full, "restart": restart, "added": added, "removed": removed,
       "added_small": p.stats.statements}
""",
    )
    assert out["full"] > 1000, out  # the whole ruleset: many statements
    assert out["restart"] == 0, f"a restart rewrote something: {out}"
    assert 0 < out["added"] <= 8 and 0 < out["removed"] <= 8, out
    assert out["added"] == out["added_small"], f"grows with the policies: {out}"


def test_a_table_with_policy_chains_is_rewritten_inlined_in_one_transaction(
    ns: netns_mod.Netns,
) -> None:
    """An earlier version wrote each policy's chain and jumped to it from the pods' chains;
    the first apply over such a table inlines the pods' chains and deletes the policy chains,
    in one transaction; then the kernel holds no jump and no policy chain."""
    out = inside(
        ns,
        SETUP
        + """
import subprocess
e = engine(policies=30)
old = NftProgrammer(); old.load()
old._kernel_chains = lambda desired: dict(desired.chains)  # the earlier layout, jumps and all
assert old.apply(e.render()) == {}
def rules():
    return subprocess.run(["nft", "list", "table", "inet", "pycni-policy"], capture_output=True,
                          text=True, check=True).stdout
before = rules()
new = NftProgrammer(); new.load()
assert new.apply(e.render()) == {}
after = rules()
again = NftProgrammer(); again.load()
assert again.apply(e.render()) == {}
out = {"old_jumps": before.count("jump pol_"), "old_pol": before.count("chain pol_"),
       "jumps": after.count("jump pol_"), "pol": after.count("chain pol_"),
       "transactions": new.stats.transactions, "restart": again.stats.transactions,
       "accepts": after.count(" accept")}
""",
    )
    assert out["old_jumps"] > 0 and out["old_pol"] > 0, out
    assert out["jumps"] == 0 and out["pol"] == 0 and out["accepts"] > 0, out
    assert out["transactions"] == 1 and out["restart"] == 0, out


def test_tables_rules_and_sets_read_back_and_a_check_applies_nothing(ns: netns_mod.Netns) -> None:
    out = inside(
        ns,
        """
from pycni.netlink import nftables as nft
from pycni.cni.errors import CniError
from pycni.cni.ip import IP
t = nft.Table("inet", "readback")
spec = nft.SetSpec("np4", (nft.IPV4_ADDR, nft.INET_PROTO, nft.INET_SERVICE))
s = nft.Script(t).add_table().add_set(spec).add_chain("c")
s.add_elements(spec, [nft.Element(IP.parse("10.1.2.3"), "tcp", 80)])
s.add_rule("c", "ip daddr . meta l4proto . th dport @np4 accept")
s.add_rule("c", 'drop comment "owner fp"')
nft.run(s, "make a table")
with nft.Ruleset() as r:
    rules = [(x.chain, x.comment) for x in r.rules(t)]
    sets = [(x.name, x.declared_as(spec)) for x in r.sets(t)]
    elements = [list(map(str, e.key)) for e in r.elements(t, spec)]
refused = ""
try:
    nft.run(nft.Script(t).add_rule("c", "ip saddr fd00::/64 accept"), "x", check=True)
except CniError as err:
    refused = err.msg
checked = nft.Script(t).add_chain("d")
nft.run(checked, "check only", check=True)
with nft.Ruleset() as r:
    d_exists = r.chain(t, "d") is not None
nft.run(nft.Script(t).flush_chain("c").delete_set("np4"), "drop a set")
with nft.Ruleset() as r:
    after = [x.name for x in r.sets(t)]
nft.run(nft.Script(t).delete_table(), "drop the table")
out = {"rules": rules, "sets": sets, "elements": elements, "refused": refused,
       "d_exists": d_exists, "after": after}
""",
    )
    assert out["rules"] == [["c", ""], ["c", "owner fp"]], out
    assert out["sets"] == [["np4", True]] and out["elements"] == [["10.1.2.3", "tcp", "80"]]
    assert "nft:" in out["refused"], out
    assert out["d_exists"] is False, "nft -c applied the script"
    assert out["after"] == []


def test_a_policy_the_kernel_refuses_is_named_and_the_rest_is_programmed(
    ns: netns_mod.Netns,
) -> None:
    out = inside(
        ns,
        SETUP
        + """
import dataclasses
from pycni.agent.netpol.model import Accept, ChainDef
e = engine(pods=10, policies=3)
desired = e.render()
# a rule the kernel refuses (an IPv6 prefix tested as an IPv4 address) in one policy's chain
bad = next(c for c in desired.chains.values() if c.owner.startswith("policy x/pol1 in"))
from pycni.agent.netpol.objects import IpBlock
import ipaddress
broken = Accept("in", 4, None, IpBlock(ipaddress.ip_network("fd00::/64")))
desired.chains[bad.name] = dataclasses.replace(bad, statements=(*bad.statements, broken))
p = NftProgrammer(); p.load()
failures = p.apply(desired)
e.quarantine("x/pol1", "refused")
after = p.apply(e.render())
out = {"failures": failures, "after": after, "chains": len(p.chains)}
""",
    )
    assert list(out["failures"]) == ["x/pol1"], out
    assert out["after"] == {} and out["chains"] > 0, out


# --- the frozen plugin ----------------------------------------------------------------------


def plugin_call(
    bundle: Path,
    ns: netns_mod.Netns,
    command: str,
    state: Path,
    ips: list[str],
    *,
    pod: tuple[str, str] = ("x", "a"),
    container_id: str = "c1",
) -> Any:
    prev = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/whatever"}],
        "ips": [{"address": f"{ip}/24", "interface": 0} for ip in ips],
    }
    config = {"cniVersion": "1.1.0", "name": "net", "type": "pycni-netpol",
              "stateDir": str(state), "prevResult": prev}  # fmt: skip
    args = {"K8S_POD_NAMESPACE": pod[0], "K8S_POD_NAME": pod[1], "K8S_POD_UID": "uid-1"}
    return invoke(
        str(bundle / "pycni-netpol"),
        command,
        container_id=container_id,
        netns=ns.path,
        ifname="eth0",
        cni_args=args,
        config=config,
        in_netns=ns.path,
    )


def listing(ns: netns_mod.Netns, kind: str, name: str) -> str:
    return ns.run(["nft", "list", kind, "inet", "pycni-policy", name]).stdout


@pytest.mark.frozen
def test_plugin_maps_a_known_pod_pends_an_unknown_one_and_lets_others_be(
    bundle: Path, ns: netns_mod.Netns, tmp_path: Path
) -> None:
    state = tmp_path / "netpol"
    (state / "namespaces").mkdir(parents=True)
    inside(
        ns, "from pycni.agent.netpol.program import NftProgrammer\nNftProgrammer().load()\nout = 0"
    )
    # a namespace without policies: a record, nothing gated
    call = plugin_call(bundle, ns, "ADD", state, ["10.9.0.5"], pod=("free", "p"))
    assert call.ok, call.stderr
    assert call.result()["ips"][0]["address"] == "10.9.0.5/24"  # prevResult passed on
    record = json.loads((state / "pods" / "c1@eth0").read_text())
    assert record["namespace"] == "free" and record["ips"] == ["10.9.0.5"]
    assert "10.9.0.5" not in listing(ns, "set", "pending4") + listing(ns, "map", "ingress4")
    assert plugin_call(bundle, ns, "DEL", state, ["10.9.0.5"], pod=("free", "p")).ok
    assert not (state / "pods" / "c1@eth0").exists()

    # a gated namespace, the agent has not made the pod's chains: pending
    (state / "namespaces" / "x").touch()
    assert plugin_call(bundle, ns, "ADD", state, ["10.9.0.6"], container_id="c2").ok
    assert "10.9.0.6" in listing(ns, "set", "pending4")
    assert plugin_call(bundle, ns, "CHECK", state, ["10.9.0.6"], container_id="c2").ok
    assert plugin_call(bundle, ns, "DEL", state, ["10.9.0.6"], container_id="c2").ok
    assert "10.9.0.6" not in listing(ns, "set", "pending4")

    # the agent made the pod's chains: mapped at once, both directions; DEL unmaps
    chain_in, chain_eg = pod_chain("x", "a", "in"), pod_chain("x", "a", "eg")
    for chain in (chain_in, chain_eg):
        ns.run(["nft", "add", "chain", "inet", "pycni-policy", chain])
        ns.run(["nft", "add", "rule", "inet", "pycni-policy", chain, "drop"])
    assert plugin_call(bundle, ns, "ADD", state, ["10.9.0.7"], container_id="c3").ok
    assert f"10.9.0.7 : jump {chain_in}" in listing(ns, "map", "ingress4")
    assert f"10.9.0.7 : jump {chain_eg}" in listing(ns, "map", "egress4")
    assert "10.9.0.7" not in listing(ns, "set", "pending4")
    assert plugin_call(bundle, ns, "CHECK", state, ["10.9.0.7"], container_id="c3").ok
    # the address is reused by another pod before the first one's DEL: its ADD takes the key,
    # and the late DEL of the first pod leaves the new owner's entry alone
    other = pod_chain("x", "b", "in")
    for chain in (other, pod_chain("x", "b", "eg")):
        ns.run(["nft", "add", "chain", "inet", "pycni-policy", chain])
    added = plugin_call(bundle, ns, "ADD", state, ["10.9.0.7"], pod=("x", "b"), container_id="c4")
    assert added.ok, added.stderr
    assert f"10.9.0.7 : jump {other}" in listing(ns, "map", "ingress4")
    assert plugin_call(bundle, ns, "DEL", state, ["10.9.0.7"], container_id="c3").ok
    assert f"10.9.0.7 : jump {other}" in listing(ns, "map", "ingress4")
    # GC: records of attachments the runtime no longer lists go
    gc = {"cniVersion": "1.1.0", "name": "net", "type": "pycni-netpol", "stateDir": str(state),
          "cni.dev/valid-attachments": [{"containerID": "c9", "ifname": "eth0"}]}  # fmt: skip
    done = invoke(str(bundle / "pycni-netpol"), "GC", config=gc, in_netns=ns.path)
    assert done.ok, done.stderr
    assert not (state / "pods" / "c4@eth0").exists()


@pytest.mark.frozen
def test_plugin_without_a_table_gates_nothing_and_del_is_harmless(
    bundle: Path, ns: netns_mod.Netns, tmp_path: Path
) -> None:
    state = tmp_path / "netpol"
    assert plugin_call(bundle, ns, "ADD", state, ["10.9.1.5"]).ok  # no markers: not gated
    assert plugin_call(bundle, ns, "DEL", state, ["10.9.1.5"]).ok
    assert plugin_call(bundle, ns, "DEL", state, ["10.9.1.5"]).ok  # twice
    done = ns.run(["nft", "list", "tables"], check=False)
    assert "pycni-policy" not in done.stdout
    # a marker but no table (the agent is gone and took its table with it): ADD fails loudly
    (state / "namespaces").mkdir(parents=True, exist_ok=True)
    (state / "namespaces" / "x").touch()
    failed = plugin_call(bundle, ns, "ADD", state, ["10.9.1.6"], container_id="c2")
    assert not failed.ok and "NetworkPolicies" in failed.stdout.decode(), failed.stdout


def test_network_policy_false_removes_the_markers_then_the_table(
    ns: netns_mod.Netns, tmp_path: Path
) -> None:
    state = tmp_path / "netpol"
    (state / "namespaces").mkdir(parents=True)
    (state / "namespaces" / "x").touch()
    out = inside(
        ns,
        f"""
import argparse
from pathlib import Path
from pycni.agent.agent import disable_policy
from pycni.agent.netpol.program import NftProgrammer
NftProgrammer().load()
disable_policy(argparse.Namespace(policy_state_dir=Path({str(state)!r})))
disable_policy(argparse.Namespace(policy_state_dir=Path({str(state)!r})))  # twice: no error
out = 0
""",
    )
    assert out == 0
    assert not (state / "namespaces").exists()
    assert "pycni-policy" not in ns.run(["nft", "list", "tables"]).stdout


def test_the_conflist_gets_pycni_netpol_last_only_with_network_policy() -> None:
    from pycni.agent.agent import NodeInfo, render_conflist

    template = json.loads((REPO / "conf" / "kind" / "00-pycni-vxlan.conflist").read_text())
    node = NodeInfo("n1", ("172.18.0.2",), ("10.244.0.0/24",))
    on = render_conflist(template, node, Path("/run/pycni/netpol"))
    assert on["plugins"][-1] == {"type": "pycni-netpol", "stateDir": "/run/pycni/netpol"}
    assert [p["type"] for p in render_conflist(on, node)["plugins"]] == [
        "pycni-vxlan",
        "pycni-portmap",
    ]
