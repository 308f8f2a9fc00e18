"""The NetworkPolicy lab: an emulated cluster (pycni.lab.cluster: 3 node namespaces on an
underlay), the stand-in API server on the underlay (tests.support.kube_replay), `pycni agent`
running in every node with NetworkPolicy on (as on kind: a kubelet-style kubeconfig, the kind
template, its own conflist with pycni-netpol chained last), and pods added the way the kubelet and
containerd add them: the Pod object first (scheduled to its node), then the CNI ADD through the
frozen plugins with K8S_POD_NAMESPACE/NAME/UID in CNI_ARGS, then the Pod's status with its IPs.

Every pod serves TCP and UDP on 80 and 81 and probes on request (pycni.lab.truthtable), so a
scenario is: change objects in the API, wait until every agent says it programmed a state at
least as new (its status.json), probe every pod from every pod, compare with the expected
table. `services()` emulates kube-proxy: a ClusterIP per pod, DNAT'd in every node's
prerouting and output (table ip pycni-test-kubeproxy), so a probe can go through a Service.

For tests/agent/test_netpol_{e2e,lifecycle,datapaths}.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.lab import truthtable
from pycni.lab.cluster import Cluster, ClusterNode
from pycni.lab.testbed import Pod
from pycni.netlink.conntrack import Conntrack
from tests.support.cluster import RunningAgent, cluster_with_api, start_agent
from tests.support.kube_replay import FakeApiServer
from tests.support.paths import AGENT_DIR, KIND
from tests.support.wait import wait_for

TEMPLATES = {
    "vxlan": KIND / "00-pycni-vxlan.conflist",
    "ipip": KIND / "00-pycni-ipip-never.conflist",
    "bridge": KIND / "00-pycni-bridge.conflist",  # one node, dual-stack
}
AGENT = AGENT_DIR / "pycni-agent"
WAIT = 60.0
SERVICE_PREFIX = "10.96.1."
KUBEPROXY_TABLE = "pycni-test-kubeproxy"
WEB_PORTS = {"a": 80, "b": 81}  # the named port "web": 80 on pods a, 81 on pods b, none on c


def pod_object(
    namespace: str,
    name: str,
    node: str,
    labels: Mapping[str, str],
    *,
    ips: Iterable[str] = (),
    host_network: bool = False,
    phase: str = "Pending",
    uid: str | None = None,
    web: int | None = None,
) -> dict[str, Any]:
    """A Pod as the API holds it, with one container per port and protocol, each port named
    serve-<port>-<protocol> as in Kubernetes' netpol e2e model; and, with `web`, one more
    port named "web" (TCP) on that number: one name, a different port on different pods."""
    containers = [
        {
            "name": f"cont-{port}-{proto}",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.43",
            "ports": [
                {"containerPort": port, "name": f"serve-{port}-{proto}", "protocol": proto.upper()}
            ],
        }
        for port in truthtable.PORTS
        for proto in truthtable.PROTOCOLS
    ]
    if web is not None:
        containers.append(
            {"name": "web", "image": "nginx", "ports": [{"containerPort": web, "name": "web"}]}
        )
    ip_list = list(ips)
    meta: dict[str, Any] = {"namespace": namespace, "name": name, "labels": dict(labels)}
    if uid is not None:
        meta["uid"] = uid
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "hostNetwork": host_network, "containers": containers},
        "status": {
            "phase": phase,
            **({"podIP": ip_list[0], "podIPs": [{"ip": ip} for ip in ip_list]} if ip_list else {}),
        },
    }


@dataclass
class LabPod:
    key: str  # "x/a"
    member: ClusterNode
    pod: Pod
    uid: str
    ip: str
    service_ip: str
    probe: truthtable.PodAgent | None = None
    ip6: str | None = None

    @property
    def namespace(self) -> str:
        return self.key.split("/")[0]

    @property
    def name(self) -> str:
        return self.key.split("/")[1]


@dataclass
class PolicyLab:
    cluster: Cluster
    api: FakeApiServer
    tmp: Path
    datapath: str
    agents: dict[str, RunningAgent] = field(default_factory=dict)
    pods: dict[str, LabPod] = field(default_factory=dict)
    _serial: int = 0

    # --- the cluster ------------------------------------------------------------------------

    def start_agent(self, member: ClusterNode, *extra: str) -> RunningAgent:
        template = TEMPLATES[self.datapath]
        log = self.tmp / f"agent-{member.name}.log"
        running = start_agent(
            member,
            self.api,
            json.loads(template.read_text()),
            log,
            *extra,
            template_name=template.name,
            # the frozen agent, as shipped (packaging/build.sh), when it is there
            command=[str(AGENT)] if AGENT.exists() else (),
            policy_state_dir=member.node.state_dir / "netpol",
        )
        self.agents[member.name] = running
        return running

    def add_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        labels = {"kubernetes.io/metadata.name": name, "ns": name, **(labels or {})}
        self.api.put("namespaces", {"metadata": {"name": name, "labels": labels}})

    def set_namespace_labels(self, name: str, labels: Mapping[str, str]) -> int:
        obj = self.api.get("namespaces", name)
        assert obj is not None
        obj["metadata"]["labels"] = dict(labels)
        return self.api.put("namespaces", obj)

    def add_pod(
        self,
        key: str,
        node: str,
        labels: Mapping[str, str] | None = None,
        *,
        probe: bool = True,
        report_ip: bool = True,
        web: int | None = None,
    ) -> LabPod:
        """Schedule, ADD (as containerd), report the IP (as the kubelet), start its prober."""
        namespace, name = key.split("/")
        labels = {"pod": name} if labels is None else dict(labels)
        running = self.agents[node]
        wait_for(f"{node}'s conflist", running.conf_path.exists, WAIT)
        self._serial += 1
        uid = f"5e1f0000-0000-4000-8000-{self._serial:012d}"
        self.api.put("pods", pod_object(namespace, name, node, labels, uid=uid, web=web))
        cni_args = {
            "IgnoreUnknown": "1",
            "K8S_POD_NAMESPACE": namespace,
            "K8S_POD_NAME": name,
            "K8S_POD_INFRA_CONTAINER_ID": f"sandbox{self._serial}",
            "K8S_POD_UID": uid,
        }
        pod = running.member.node.add_pod(
            f"{namespace}-{name}", running.conflist(), cni_args=cni_args
        )
        ip = pod.addresses(4)[0]
        v6 = pod.addresses(6)
        ip6 = v6[0] if v6 else None
        if report_ip:
            self.report_ip(key, ip, node, labels, uid, web, ip6)
        lab_pod = LabPod(
            key, running.member, pod, uid, ip, f"{SERVICE_PREFIX}{10 + self._serial}", ip6=ip6
        )
        if probe:
            lab_pod.probe = truthtable.PodAgent(pod.ns.name)
        self.pods[key] = lab_pod
        return lab_pod

    def report_ip(
        self,
        key: str,
        ip: str,
        node: str,
        labels: Mapping[str, str],
        uid: str,
        web: int | None = None,
        ip6: str | None = None,
    ) -> int:
        """The pod's status with its IPs, as the kubelet reports it after the ADD."""
        namespace, name = key.split("/")
        ips = [ip] if ip6 is None else [ip, ip6]
        obj = pod_object(namespace, name, node, labels, ips=ips, phase="Running", uid=uid, web=web)
        return self.api.put("pods", obj)

    def remove_pod(self, key: str, *, delete_object: bool = True) -> None:
        lab_pod = self.pods.pop(key)
        if lab_pod.probe is not None:
            lab_pod.probe.stop()
        running = self.agents[lab_pod.member.name]
        running.member.node.remove_pod(lab_pod.pod.name, running.conflist())
        if delete_object:
            self.api.delete("pods", key)

    def set_pod_labels(self, key: str, labels: Mapping[str, str]) -> int:
        obj = self.api.get("pods", key)
        assert obj is not None
        obj["metadata"]["labels"] = dict(labels)
        return self.api.put("pods", obj)

    def apply(self, namespace: str, name: str, spec: dict[str, Any]) -> int:
        obj = {"metadata": {"namespace": namespace, "name": name}, "spec": spec}
        return self.api.put("networkpolicies", obj)

    def delete_policy(self, key: str) -> int:
        return self.api.delete("networkpolicies", key)

    def delete_all_policies(self) -> None:
        for key in list(self.api.objects["networkpolicies"]):
            self.api.delete("networkpolicies", key)

    # --- waiting -----------------------------------------------------------------------------

    def enforced(self, version: int | None = None, agents: Iterable[str] | None = None) -> None:
        """Wait until every (running) agent has programmed a state at least as new as
        `version` (default: the API's latest) for all three kinds."""
        target = self.api.version if version is None else version
        names = list(agents) if agents is not None else list(self.agents)

        def done() -> bool:
            for name in names:
                versions = self.agents[name].status().get("versions") or {}
                if len(versions) < 3 or min(versions.values()) < target:
                    return False
            return True

        try:
            wait_for(f"agents to enforce resourceVersion {target}", done, WAIT)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.logs()}") from None

    # --- probing ------------------------------------------------------------------------------

    def expect(self, default: bool = True) -> truthtable.Reachability:
        return truthtable.Reachability(tuple(sorted(self.pods)), default)

    def observe(
        self,
        expected: Mapping[truthtable.Cell, bool],
        *,
        via: str = "pod",
        timeout: float = truthtable.TIMEOUT,
    ) -> dict[truthtable.Cell, bool]:
        agents = {k: p.probe for k, p in self.pods.items() if p.probe is not None}

        def address(src: str, dst: str) -> str:
            target = self.pods[dst]
            if via == "pod6":
                assert target.ip6 is not None, f"{dst} has no IPv6 address"
                return target.ip6
            return target.service_ip if via == "service" else target.ip

        return truthtable.probe_table(agents, address, expected, timeout)

    def check(
        self,
        reachability: truthtable.Reachability,
        *,
        via: str = "pod",
        ports: Iterable[int] = truthtable.PORTS,
        protocols: Iterable[str] = truthtable.PROTOCOLS,
        what: str = "",
    ) -> None:
        """Probe the full table and compare; a mismatch fails with both tables."""
        ports, protocols = tuple(ports), tuple(protocols)
        expected = reachability.table(ports, protocols)
        if "udp" in protocols:
            self.forget_udp_flows(ports)
        observed = self.observe(expected, via=via)
        problem = truthtable.compare(reachability.pods, expected, observed, ports, protocols)
        if problem is not None:
            raise AssertionError(f"{what}: probed via {via}\n{problem}\n{self.rulesets()}")

    def forget_udp_flows(self, ports: Iterable[int]) -> None:
        """Delete the nodes' conntrack entries of UDP to the model's ports before a table.

        Every UDP probe is a new socket, but the kernel picks its source port at random: it can
        be the port of an earlier probe of the same pair, allowed then, whose conntrack entry
        lives on (30 s, 120 s once answered). The node matches the datagram to that flow, and
        policies apply to new flows: the cell reaches where the new table blocks it (seen about
        once in a full run under load). A table is about new flows, so it starts without old
        ones."""
        for member in self.cluster.nodes.values():
            with Conntrack(member.node.ns.path) as table:
                table.delete_to_ports(socket.IPPROTO_UDP, tuple(ports))

    # --- kube-proxy, emulated -------------------------------------------------------------------

    def services(self) -> None:
        """A ClusterIP per pod, TCP and UDP on 80 and 81, DNAT'd on every node (prerouting for
        pods, output for the node), as kube-proxy's nftables mode does it."""
        rules = [
            f"add rule ip {KUBEPROXY_TABLE} services ip daddr {p.service_ip} {proto} dport"
            f" {port} dnat to {p.ip}:{port}"
            for p in self.pods.values()
            for port in truthtable.PORTS
            for proto in truthtable.PROTOCOLS
        ]
        script = "\n".join(
            [
                f"add table ip {KUBEPROXY_TABLE}",
                f"add chain ip {KUBEPROXY_TABLE} services",
                f"flush chain ip {KUBEPROXY_TABLE} services",
                f"add chain ip {KUBEPROXY_TABLE} prerouting"
                " { type nat hook prerouting priority dstnat; policy accept; }",
                f"add chain ip {KUBEPROXY_TABLE} output"
                " { type nat hook output priority -100; policy accept; }",
                f"flush chain ip {KUBEPROXY_TABLE} prerouting",
                f"flush chain ip {KUBEPROXY_TABLE} output",
                f"add rule ip {KUBEPROXY_TABLE} prerouting jump services",
                f"add rule ip {KUBEPROXY_TABLE} output jump services",
                *rules,
                "",
            ]
        )
        for member in self.cluster.nodes.values():
            member.node.ns.run(["nft", "-f", "-"], input=script)

    # --- diagnostics ---------------------------------------------------------------------------

    def logs(self) -> str:
        return "\n".join(
            f"--- agent {name} log (last 60 lines)\n"
            + "\n".join(r.log.read_text(errors="replace").splitlines()[-60:])
            for name, r in sorted(self.agents.items())
        )

    def rulesets(self) -> str:
        out = []
        for name, member in sorted(self.cluster.nodes.items()):
            done = member.node.ns.run(["nft", "list", "table", "inet", "pycni-policy"], check=False)
            out.append(f"--- {name}: nft list table inet pycni-policy\n{done.stdout[-6000:]}")
        return "\n".join(out) + "\n" + self.logs()

    def close(self) -> None:
        for lab_pod in self.pods.values():
            if lab_pod.probe is not None:
                lab_pod.probe.stop()
        for running in self.agents.values():
            running.stop()
        for key in list(self.pods):
            lab_pod = self.pods.pop(key)
            running = self.agents[lab_pod.member.name]
            try:
                running.member.node.remove_pod(lab_pod.pod.name, running.conflist())
            except Exception:
                lab_pod.pod.ns.delete()


@contextmanager
def policy_lab(bundle: Path, tmp: Path, datapath: str = "vxlan") -> Iterator[PolicyLab]:
    """The cluster, the API server (namespaces x, y, z) and an agent on every node; removed
    afterwards, also on failure."""
    nodes = 1 if datapath == "bridge" else 3
    overlay = "ipip" if datapath == "ipip" else "vxlan"
    with cluster_with_api(
        bundle, tmp, nodes, bookmark_interval=0.5, datapath=overlay, encapsulation="Never"
    ) as (cluster, api):
        lab = PolicyLab(cluster, api, tmp, datapath)
        try:
            for member in cluster.nodes.values():
                cidrs = [member.pod_cidr]
                if datapath == "bridge":  # kubenet on one node: dual-stack
                    cidrs.append(f"fd00:10:244:{member.index}::/64")
                api.put_node(member.name, member.ip, cidrs)
            for ns in truthtable.NAMESPACES:
                lab.add_namespace(ns)
            for member in cluster.nodes.values():
                lab.start_agent(member)
            yield lab
        finally:
            lab.close()


def model_pods(lab: PolicyLab) -> None:
    """x, y, z x a, b, c, spread over the nodes (x/a, y/a, z/a on node1; ...b on node2; ...c
    on node3): every pair of pods meets both on one node and across nodes."""
    nodes = sorted(lab.cluster.nodes)
    for ns in truthtable.NAMESPACES:
        for i, name in enumerate(truthtable.POD_NAMES):
            lab.add_pod(f"{ns}/{name}", nodes[i % len(nodes)], web=WEB_PORTS.get(name))
