"""Encryption on an emulated cluster (pycni.lab.cluster), in the kernel lane's guest: three
nodes, each running `pycni agent --encryption ipsec` against the replaying API server
(tests/support/kube_replay.py, on the underlay at 172.18.0.1 as on kind), pods added through the
frozen plugins with the conflist each agent wrote; once with VXLAN, once with IPIP.

- the agents publish their keys as Node annotations and key the node pairs; pods reach each
  other across nodes over TCP and UDP; a capture on the underlay sees only ESP between the
  nodes, and no pod address in any byte;
- a clear tunnel packet forged on the underlay with a node's source address never reaches the
  pod it is addressed to (the kernel counts it dropped by the `in` policy), while a real one
  from the same peer does;
- a node's agent restarted (a new key pair and nonce): UDP between pods resumes within 5 s and
  the capture stays clean throughout;
- a node whose keys do not match (another PSK) cannot get a packet into a pod of another node.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.agent.ipsec_keys import ANNOTATION_NONCE, ANNOTATION_PUBLIC_KEY
from pycni.lab import connectivity
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.netns import Netns
from pycni.lab.testbed import Pod
from pycni.netlink.xfrm import Xfrm
from tests.support import forge, wait
from tests.support.capture import assert_only_esp, capture
from tests.support.cluster import RunningAgent, cluster_with_api, cross_node_matrix, start_agent
from tests.support.kube_replay import FakeApiServer
from tests.support.paths import KIND

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.slow]

TEMPLATES = {
    "vxlan": KIND / "00-pycni-vxlan.conflist",
    "ipip": KIND / "00-pycni-ipip-always.conflist",
}
TUNNEL_DEVICE = {"vxlan": "pycni.1", "ipip": "pycni.ipip"}
WAIT = 120.0  # the guest is 5-20 times slower than the host: agents are fresh Pythons
LISTEN_PORT = 18181
RESUME_WITHIN = 5.0

# Sends a numbered UDP datagram to (address, port) every 0.1 s until the stop file exists (or
# `limit` seconds); prints the times (s since start) of the answers, one JSON list.
PINGER = r"""
import json, os, select, socket, sys, time
address, port, stop, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic(); answers = []; seq = 0; due = start
print("ready", flush=True)
while time.monotonic() - start < limit and not os.path.exists(stop):
    now = time.monotonic()
    if now >= due:
        s.sendto(str(seq).encode(), (address, port)); seq += 1; due = now + 0.1
    if select.select([s], [], [], max(0.0, due - time.monotonic()))[0]:
        s.recv(64); answers.append(round(time.monotonic() - start, 3))
print(json.dumps({"answers": answers, "end": round(time.monotonic() - start, 3)}), flush=True)
"""

# Prints each UDP payload received on `port` for `seconds`, one per line.
LISTENER = r"""
import select, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    if select.select([s], [], [], max(0.0, end - time.monotonic()))[0]:
        data, addr = s.recvfrom(256); print(addr[0], data.decode(errors="replace"), flush=True)
"""

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[4]) if len(sys.argv) > 4 else 5):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""

# A clear tunnel packet (src: a node's address, forged) carrying a UDP datagram from one pod
# to another, sent on a raw socket with our own IP header, five times.
FORGE = forge.script(r"""
kind, src, dst, inner_src, inner_dst, port, payload, dst_mac, src_mac = sys.argv[1:10]
data = payload.encode()
udp = struct.pack("!HHHH", 40000, int(port), 8 + len(data), 0) + data
send_in_tunnel(kind, src, dst, ipv4(17, inner_src, inner_dst, udp), 1, dst_mac, src_mac)
""")


class Encrypted:
    """The cluster, the API server, the agents (by node name) and one pod per node."""

    def __init__(self, kind: str, cluster: Cluster, api: FakeApiServer, tmp: Path):
        self.kind, self.cluster, self.api, self.tmp = kind, cluster, api, tmp
        self.agents: dict[str, RunningAgent] = {}
        self.pods: dict[str, Pod] = {}

    def member(self, name: str) -> ClusterNode:
        return self.cluster.nodes[name]

    def start_agent(self, name: str, psk: str = "", extra: tuple[str, ...] = ()) -> RunningAgent:
        member = self.member(name)
        template = json.loads(TEMPLATES[self.kind].read_text())
        plugin = template["plugins"][0]
        # no NAT, no portmap: the guest kernel's nftables has no ip/inet tables
        plugin["ipMasq"] = False
        template["plugins"] = [plugin]
        flags = ["--network-policy", "false", "--encryption", "ipsec"]
        if psk:
            psk_file = member.node.state_dir / "psk"
            psk_file.write_text(psk)
            flags += ["--ipsec-psk-file", str(psk_file)]
        log = self.tmp / f"agent-{name}.log"
        # stop_timeout: the guest is 5-20 times slower than the host
        running = start_agent(member, self.api, template, log, *flags, *extra, stop_timeout=30.0)
        self.agents[name] = running
        return running

    def owned_sas(self, name: str) -> set[tuple[str, str, int]]:
        with Xfrm(self.member(name).node.ns.path) as table:
            return {(str(sa.src), str(sa.dst), sa.spi) for sa in table.sas() if sa.owned}

    def keyed(self) -> Callable[[], bool]:
        """Every agent's conflist written, and every pair of nodes agrees on its SAs: what
        node A sends to B with, B has to receive with, and nothing else."""

        def check() -> bool:
            if not all(r.conf_path.exists() for r in self.agents.values()):
                return False
            sas = {name: self.owned_sas(name) for name in self.agents}
            ips = {name: self.member(name).ip for name in self.agents}
            for a, of_a in sas.items():
                for b, of_b in sas.items():
                    if a == b:
                        continue
                    pair = (ips[a], ips[b])
                    sent = {sa for sa in of_a if sa[:2] == pair}
                    if len(sent) != 1 or sent != {sa for sa in of_b if sa[:2] == pair}:
                        return False
            return all(len(found) == 2 * (len(sas) - 1) for found in sas.values())

        return check

    def add_pods(self) -> None:
        for name, running in self.agents.items():
            self.pods[name] = running.member.node.add_pod("a", running.conflist())

    def pod_ip(self, name: str) -> str:
        return self.pods[name].addresses(4)[0]

    def pod_ips(self) -> set[str]:
        return {self.pod_ip(name) for name in self.pods}

    def node_ips(self) -> set[str]:
        return {m.ip for m in self.cluster.nodes.values()}

    def nonce(self, name: str) -> str | None:
        node = self.api.get("nodes", name) or {}
        annotations = (node.get("metadata") or {}).get("annotations") or {}
        return annotations.get(ANNOTATION_NONCE)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{r.log.read_text()[-4000:]}" for name, r in sorted(self.agents.items())
        )

    def close(self) -> None:
        for running in self.agents.values():
            running.stop()
        for name, pod in list(self.pods.items()):
            try:
                self.agents[name].member.node.remove_pod(pod.name, self.agents[name].conflist())
            except Exception:
                pod.ns.delete()


def xfrm_stat(ns: Netns) -> dict[str, int]:
    text = ns.run(["cat", "/proc/net/xfrm_stat"]).stdout
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


def wait_for(what: str, check: Callable[[], bool], h: Encrypted, timeout: float = WAIT) -> None:
    try:
        wait.wait_for(what, check, timeout, interval=0.25)
    except AssertionError as err:
        raise AssertionError(f"{err}\nagent logs:\n{h.logs()}") from None


class Listener:
    """A UDP listener in a pod for `seconds`; `lines()` after it ended."""

    def __init__(self, ns: Netns, seconds: float) -> None:
        argv = ["ip", "netns", "exec", ns.name, connectivity.python(), "-I", "-c", LISTENER,
                str(LISTEN_PORT), str(seconds)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def lines(self, timeout: float) -> list[str]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out.decode().splitlines()


def send_udp(ns: Netns, address: str, text: str) -> None:
    ns.run([connectivity.python(), "-I", "-c", SEND, address, str(LISTEN_PORT), text])


def link_mac(ns: Netns, device: str) -> str:
    (link,) = ns.ip_json("link", "show", "dev", device)
    return str(link.get("address") or "00:00:00:00:00:00")


@pytest.fixture(params=["vxlan", "ipip"])
def encrypted(request: pytest.FixtureRequest, bundle: Path, tmp_path: Path) -> Iterator[Encrypted]:
    kind = request.param
    with cluster_with_api(
        bundle, tmp_path, 3, bookmark_interval=2.0, datapath=kind, encapsulation="Always"
    ) as (cluster, api):
        for member in cluster.nodes.values():
            api.put_node(member.name, member.ip, [member.pod_cidr])
        h = Encrypted(kind, cluster, api, tmp_path)
        try:
            yield h
        finally:
            h.close()


def test_encrypted_cluster_story(encrypted: Encrypted) -> None:
    h = encrypted
    # node3's agent comes last: until it publishes a key, node1 and node2 give it policies
    # but no SA (its tunnel traffic is dropped), and each says so in an Event on node3
    h.start_agent("node1")
    h.start_agent("node2")
    wait_for("node1 and node2 to key their pair", h.keyed(), h)
    without = {
        (e["involvedObject"]["name"], e["source"]["host"], e["reason"]) for e in h.api.events
    }
    expected = {("node3", n, "IPsecPeerWithoutKey") for n in ("node1", "node2")}
    # node1 and node2 start together: either may list the other before that one has published
    # its key (under load, node2 may even list before node1), and that is an event too
    either = {("node2", "node1", "IPsecPeerWithoutKey"), ("node1", "node2", "IPsecPeerWithoutKey")}
    assert expected <= without <= expected | either, without
    node3_ip = h.member("node3").ip
    with Xfrm(h.member("node1").node.ns.path) as table:
        assert not [sa for sa in table.sas() if node3_ip in (str(sa.src), str(sa.dst))]
        to_node3 = {(str(sp.dst), sp.direction) for sp in table.sps() if sp.owned}
    assert {(node3_ip, 1), (h.member("node1").ip, 0)} <= to_node3
    h.start_agent("node3")
    wait_for("three agents to key every pair", h.keyed(), h)
    for name in h.cluster.nodes:
        node = h.api.get("nodes", name)
        assert node is not None
        assert {ANNOTATION_PUBLIC_KEY, ANNOTATION_NONCE} <= set(node["metadata"]["annotations"])
    assert {node for node, _ in h.api.patches} == set(h.cluster.nodes)
    h.add_pods()
    for name, running in h.agents.items():
        assert running.conflist()["plugins"][0]["encryption"] == "ipsec"
        (eth0,) = h.pods[name].ns.ip_json("link", "show", "eth0")
        assert eth0["mtu"] == (1416 if h.kind == "vxlan" else 1446)  # ESP's room (ipsecplug)

    # pods across nodes, TCP and UDP; only ESP between the nodes on the underlay
    pods = [(h.member(name), pod) for name, pod in h.pods.items()]
    with capture(h.cluster.underlay, "underlay") as seen:
        probes = cross_node_matrix(pods)
    assert probes and all(p.ok for p in probes), connectivity.report(probes)
    assert_only_esp(seen, h.node_ips(), h.pod_ips(), minimum=len(probes) * 2)
    forged_packet_is_dropped(h)
    restart_resumes_within_5_s(h)


def forged_packet_is_dropped(h: Encrypted) -> None:
    """A clear tunnel packet forged with node2's address: dropped; a real one gets in."""
    node1, node2 = h.member("node1"), h.member("node2")
    device = TUNNEL_DEVICE[h.kind]
    stat = xfrm_stat(node1.node.ns)
    listener = Listener(h.pods["node1"].ns, seconds=20.0)
    send_udp(h.pods["node2"].ns, h.pod_ip("node1"), "real")
    argv = [connectivity.python(), "-I", "-c", FORGE, h.kind, node2.ip, node1.ip,
            h.pod_ip("node2"), h.pod_ip("node1"), str(LISTEN_PORT), "forged",
            link_mac(node1.node.ns, device) if h.kind == "vxlan" else "-",
            link_mac(node2.node.ns, device) if h.kind == "vxlan" else "-"]  # fmt: skip
    assert h.cluster.underlay.run(argv).stdout.strip() == "sent"
    heard = listener.lines(timeout=60.0)
    after = xfrm_stat(node1.node.ns)
    assert f"{h.pod_ip('node2')} real" in heard, heard
    assert not [line for line in heard if "forged" in line], heard
    assert after["XfrmInTmplMismatch"] - stat["XfrmInTmplMismatch"] >= 5, after


def restart_resumes_within_5_s(h: Encrypted) -> None:
    """node2's agent restarts with a new key: UDP pod1 -> pod2 resumes within 5 s, in ESP."""
    # node2's agent restarts: a new key; UDP pod1 -> pod2 resumes within 5 s, ESP only
    old_nonce, old_sas = h.nonce("node2"), h.owned_sas("node2")
    server = connectivity.serve(h.pods["node2"].ns)
    stop_file = h.tmp / "stop-pinger"
    pinger = subprocess.Popen(
        ["ip", "netns", "exec", h.pods["node1"].ns.name, connectivity.python(), "-I", "-c",
         PINGER, h.pod_ip("node2"), str(connectivity.PORT), str(stop_file), "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert pinger.stdout is not None and pinger.stdout.readline().strip() == b"ready"
        with capture(h.cluster.underlay, "underlay", timeout=30.0) as during:
            time.sleep(2.0)
            h.agents["node2"].stop()
            h.start_agent("node2")
            wait_for("node2's new nonce", lambda: h.nonce("node2") not in (None, old_nonce), h)
            wait_for("every pair keyed again", h.keyed(), h)
            assert h.owned_sas("node2").isdisjoint(old_sas)  # new SPIs with every peer
            time.sleep(RESUME_WITHIN + 2.0)
            stop_file.touch()
            out, err = pinger.communicate(timeout=60)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
        server.stop()
    result = json.loads(out.decode().strip().splitlines()[-1])
    answers, end = result["answers"], result["end"]
    assert answers, f"no answer at all: {err.decode()}"
    gaps = [b - a for a, b in zip([0.0, *answers], [*answers, end], strict=True)]
    print(f"{h.kind}: node2's agent restarted; longest UDP silence {max(gaps):.2f} s")
    assert max(gaps) < RESUME_WITHIN, (
        f"UDP pod1 -> pod2 stopped for {max(gaps):.1f} s across node2's agent restart"
        f" (answers at {answers[:5]}...{answers[-5:]}, end {end})\n{h.logs()}"
    )
    assert_only_esp(during, h.node_ips(), h.pod_ips(), minimum=20)


def test_a_node_with_other_keys_cannot_inject(encrypted: Encrypted) -> None:
    h = encrypted
    h.start_agent("node1", psk="the cluster's secret")
    h.start_agent("node2", psk="the cluster's secret")
    h.start_agent("node3", psk="not the cluster's secret")
    # every pair has SAs (the SPIs come out of the same HKDF, the PSK changes them: node3's
    # SAs and its peers' SAs towards it do not pair up): wait for the good pair and node3's
    wait_for("agents keyed", lambda: all(len(h.owned_sas(n)) == 4 for n in h.cluster.nodes), h)
    h.add_pods()
    node1 = h.member("node1")
    stat = xfrm_stat(node1.node.ns)
    listener = Listener(h.pods["node1"].ns, seconds=20.0)
    send_udp(h.pods["node2"].ns, h.pod_ip("node1"), "from-node2")
    send_udp(h.pods["node3"].ns, h.pod_ip("node1"), "from-node3")
    heard = listener.lines(timeout=60.0)
    after = xfrm_stat(node1.node.ns)
    assert f"{h.pod_ip('node2')} from-node2" in heard, heard
    assert not [line for line in heard if "from-node3" in line], heard
    # node3's packets reach node1 in ESP, under SPIs node1 does not know (XfrmInNoStates) or,
    # were they to collide, with keys that fail the ICV (XfrmInStateProtoError)
    refused = sum(after[k] - stat[k] for k in ("XfrmInNoStates", "XfrmInStateProtoError"))
    assert refused >= 5, {k: after[k] - stat[k] for k in after if after[k] != stat[k]}


@pytest.mark.parametrize("encrypted", ["vxlan"], indirect=True)
def test_rekey_before_the_sequence_number_wraps(encrypted: Encrypted) -> None:
    """The agents' rekey by SA counters, with the threshold lowered from 2**31 to 300 packets
    (and checked every second): 400 datagrams pod1 -> pod2 make node1 (its outgoing SA) or
    node2 (its incoming one), whichever checks first, take a new nonce; the pair rekeys (new
    SPIs), traffic goes on, in ESP."""
    h = encrypted
    for name in h.cluster.nodes:
        h.start_agent(name, extra=("--ipsec-rekey-packets", "300", "--ipsec-check-interval", "1"))
    wait_for("three agents to key every pair", h.keyed(), h)
    h.add_pods()
    nonces = (h.nonce("node1"), h.nonce("node2"))
    pair = {h.member("node1").ip, h.member("node2").ip}
    sas = {sa for sa in h.owned_sas("node1") if set(sa[:2]) == pair}
    with capture(h.cluster.underlay, "underlay", timeout=30.0) as seen:
        send = [connectivity.python(), "-I", "-c", SEND, h.pod_ip("node2"), str(LISTEN_PORT),
                "burst", "400"]  # fmt: skip
        h.pods["node1"].ns.run(send)
        wait_for("a new nonce of node1 or node2",
                 lambda: (h.nonce("node1"), h.nonce("node2")) != nonces, h)  # fmt: skip
        wait_for("every pair keyed again", h.keyed(), h)
        now = {sa for sa in h.owned_sas("node1") if set(sa[:2]) == pair}
        assert now.isdisjoint(sas), "node1 and node2 kept an SA past the threshold"
        listener = Listener(h.pods["node2"].ns, seconds=15.0)
        send_udp(h.pods["node1"].ns, h.pod_ip("node2"), "after-rekey")
        heard = listener.lines(timeout=60.0)
    assert f"{h.pod_ip('node1')} after-rekey" in heard, heard
    # (tcpdump in the guest misses part of a burst: every packet it saw must be ESP)
    assert_only_esp(seen, h.node_ips(), h.pod_ips(), minimum=50)
    logs = h.agents["node1"].log.read_text() + h.agents["node2"].log.read_text()
    assert "near its sequence number's end: rekeying" in logs
