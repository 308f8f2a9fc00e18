"""NetworkPolicy: how fast a change is enforced, what one pod costs the kernel, what policies
cost the data plane, and the agent's memory. One suite of `python -m bench` (`netpol`).

1. Change -> enforced: one node (a namespace), the stand-in API server (tests.support.kube_replay),
   the frozen agent with --network-policy, 1,000 pods (100 on this node) in 20 namespaces and
   200 policies, synthetic. A policy is changed in the API (its port 80 becomes 81 or back),
   and the clock stops when the kernel holds the new rules: the comment of the last rule of
   the chain of a pod it selects (the policy's rules are inlined there), read over nfnetlink
   every 2 ms, changes. p50 and p99.
2. One pod added or removed under those 200 policies: the programmer's transaction (statements
   and seconds) and the model's render, in one process inside a namespace; the same under 20
   policies, to show it does not grow with the ruleset.
3. Data plane: two pods on one node (pycni-bridge), the server selected by all 200 policies of
   its namespace and allowed by the last one only (the longest path a new connection can take);
   iperf3 TCP throughput and new TCP connections per second (a Python client, the same with and
   without policies), and the client's CPU time per connection, runs interleaved with the
   policies on and off.
4. The agent's RSS (VmRSS, VmHWM) at 5,000 pods and 1,000 policies, once it has programmed them.

Needs root, the frozen agent (dist/pycni-agent) and bundle, nft, iperf3.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO, SMOKE, Context, Outcome, Target

TITLE = "NetworkPolicy: change to enforced, one pod's transaction, data plane, agent memory"
AGENT = REPO / "dist" / "pycni-agent" / "pycni-agent"
NODE = "bench"


def full_or_smoke(ctx: Context) -> dict[str, int]:
    if ctx.sizes == SMOKE:
        return {"pods": 60, "local": 10, "policies": 20, "changes": 5, "rss_pods": 200,
                "rss_policies": 40, "iperf": 1, "repeats": 1, "conn_seconds": 1,
                "pod_rounds": 3}  # fmt: skip
    return {"pods": 1000, "local": 100, "policies": 200, "changes": 60, "rss_pods": 5000,
            "rss_policies": 1000, "iperf": 2, "repeats": 9, "conn_seconds": 2,
            "pod_rounds": 20}  # fmt: skip


# --- synthetic objects -------------------------------------------------------------------------


def namespace_obj(i: int) -> dict[str, Any]:
    name = f"ns{i}"
    return {"metadata": {"name": name, "labels": {"team": f"t{i % 4}", "ns": name}}}


def pod_obj(i: int, local: int, namespaces: int) -> dict[str, Any]:
    node = NODE if i < local else f"other{i % 9}"
    ip = f"10.200.{i // 250}.{i % 250 + 2}"
    return {
        "metadata": {"namespace": f"ns{i % namespaces}", "name": f"pod{i}", "uid": f"u{i}",
                     "labels": {"app": f"a{i % 50}", "tier": f"t{i % 3}"}},
        "spec": {"nodeName": node, "containers": [
            {"name": "c", "ports": [{"name": "web", "containerPort": 8080 + i % 3}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }  # fmt: skip


def policy_obj(j: int, namespaces: int, port: int = 80) -> dict[str, Any]:
    return {
        "metadata": {"namespace": f"ns{j % namespaces}", "name": f"pol{j}"},
        "spec": {
            "podSelector": {"matchLabels": {"app": f"a{j % 50}"}},
            "ingress": [{
                "from": [{"podSelector": {"matchLabels": {"tier": f"t{j % 3}"}}},
                         {"namespaceSelector": {"matchLabels": {"team": f"t{j % 4}"}},
                          "podSelector": {"matchLabels": {"app": f"a{(j + 1) % 50}"}}}],
                "ports": [{"port": port}, {"port": "web"}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                            "except": [f"10.201.{j % 250}.0/24"]}}]}],
        },
    }  # fmt: skip


# --- a node with the stand-in API server and the frozen agent --------------------------------


@contextmanager
def agent_node(pods: int, local: int, policies: int) -> Iterator[dict[str, Any]]:
    """A namespace with the API server on 127.0.0.1 and the frozen agent, the synthetic
    cluster loaded; yields the api, the netns name, the agent process and its state dir."""
    from pycni.lab import netns as netns_mod
    from tests.support import kube_replay
    from tests.support.kube_replay import Pki

    scratch = Path(tempfile.mkdtemp(prefix="pycni-bench-netpol-"))
    ns = netns_mod.create("bnetpol")
    api = None
    agent = None
    try:
        ns.ip("link", "set", "lo", "up")
        pki = Pki.create(scratch / "pki", ["127.0.0.1"])
        api = kube_replay.in_netns(pki, ns.path, "127.0.0.1", bookmark_interval=1.0)
        namespaces = 20
        api.put_node(NODE, "172.18.0.2", ["10.200.0.0/24"])
        for i in range(namespaces):
            api.put("namespaces", namespace_obj(i))
        for i in range(pods):
            api.put("pods", pod_obj(i, local, namespaces))
        for j in range(policies):
            api.put("networkpolicies", policy_obj(j, namespaces))
        api.start()
        template = scratch / "00-pycni-bridge.conflist"
        template.write_text((REPO / "conf" / "kind" / "00-pycni-bridge.conflist").read_text())
        kubeconfig = scratch / "kubelet.conf"
        kubeconfig.write_text(api.kubeconfig())
        state = scratch / "netpol"
        log = open(scratch / "agent.log", "wb")  # noqa: SIM115 - closed below
        agent = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, str(AGENT), "--node-name", NODE,
             "--template", str(template), "--conf-dir", str(scratch / "net.d"),
             "--kubeconfig", str(kubeconfig), "--policy-state-dir", str(state)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_synced(state, api.version, 600)
        yield {"api": api, "ns": ns, "agent": agent, "state": state, "namespaces": namespaces}
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=20)
        if api is not None:
            api.close()
        ns.delete()
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def wait_synced(state: Path, version: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            status = json.loads((state / "status.json").read_text())
            if len(status["versions"]) == 3 and min(status["versions"].values()) >= version:
                return time.monotonic() - started
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the agent did not program resourceVersion {version} in {timeout} s")


# --- 1. change -> enforced -----------------------------------------------------------------------

_WATCH_CHAIN = """
import json, sys, time
from pycni.netlink import nftables as nft
table = nft.Table("inet", "pycni-policy")
chain = sys.argv[1]
def last():
    with nft.Ruleset() as r:
        notes = [n.comment for n in r.rules(table, chain) if n.chain == chain]
    return notes[-1] if notes else ""
print(json.dumps(last()), flush=True)
for line in sys.stdin:
    before = json.loads(line)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = last()
        if now != before:
            break
        time.sleep(0.002)
    print(json.dumps([now, time.monotonic()]), flush=True)
"""


def change_to_enforced(node: dict[str, Any], changes: int, policies: int) -> list[float]:
    """Seconds from the API change to the kernel holding it, per change."""
    from pycni.datapath.policy_names import pod_chain

    api, ns = node["api"], node["ns"]
    namespaces = node["namespaces"]
    # a policy that selects a pod on this node (pods 0..local-1: apps a0..a49 cycle): pol0
    # selects app a0 in ns0, pod0 among them; its rules are inlined in pod0's ingress chain
    j = 0
    chain = pod_chain("ns0", "pod0", "in")
    watcher = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", _WATCH_CHAIN, chain],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert watcher.stdin is not None and watcher.stdout is not None
    times = []
    try:
        current = json.loads(watcher.stdout.readline())
        for k in range(changes):
            watcher.stdin.write(json.dumps(current) + "\n")
            watcher.stdin.flush()
            time.sleep(0.02)  # the watcher is polling the old state before the change
            started = time.monotonic()
            api.put("networkpolicies", policy_obj(j, namespaces, port=81 if k % 2 == 0 else 80))
            current, seen_at = json.loads(watcher.stdout.readline())
            times.append(seen_at - started)
            time.sleep(0.05)
    finally:
        watcher.kill()
        watcher.wait()
    del policies
    return times


# --- 2. one pod's transaction ----------------------------------------------------------------

_ONE_POD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.netpol import namespace_obj, pod_obj, policy_obj
from pycni.agent.netpol.model import Engine
from pycni.agent.netpol.objects import NamespaceInfo, PodInfo, Policy
from pycni.agent.netpol.program import NftProgrammer
pods, local, policies, rounds = (int(a) for a in sys.argv[2:6])
e = Engine("bench")
for i in range(20):
    e.upsert_namespace(NamespaceInfo.parse(namespace_obj(i)))
for i in range(pods):
    e.upsert_pod(PodInfo.parse(pod_obj(i, local, 20)))
for j in range(policies):
    e.upsert_policy(Policy.parse(policy_obj(j, 20)))
p = NftProgrammer(); p.load(); p.apply(e.render())
full = p.stats.statements
out = {"full": full, "local_add": [], "local_del": [], "remote_add": [], "remote_del": []}
for k in range(rounds):
    for where, index in (("local", pods + 1000 + k), ("remote", pods + 2000 + k)):
        obj = pod_obj(index if where == "remote" else 0, local if where == "local" else 0, 20)
        obj["metadata"]["name"] = f"new{where}{k}"
        obj["metadata"]["namespace"] = "ns0"
        # named by one peer set (tier t0 in ns0: the same set under 20 and 200 policies),
        # selected by no policy: what concerns this pod, whatever else the ruleset holds
        obj["metadata"]["labels"] = {"app": "zz", "tier": "t0"}
        obj["status"]["podIP"] = f"10.202.{k}.{1 if where == 'local' else 2}"
        obj["status"]["podIPs"] = [{"ip": obj["status"]["podIP"]}]
        pod = PodInfo.parse(obj)
        for verb in ("add", "del"):
            t = time.monotonic()
            if verb == "add":
                e.upsert_pod(pod)
            else:
                e.delete_pod(pod.key)
            d = e.render()
            render = time.monotonic() - t
            assert p.apply(d) == {}
            out[f"{where}_{verb}"].append([p.stats.statements, p.stats.seconds, render])
print(json.dumps(out))
"""


def one_pod(pods: int, local: int, policies: int, rounds: int) -> dict[str, Any]:
    from pycni.lab import netns as netns_mod

    ns = netns_mod.create("bnpone")
    try:
        done = ns.run(
            [sys.executable, "-c", _ONE_POD, str(REPO), str(pods), str(local), str(policies),
             str(rounds)], timeout=1200,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        ns.delete()


# --- 3. data plane -------------------------------------------------------------------------------

_CONNS = """
import socket, struct, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
count = 0
cpu = time.process_time()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    s = socket.create_connection((ip, port), timeout=2)
    # a reset, not a FIN: no TIME_WAIT, so the run never waits for a free source port
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    count += 1
print(count / seconds, (time.process_time() - cpu) / count)
"""

_ACCEPT = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5202)); s.listen(1024)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

_PROGRAM = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pycni.agent.netpol.model import Engine
from pycni.agent.netpol.objects import NamespaceInfo, PodInfo, Policy
from pycni.agent.netpol.program import NftProgrammer
server, client, policies, selecting = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
e = Engine("bench")
e.upsert_namespace(NamespaceInfo.parse({"metadata": {"name": "bench"}}))
for name, ip, role in (("server", server, "server"), ("client", client, "client")):
    e.upsert_pod(PodInfo.parse({"metadata": {"namespace": "bench", "name": name,
        "labels": {"role": role}}, "spec": {"nodeName": "bench"},
        "status": {"podIP": ip, "phase": "Running"}}))
# `selecting` of the policies select the server, every (policies / selecting)th; the last of
# them allows the client, the others pods that do not exist; the rest select other pods
step = policies // selecting if selecting else 0
chosen = [j for j in range(policies) if step and j % step == 0][:selecting]
for j in range(policies):
    target = "server" if j in chosen else f"other{j}"
    allowed = "client" if chosen and j == chosen[-1] else f"nobody{j}"
    e.upsert_policy(Policy.parse({"metadata": {"namespace": "bench", "name": f"p{j:04d}"},
        "spec": {"podSelector": {"matchLabels": {"role": target}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": allowed}}}]}]}}))
p = NftProgrammer(); p.load(); p.apply(e.render())
print(json.dumps(p.stats.statements))
"""


def dataplane(
    bundle: Path, policies: int, seconds: int, repeats: int, conn_seconds: int
) -> dict[str, Any]:
    from pycni.lab.testbed import Node

    node = Node.create("bnpdp", bundle)
    servers: list[subprocess.Popen[str]] = []
    try:
        conf = json.loads((REPO / "conf" / "kind" / "00-pycni-bridge.conflist").read_text())
        conf["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.203.0.0/24"}]]
        conf["plugins"] = conf["plugins"][:1]
        conf = node.conf(conf)
        server = node.add_pod("server", conf)
        client = node.add_pod("client", conf)
        server_ip, client_ip = server.addresses(4)[0], client.addresses(4)[0]
        accept = subprocess.Popen(
            ["ip", "netns", "exec", server.ns.name, sys.executable, "-c", _ACCEPT],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        servers.append(accept)
        assert accept.stdout is not None and accept.stdout.readline().strip() == "ready"
        # none: no policy; policies: the server selected by 10 of them (a pod's usual few);
        # worst: selected by all of them, allowed by the last (every jump on a new connection)
        selecting = {"none": 0, "policies": max(1, policies // 20), "worst": policies}
        results: dict[str, dict[str, list[float]]] = {
            config: {"gbits": [], "conns": [], "cpu": []} for config in selecting
        }
        for r in range(repeats):
            order = list(selecting) if r % 2 == 0 else list(reversed(selecting))
            for config in order:
                count = policies if selecting[config] else 0
                node.ns.run([sys.executable, "-c", _PROGRAM, str(REPO), server_ip, client_ip,
                             str(count), str(selecting[config])])  # fmt: skip
                results[config]["gbits"].append(
                    iperf(server.ns.name, client.ns.name, server_ip, seconds)
                )
                done = client.ns.run(
                    [sys.executable, "-c", _CONNS, server_ip, "5202", str(conn_seconds)]
                )
                rate, cpu = done.stdout.split()
                results[config]["conns"].append(float(rate))
                results[config]["cpu"].append(float(cpu))
        return results
    finally:
        for process in servers:
            process.kill()
            process.wait()
        node.destroy(conf if "conf" in locals() else None)


def iperf(server_ns: str, client_ns: str, address: str, seconds: int) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(50):
            done = subprocess.run(
                ["ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-p", "5201", "-t",
                 str(seconds), "-J"], capture_output=True, text=True, check=False,
            )  # fmt: skip
            report = json.loads(done.stdout or "{}")
            if "end" in report and "sum_received" in report["end"]:
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
            time.sleep(0.1)
        raise RuntimeError(f"iperf3 to {address} failed: {done.stdout[-300:]}")
    finally:
        server.kill()
        server.wait()


# --- 5. the escape window: ADD's cost, and a new pod's wait -----------------------------------


def plugin_add(bundle: Path, ns_path: str, state: Path, namespace: str, name: str, ip: str,
               container_id: str) -> float:  # fmt: skip
    """One pycni-netpol ADD as the runtime makes it (chained after the main plugin); seconds."""
    from pycni.lab.runtime import invoke

    prev = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": ns_path}],
            "ips": [{"address": f"{ip}/24", "interface": 0}]}  # fmt: skip
    config = {"cniVersion": "1.1.0", "name": "net", "type": "pycni-netpol",
              "stateDir": str(state), "prevResult": prev}  # fmt: skip
    call = invoke(str(bundle / "pycni-netpol"), "ADD", container_id=container_id, netns=ns_path,
                  ifname="eth0", config=config, in_netns=ns_path,
                  cni_args={"K8S_POD_NAMESPACE": namespace, "K8S_POD_NAME": name})  # fmt: skip
    call.raise_for_error()
    return call.duration


def plugin_del(bundle: Path, ns_path: str, state: Path, container_id: str) -> None:
    from pycni.lab.runtime import invoke

    config = {"cniVersion": "1.1.0", "name": "net", "type": "pycni-netpol",
              "stateDir": str(state)}  # fmt: skip
    invoke(str(bundle / "pycni-netpol"), "DEL", container_id=container_id, netns=ns_path,
           ifname="eth0", config=config, in_netns=ns_path).raise_for_error()  # fmt: skip


def add_cost(bundle: Path, rounds: int) -> dict[str, list[float]]:
    """pycni-netpol's ADD: a namespace without policies, one with the pod's chains ready (it is
    mapped), one without (it is pending); and VERSION, the bare cost of a frozen plugin."""
    from pycni.lab import netns as netns_mod
    from pycni.lab.runtime import invoke

    ns = netns_mod.create("bnpadd")
    state = Path(tempfile.mkdtemp(prefix="pycni-bench-netpol-add-"))
    try:
        setup = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from pycni.agent.netpol.program import NftProgrammer; NftProgrammer().load()\n"
        )
        ns.run([sys.executable, "-c", setup, str(REPO)])
        from pycni.datapath.policy_names import pod_chain

        for direction in ("in", "eg"):
            chain = pod_chain("gated", "ready", direction)
            ns.run(["nft", "add", "chain", "inet", "pycni-policy", chain])
            ns.run(["nft", "add", "rule", "inet", "pycni-policy", chain, "drop"])
        (state / "namespaces").mkdir(parents=True)
        (state / "namespaces" / "gated").touch()
        times: dict[str, list[float]] = {"version": [], "free": [], "mapped": [], "pending": []}
        for k in range(rounds):
            version = invoke(str(bundle / "pycni-netpol"), "VERSION",
                             config={"cniVersion": "1.1.0"})  # fmt: skip
            times["version"].append(version.duration)
            cases = (("free", "open", "p"), ("mapped", "gated", "ready"),
                     ("pending", "gated", "unknown"))  # fmt: skip
            for n, (case, namespace, name) in enumerate(cases):
                cid = f"{case}{k}"
                ip = f"10.204.{k % 250}.{2 + n}"
                times[case].append(plugin_add(bundle, ns.path, state, namespace, name, ip, cid))
                plugin_del(bundle, ns.path, state, cid)
        return times
    finally:
        ns.delete()
        subprocess.run(["rm", "-rf", str(state)], check=False)


def new_pod_window(bundle: Path, node: dict[str, Any], rounds: int) -> list[float]:
    """The Pod created in the API, its ADD right away (as fast as a kubelet could): seconds
    from the ADD's end until its address is mapped to its chains (0 when the plugin mapped it:
    the agent had made the chains in time)."""
    from pycni.datapath.policy_names import pod_chain

    api, ns, state = node["api"], node["ns"], node["state"]
    windows = []
    for k in range(rounds):
        obj = pod_obj(0, 1, node["namespaces"])
        obj["metadata"]["name"] = f"fresh{k}"
        obj["status"] = {"phase": "Pending"}
        api.put("pods", obj)
        ip = f"10.205.0.{k + 2}"
        plugin_add(bundle, ns.path, state, "ns0", f"fresh{k}", ip, f"fresh{k}")
        done = time.monotonic()
        chain = pod_chain("ns0", f"fresh{k}", "in")
        first = True
        while time.monotonic() - done < 30:
            mapped = ns.run(["nft", "list", "map", "inet", "pycni-policy", "ingress4"]).stdout
            if f"{ip} : jump {chain}" in mapped:
                break
            first = False
        windows.append(0.0 if first else time.monotonic() - done)  # first: the plugin mapped it
        plugin_del(bundle, ns.path, state, f"fresh{k}")
        api.delete("pods", f"ns0/fresh{k}")
    return windows


# --- 4. memory ---------------------------------------------------------------------------


def rss(pods: int, policies: int) -> dict[str, float]:
    with agent_node(pods, 110, policies) as node:
        status = Path(f"/proc/{node['agent'].pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        mib = {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
        return mib


# --- the suite ------------------------------------------------------------------------------------


def missing(ctx: Context) -> str | None:
    if not AGENT.exists():
        return f"{AGENT} is missing: run packaging/build.sh"
    if not (ctx.bundle / "pycni-bridge").exists():
        return "the bundle has no pycni-bridge: run packaging/build.sh"
    return None


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def suite(ctx: Context) -> Outcome:
    why = missing(ctx)
    if why:
        return Outcome(TITLE, not_measured=why)
    size = full_or_smoke(ctx)
    data: dict[str, Any] = {"sizes": size}
    started = time.monotonic()
    with agent_node(size["pods"], size["local"], size["policies"]) as node:
        data["first_sync_s"] = time.monotonic() - started
        data["change_s"] = change_to_enforced(node, size["changes"], size["policies"])
        data["new_pod_window_s"] = new_pod_window(ctx.bundle, node, size["pod_rounds"])
    data["add_cost_s"] = add_cost(ctx.bundle, size["pod_rounds"])
    data["one_pod"] = one_pod(size["pods"], size["local"], size["policies"], size["pod_rounds"])
    data["one_pod_small"] = one_pod(
        size["pods"], size["local"], size["policies"] // 10, size["pod_rounds"]
    )
    data["dataplane"] = dataplane(
        ctx.bundle, size["policies"], size["iperf"], size["repeats"], size["conn_seconds"]
    )
    data["rss_mib"] = rss(size["rss_pods"], size["rss_policies"])
    return report(data, size)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f}"


def report(data: dict[str, Any], size: dict[str, int]) -> Outcome:
    outcome = Outcome(TITLE, samples=len(data["change_s"]), data=data)
    change = [s * 1000 for s in data["change_s"]]
    p50, p99 = statistics.median(change), percentile(change, 0.99)

    def pod_line(result: dict[str, Any], where: str, verb: str) -> str:
        rows = result[f"{where}_{verb}"]
        statements = statistics.median(r[0] for r in rows)
        nft_ms = statistics.median(r[1] for r in rows) * 1000
        render_ms = statistics.median(r[2] for r in rows) * 1000
        return f"{statements:.0f} statements, nft {nft_ms:.1f} ms, model {render_ms:.1f} ms"

    big, small = data["one_pod"], data["one_pod_small"]
    dp = data["dataplane"]
    gbit = {k: statistics.median(v["gbits"]) for k, v in dp.items()}
    conns = {k: statistics.median(v["conns"]) for k, v in dp.items()}
    # the ratio of each pair of adjacent runs (with, without), then their median: what holds
    # when neighbours on a shared machine come and go during the run
    pairs = {
        (config, what): statistics.median(
            a / b for a, b in zip(dp[config][what], dp["none"][what], strict=True)
        )
        for config in ("policies", "worst")
        for what in ("gbits", "conns")
    }
    # connections per CPU-second of the client: its CPU time per connection holds the kernel's
    # path of its SYN (run in its context as a softirq, which this kernel does not account
    # apart unless CONFIG_IRQ_TIME_ACCOUNTING), and not the neighbours' share of the machine
    cpu_us = {k: statistics.median(v["cpu"]) * 1e6 for k, v in dp.items()}
    for config in ("policies", "worst"):
        pairs[(config, "cpu")] = statistics.median(
            b / a for a, b in zip(dp[config]["cpu"], dp["none"]["cpu"], strict=True)
        )
    outcome.lines += [
        f"A synthetic cluster in the stand-in API server: {size['pods']} pods ({size['local']} on"
        f" the measured node), 20 namespaces, {size['policies']} policies (each: a podSelector,"
        " two peers — a pod selector, and a namespace AND pod selector —, a port and a named"
        " port, an egress ipBlock with an except); the frozen agent on one node. First list to"
        f" programmed: {data['first_sync_s']:.1f} s.",
        "",
        "| | figure |",
        "|---|---:|",
        f"| policy change in the API -> in the kernel, p50 / p99 ({len(change)} changes) |"
        f" {p50:.0f} / {p99:.0f} ms |",
    ]
    for where in ("local", "remote"):
        for verb in ("add", "del"):
            outcome.lines.append(
                f"| one {where} pod {'added' if verb == 'add' else 'removed'}, {size['policies']}"
                f" policies | {pod_line(big, where, verb)} |"
            )
            outcome.lines.append(
                f"| the same, {size['policies'] // 10} policies | {pod_line(small, where, verb)} |"
            )
    outcome.lines += [
        f"| whole ruleset, {size['policies']} policies | {big['full']} statements |",
        f"| iperf3 TCP, none / {size['policies']} policies / worst case (medians of"
        f" {size['repeats']} runs; median of paired ratios) | {gbit['none']:.2f} /"
        f" {gbit['policies']:.2f} ({pairs[('policies', 'gbits')]:.2f}x) / {gbit['worst']:.2f}"
        f" ({pairs[('worst', 'gbits')]:.2f}x) Gbit/s |",
        f"| new TCP connections/s, none / {size['policies']} policies / worst case |"
        f" {conns['none']:.0f} / {conns['policies']:.0f} ({pairs[('policies', 'conns')]:.2f}x) /"
        f" {conns['worst']:.0f} ({pairs[('worst', 'conns')]:.2f}x) |",
        f"| the client's CPU per new connection (its SYN's kernel path included), same three;"
        f" paired ratios as connections per CPU-second | {cpu_us['none']:.1f} /"
        f" {cpu_us['policies']:.1f} ({pairs[('policies', 'cpu')]:.2f}x) / {cpu_us['worst']:.1f}"
        f" ({pairs[('worst', 'cpu')]:.2f}x) us |",
        "| pycni-netpol ADD, median ms: namespace without policies / pod mapped / pod pending"
        f" (a frozen plugin's VERSION: {ms(data['add_cost_s']['version'])}) |"
        f" {ms(data['add_cost_s']['free'])} / {ms(data['add_cost_s']['mapped'])} /"
        f" {ms(data['add_cost_s']['pending'])} |",
        "| a new pod, ADD right after the Pod's creation: ADD's end -> mapped, median / max"
        f" ({len(data['new_pod_window_s'])} pods) | {ms(data['new_pod_window_s'])} /"
        f" {max(data['new_pod_window_s']) * 1000:.0f} ms |",
        f"| agent RSS at {size['rss_pods']} pods / {size['rss_policies']} policies (peak) |"
        f" {data['rss_mib']['VmRSS']:.0f} MiB ({data['rss_mib']['VmHWM']:.0f} MiB) |",
        "",
        f"Data plane: {size['policies']} policies in the pods' namespace; with 'policies' the"
        f" server is selected by {max(1, size['policies'] // 20)} of them (a pod's usual few),"
        " the last of which allows the client; in the worst case it is selected by all of them"
        " and allowed by the last, so a new connection walks every policy's rules. Established"
        " packets are accepted by the first rule either way. The connection rate is a Python"
        " client's (connect, reset), the same in every configuration; runs interleaved. Its CPU"
        " time per connection holds its SYN's path through the kernel and not what neighbours"
        " on a shared machine take: the steadier measure of what the ruleset costs.",
    ]
    ratio_bits, ratio_conns = pairs[("policies", "gbits")], pairs[("policies", "conns")]
    ratio_cpu = pairs[("policies", "cpu")]
    flat = all(
        statistics.median(r[0] for r in big[k]) == statistics.median(r[0] for r in small[k])
        for k in ("local_add", "local_del", "remote_add", "remote_del")
    )
    outcome.targets += [
        Target(
            "policy change -> enforced", "measured", f"p50 {p50:.0f} ms, p99 {p99:.0f} ms", None
        ),
        Target(
            "one pod's transaction under 200 policies",
            "flat (as under 20)",
            "same statements" if flat else "grows",
            flat,
        ),
        Target(
            "iperf3 with policies / without", ">= 0.95x", f"{ratio_bits:.2f}x", ratio_bits >= 0.95
        ),
        Target(
            "new TCP conns/s with policies / without",
            ">= 0.95x",
            f"{ratio_conns:.2f}x",
            ratio_conns >= 0.95,
        ),
        Target(
            "new TCP conns per client CPU-second with policies / without",
            ">= 0.95x",
            f"{ratio_cpu:.2f}x",
            ratio_cpu >= 0.95,
        ),
        Target(
            f"agent RSS at {size['rss_pods']} pods / {size['rss_policies']} policies",
            "measured",
            f"{data['rss_mib']['VmRSS']:.0f} MiB",
            None,
        ),
    ]
    return outcome


if __name__ == "__main__":  # python -m bench.netpol [--smoke]: this suite alone, a table out
    from bench.common import BUNDLE, FULL, GO_DIR

    smoke = "--smoke" in sys.argv
    context = Context(BUNDLE, GO_DIR, Path(tempfile.mkdtemp()), SMOKE if smoke else FULL)
    result = suite(context)
    print("\n".join(result.lines))
    for target in result.targets:
        print(target)
    print(json.dumps(result.data, default=str))
