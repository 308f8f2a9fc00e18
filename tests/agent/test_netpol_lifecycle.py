"""NetworkPolicy through the agent's life and the pods' lives, on the emulated 3-node cluster:

- an agent restart (SIGTERM and SIGKILL) while every pod probes every pod in rounds: every
  round matches the table, and the restarted agent changes nothing in the kernel (rule
  handles identical before and after);
- an API outage: the last rules stay, an agent restarted during it keeps them, changes after
  it are enforced;
- no escape window: a pod that lives for a second in a namespace with a default deny cannot
  send or receive anything, from its first packet, also while its agent is frozen; with its
  agent down and unaware of it, it is held in `pending` (closed) until the agent programs it;
  in a namespace without policies nothing is gated;
- bad input: policies the agent cannot use get an Event, close what they select, never open
  anything, and never stop the agent; garbage objects of every kind are survived.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import truthtable
from tests.support.netpol import PolicyLab, model_pods, policy_lab
from tests.support.wait import wait_for

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    with policy_lab(bundle, tmp_path_factory.mktemp("netpol-life")) as lab:
        model_pods(lab)
        lab.enforced()
        yield lab


@pytest.fixture(autouse=True)
def clean(lab: PolicyLab) -> Iterator[None]:
    yield
    if not lab.api.up:
        lab.api.restore()
    for running in lab.agents.values():
        if running.process.poll() is not None:
            lab.start_agent(running.member)
    lab.delete_all_policies()
    lab.enforced()


def pod(name: str) -> dict[str, Any]:
    return {"matchLabels": {"pod": name}}


NS_Y = {"matchLabels": {"ns": "y"}}
STORY: dict[str, dict[str, Any]] = {
    # x: ingress only from y; x/a: egress only to y/b; z: default deny both ways
    "x/from-y": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": NS_Y}]}]},
    "x/a-to-y-b": {"podSelector": pod("a"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": NS_Y, "podSelector": pod("b")}]}]},
    "z/deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [], "egress": []},
}  # fmt: skip


def story(lab: PolicyLab) -> truthtable.Reachability:
    for key, spec in STORY.items():
        namespace, name = key.split("/")
        lab.apply(namespace, name, spec)
    lab.enforced()
    r = lab.expect().ingress("x/*", False).expect("y/*", "x/*", True)
    r.egress("x/a", False).expect("x/a", "y/b", True)
    return r.ingress("z/*", False).egress("z/*", False)


def handles(lab: PolicyLab) -> dict[str, str]:
    """Every node's table with rule handles: any rewrite shows as a new handle."""
    return {
        name: m.node.ns.run(["nft", "-a", "list", "table", "inet", "pycni-policy"]).stdout
        for name, m in lab.cluster.nodes.items()
    }


class Prober:
    """Probes the whole table in rounds in a thread until stopped; keeps every mismatch."""

    def __init__(self, lab: PolicyLab, expected: truthtable.Reachability) -> None:
        self.lab = lab
        self.table = expected.table()
        self.pods = expected.pods
        self.rounds = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            observed = self.lab.observe(self.table)
            problem = truthtable.compare(self.pods, self.table, observed)
            self.rounds += 1
            if problem is not None:
                self.problems.append(f"round {self.rounds}: {problem}")

    def wait_rounds(self, count: int) -> None:
        target = self.rounds + count
        wait_for(f"{count} more rounds of probes", lambda: self.rounds >= target)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_enforcement_holds_while_every_agent_restarts(lab: PolicyLab, how: str) -> None:
    expected = story(lab)
    lab.check(expected, what="before the restarts")
    before = handles(lab)
    with Prober(lab, expected) as prober:
        wait_for("a first round of probes", lambda: prober.rounds >= 1)
        for name in sorted(lab.agents):
            running = lab.agents[name]
            running.stop(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
            prober.wait_rounds(1)  # with the agent down
            lab.start_agent(running.member)
        lab.enforced()
        prober.wait_rounds(2)
    assert not prober.problems, "\n".join(prober.problems) + lab.rulesets()
    assert prober.rounds >= 5
    assert handles(lab) == before, "a restarted agent rewrote rules it did not need to"


def test_api_outage_keeps_the_last_rules(lab: PolicyLab) -> None:
    expected = story(lab)
    lab.api.outage()
    time.sleep(1.5)  # the agents notice: their watches break, they back off
    lab.check(expected, what="API down")
    running = lab.agents["node2"]  # an agent that starts while the API is down
    running.stop()
    lab.start_agent(running.member)
    time.sleep(3)
    lab.check(expected, what="API down, node2's agent restarted without it")
    assert "unreachable" in running.log.read_text()
    lab.api.restore()
    lab.delete_policy("z/deny")
    lab.enforced()
    r = lab.expect().ingress("x/*", False).expect("y/*", "x/*", True)
    r.egress("x/a", False).expect("x/a", "y/b", True)
    lab.check(r, what="API back, z's deny deleted")


# --- no escape window ----------------------------------------------------------------------


def first_packets(lab: PolicyLab, new: str, peer: str) -> dict[tuple[str, str, int, str], bool]:
    """Right after the ADD: the new pod's first connections out, and the peer's to it."""
    new_pod, peer_pod = lab.pods[new], lab.pods[peer]
    assert new_pod.probe is not None and peer_pod.probe is not None
    cells = [(new, peer, peer_pod.ip, 80, "tcp"), (new, peer, peer_pod.ip, 81, "udp"),
             (peer, new, new_pod.ip, 80, "tcp"), (peer, new, new_pod.ip, 81, "udp")]  # fmt: skip
    return truthtable.probe({new: new_pod.probe, peer: peer_pod.probe}, cells, timeout=1.0)


def test_a_pod_that_lives_one_second_is_isolated_from_its_first_packet(lab: PolicyLab) -> None:
    deny = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": []}
    lab.apply("x", "deny", deny)
    lab.enforced()
    agent = lab.agents["node1"]
    for round_ in range(3):
        frozen = round_ > 0  # rounds 2 and 3: the agent cannot act at all during the pod's life
        key = f"x/short{round_}"
        if frozen:
            lab.api.put("pods", _scheduled(key, "node1"))  # the agent sees it scheduled...
            lab.enforced(agents=["node1"])
            agent.process.send_signal(signal.SIGSTOP)  # ...then stops moving
        try:
            started = time.monotonic()
            lab.add_pod(key, "node1", report_ip=False)
            results = first_packets(lab, key, "y/a")
            lived = time.monotonic() - started
            lab.remove_pod(key)
        finally:
            if frozen:
                agent.process.send_signal(signal.SIGCONT)
        assert not any(results.values()), f"{key} (agent frozen: {frozen}) escaped: {results}"
        assert lived < 10
    lab.enforced()


def _scheduled(key: str, node: str) -> dict[str, Any]:
    from tests.support.netpol import pod_object

    namespace, name = key.split("/")
    return pod_object(namespace, name, node, {"pod": name})


def test_a_pod_the_agent_does_not_know_is_pending_until_programmed(lab: PolicyLab) -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [{"podSelector": pod("a")}]}]}  # x/a may
    lab.apply("x", "from-a", spec)
    lab.enforced()
    agent = lab.agents["node2"]
    agent.stop()
    try:
        new = lab.add_pod("x/late", "node2", report_ip=False)
        state = agent.policy_state_dir
        assert state is not None
        assert (state / "namespaces" / "x").exists()
        pending = agent.member.node.ns.run(
            ["nft", "list", "set", "inet", "pycni-policy", "pending4"]
        ).stdout
        assert new.ip in pending, pending
        closed = first_packets(lab, "x/late", "x/a")
        assert not any(closed.values()), f"a pending pod let traffic through: {closed}"
    finally:
        started = time.monotonic()
        lab.start_agent(agent.member)

    def programmed() -> bool:
        ns = agent.member.node.ns
        mapped = ns.run(["nft", "list", "map", "inet", "pycni-policy", "ingress4"]).stdout
        pending = ns.run(["nft", "list", "set", "inet", "pycni-policy", "pending4"]).stdout
        return f"{new.ip} : jump" in mapped and new.ip not in pending

    wait_for("the agent to program the pending pod", programmed)
    window = time.monotonic() - started
    results = first_packets(lab, "x/late", "x/a")
    # x/a may reach x/late (the policy allows it), not the other way round (x/a's ingress)
    assert results[("x/a", "x/late", 80, "tcp")], results
    assert not results[("x/late", "x/a", 80, "tcp")], results
    out = first_packets(lab, "x/late", "y/a")  # nothing isolates x/late's egress
    assert out[("x/late", "y/a", 80, "tcp")], out
    print(f"pending window after the agent started: {window:.2f} s")
    lab.remove_pod("x/late")


def test_namespaces_without_policies_are_never_gated(lab: PolicyLab) -> None:
    agent = lab.agents["node3"]
    agent.stop()
    try:
        lab.add_pod("z/free", "node3", report_ip=False)
        results = first_packets(lab, "z/free", "y/c")
        assert all(results.values()), f"a pod of a namespace without policies was held: {results}"
        lab.remove_pod("z/free")
    finally:
        lab.start_agent(agent.member)


# --- bad input -------------------------------------------------------------------------------


def events_about(lab: PolicyLab, name: str) -> list[dict[str, Any]]:
    return [e for e in lab.api.events if e["involvedObject"]["name"] == name]


def test_a_policy_that_cannot_be_used_gets_an_event_and_opens_nothing(lab: PolicyLab) -> None:
    bad_cidr = {"podSelector": pod("a"),
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.0.0/33"}}]}]}  # fmt: skip
    lab.apply("x", "bad-cidr", bad_cidr)
    lab.enforced()
    wait_for("an Event on x/bad-cidr", lambda: bool(events_about(lab, "bad-cidr")))
    event = events_about(lab, "bad-cidr")[0]
    assert event["reason"] == "PolicyNotProgrammed" and event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "NetworkPolicy"
    assert "10.244.0.0/33" in event["message"], event["message"]
    lab.check(lab.expect().ingress("x/a", False), what="the broken policy isolates x/a")
    # a policy that worked, broken by an update: its last good version stays
    good = {"podSelector": pod("b"), "ingress": [{"from": [{"podSelector": pod("c")}]}]}
    lab.apply("x", "was-good", good)
    lab.enforced()
    broken = {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Sideways"}]}}
    lab.apply("x", "was-good", broken)
    lab.enforced()
    wait_for("an Event on x/was-good", lambda: bool(events_about(lab, "was-good")))
    r = lab.expect().ingress("x/a", False).ingress("x/b", False).expect("x/c", "x/b", True)
    lab.check(r, what="x/was-good's last good version stays; x/bad-cidr still isolates x/a")
    assert all(r.process.poll() is None for r in lab.agents.values()), "an agent died"


def test_garbage_objects_never_stop_the_agent(lab: PolicyLab) -> None:
    garbage: list[tuple[str, dict[str, Any]]] = [
        ("networkpolicies", {"metadata": {"namespace": "x", "name": "g1"}, "spec": "all"}),
        ("networkpolicies", {"metadata": {"namespace": "x", "name": "g2"}, "spec": {
            "podSelector": {}, "ingress": [{"ports": [{"port": 99999}]}]}}),
        ("networkpolicies", {"metadata": {"namespace": "x", "name": "g3"},
                             "spec": {"podSelector": [], "egress": {"to": 1}}}),
        ("pods", {"metadata": {"namespace": "y", "name": "g4", "labels": {"a": 1}},
                  "spec": {"nodeName": "node1"}, "status": {"podIPs": [{"ip": "not-an-ip"}]}}),
        ("pods", {"metadata": {"namespace": "y", "name": "g5"}, "spec": [], "status": "x"}),
        ("namespaces", {"metadata": {"name": "g6", "labels": ["a"]}}),
    ]  # fmt: skip
    for resource, obj in garbage:
        lab.api.put(resource, obj)
    lab.enforced()
    assert all(r.process.poll() is None for r in lab.agents.values()), "an agent died"
    # g1 and g3 cannot say what they select (nothing is isolated by them); g2 isolates x
    lab.check(lab.expect().ingress("x/*", False), what="after the garbage (g2 isolates x)")
    for resource, obj in garbage:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        lab.api.delete(resource, key)
    lab.apply("y", "still-working", {"podSelector": {}, "ingress": []})
    lab.enforced()
    lab.check(lab.expect().ingress("y/*", False), what="the agents still follow the API")
