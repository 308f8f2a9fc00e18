"""The node agent and its Kubernetes source against the replaying API server
(tests/support/kube_replay.py): credentials, list, watch (ADDED/MODIFIED/DELETED/BOOKMARK),
410 both ways, an outage; the files the agent writes; its signal handling. The datapath is
stubbed here (a recording reconcile); tests/agent/test_agent_cluster.py drives a real
overlay."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.agent import agent as agent_mod
from pycni.agent import kube
from tests.support.kube_replay import TOKEN, FakeApiServer, Pki
from tests.support.paths import KIND
from tests.support.wait import wait_for

TEMPLATE = KIND / "00-pycni-vxlan.conflist"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"), ["127.0.0.1"])


@pytest.fixture
def api(pki: Pki) -> Iterator[FakeApiServer]:
    server = FakeApiServer(
        pki, lambda: socket.socket(socket.AF_INET), "127.0.0.1", bookmark_interval=0.3
    )
    server.put_node("kind-control-plane", "172.18.0.2", ["10.244.0.0/24"])
    server.put_node("kind-worker", "172.18.0.3", ["10.244.1.0/24"])
    server.put_node("kind-worker2", "172.18.0.4", ["10.244.2.0/24"])
    server.start()
    yield server
    server.close()


def kubeconfig(api: FakeApiServer, tmp_path: Path, *, inline: bool = True) -> Path:
    path = tmp_path / "kubelet.conf"
    path.write_text(api.kubeconfig(inline=inline))
    return path


# --- credentials and the client ------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False], ids=["data", "files"])
def test_kubeconfig_client_certificate_lists_nodes(
    api: FakeApiServer, tmp_path: Path, inline: bool
) -> None:
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path, inline=inline)))
    items, version = client.list_nodes()
    assert [i["metadata"]["name"] for i in items] == [
        "kind-control-plane",
        "kind-worker",
        "kind-worker2",
    ]
    assert version == str(api.version)


def test_in_cluster_service_account(pki: Pki, api: FakeApiServer, tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "ca.crt").write_bytes(pki.ca.read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port())}
    client = kube.Client(kube.in_cluster(env, account))
    items, _ = client.list_nodes()
    assert len(items) == 3


def test_wrong_credentials_and_missing_config_are_reported(
    pki: Pki, api: FakeApiServer, tmp_path: Path
) -> None:
    creds = kube.Credentials(f"https://127.0.0.1:{api.port()}", ca_pem=pki.ca.read_text())
    with pytest.raises(kube.Unreachable, match="HTTP 401: Unauthorized"):
        kube.Client(creds).list_nodes()
    with pytest.raises(kube.ConfigProblem, match="KUBERNETES_SERVICE_HOST"):
        kube.in_cluster({}, tmp_path)
    with pytest.raises(kube.Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        other = kube.Credentials(f"https://127.0.0.1:{api.port()}", token=TOKEN)
        kube.Client(other).list_nodes()  # the system trust store does not know the cluster CA


def test_watch_streams_events_bookmarks_and_error_410(api: FakeApiServer, tmp_path: Path) -> None:
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=5)
    _, version = client.list_nodes()
    seen: list[tuple[str, str]] = []

    def changes() -> None:
        time.sleep(0.2)
        api.put_node("kind-worker3", "172.18.0.5", ["10.244.3.0/24"])
        api.put_node("kind-worker3", "172.18.0.5", ["10.244.3.0/24", "fd00:10:244:3::/64"])
        api.delete_node("kind-worker2")
        time.sleep(0.8)  # a bookmark or two
        api.expire_watches()

    threading.Thread(target=changes, daemon=True).start()
    with pytest.raises(kube.Gone, match="too old resource version"):
        for event in client.watch_nodes(version, timeout_seconds=20):
            seen.append((event["type"], event["object"]["metadata"].get("name", "")))
    kinds = [kind for kind, _ in seen]
    assert seen[:3] == [
        ("ADDED", "kind-worker3"),
        ("MODIFIED", "kind-worker3"),
        ("DELETED", "kind-worker2"),
    ]
    assert "BOOKMARK" in kinds[3:]
    # the old resourceVersion is gone for good: HTTP 410 on the next watch
    with pytest.raises(kube.Gone, match="too old resource version"):
        next(iter(client.watch_nodes(version)))


def test_outage_is_unreachable(api: FakeApiServer, tmp_path: Path) -> None:
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=2)
    api.outage()
    with pytest.raises(kube.Unreachable, match="Connection refused"):
        client.list_nodes()
    api.restore()
    assert len(client.list_nodes()[0]) == 3


def test_warning_events_land_in_their_objects_namespace(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Events of IPsec keying (on a Node) and of NetworkPolicy (on a policy), as the API
    server stores them; one that cannot be posted is logged, not raised."""
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=2)
    node = {"apiVersion": "v1", "kind": "Node", "name": "kind-worker2", "uid": "kind-worker2"}
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": "x",
              "name": "deny", "uid": "u1", "resourceVersion": "7"}  # fmt: skip
    kube.post_event(
        client, kube.warning_event(node, "IPsecPeerWithoutKey", "no key", "kind-worker")
    )
    kube.post_event(
        client, kube.warning_event(policy, "PolicyNotProgrammed", "m" * 2000, "kind-worker")
    )
    on_node, on_policy = api.events
    assert on_node["metadata"]["namespace"] == "default"  # a Node has none: default, as kubelet's
    assert on_node["metadata"]["name"].startswith("kind-worker2.")
    assert on_node["involvedObject"] == node
    assert (on_node["reason"], on_node["message"], on_node["type"]) == (
        "IPsecPeerWithoutKey",
        "no key",
        "Warning",
    )
    assert on_node["source"] == {"component": "pycni-agent", "host": "kind-worker"}
    assert on_node["reportingInstance"] == "kind-worker" and on_node["count"] == 1
    assert on_node["firstTimestamp"] == on_node["lastTimestamp"]
    assert on_policy["metadata"]["namespace"] == "x" and on_policy["involvedObject"] == policy
    assert on_policy["message"] == "m" * kube.EVENT_MESSAGE_LIMIT
    api.outage()
    caplog.set_level(logging.WARNING, logger="pycni.agent")
    kube.post_event(client, kube.warning_event(policy, "PolicyNotProgrammed", "m", "kind-worker"))
    assert "failed to post an Event on NetworkPolicy x/deny" in caplog.text
    assert len(api.events) == 2


# --- what the agent computes ------------------------------------------------------------


def test_peer_set_and_conflist_from_node_objects() -> None:
    from tests.support.kube_replay import kind_node

    nodes = [
        agent_mod.NodeInfo.of(kind_node("b", "172.18.0.3", ["10.244.1.0/24"], 1)),
        agent_mod.NodeInfo.of(kind_node("a", "172.18.0.2", ["10.244.0.0/24"], 1)),
        agent_mod.NodeInfo.of(kind_node("new", "172.18.0.9", [], 1)),  # no pod CIDR yet
    ]
    assert agent_mod.peer_set(nodes, "a") == [
        {"name": "b", "nodeIP": "172.18.0.3", "podCIDRs": ["10.244.1.0/24"]}
    ]
    template = json.loads(TEMPLATE.read_text())
    dual = agent_mod.NodeInfo("a", ("fc00:f853:ccd:e793::2", "172.18.0.2"),
                              ("10.244.0.0/24", "fd00:10:244::/64"))  # fmt: skip
    conf = agent_mod.render_conflist(template, dual)
    plugin = conf["plugins"][0]
    assert plugin["ipam"]["ranges"] == [
        [{"subnet": "10.244.0.0/24"}],
        [{"subnet": "fd00:10:244::/64"}],
    ]
    assert plugin["localIP"] == "172.18.0.2"
    assert conf["plugins"][1] == template["plugins"][1]  # the chained plugins as they were
    assert template["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]


def test_the_conflist_says_encryption_as_the_agent_is_told() -> None:
    """--encryption ipsec: the overlay plugin gets `"encryption": "ipsec"` (its pods' MTU
    leaves ESP room, it refuses a kernel without ESP); none (the default) leaves the key out,
    even where a template has it: the agent's flag decides, on every node alike. Chained
    plugins and a bridge template are not overlays and never get it."""
    node = agent_mod.NodeInfo("a", ("172.18.0.2",), ("10.244.0.0/24",))
    for name in ("00-pycni-vxlan", "00-pycni-ipip-always", "00-pycni-ipip-crosssubnet"):
        template = json.loads((KIND / f"{name}.conflist").read_text())
        encrypted = agent_mod.render_conflist(template, node, encryption="ipsec")
        assert encrypted["plugins"][0]["encryption"] == "ipsec", name
        assert all("encryption" not in p for p in encrypted["plugins"][1:]), name
        assert "encryption" not in agent_mod.render_conflist(template, node)["plugins"][0]
        template["plugins"][0]["encryption"] = "ipsec"
        clear = agent_mod.render_conflist(template, node, encryption="none")
        assert "encryption" not in clear["plugins"][0], name
    bridge = json.loads((KIND / "00-pycni-bridge.conflist").read_text())
    rendered = agent_mod.render_conflist(bridge, node, encryption="ipsec")
    assert all("encryption" not in p for p in rendered["plugins"])


def test_the_encryption_flag_reaches_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    agent_mod.add_arguments(parser)
    base = ["--template", str(TEMPLATE), "--kubeconfig", str(tmp_path / "kubeconfig"), "--once"]
    assert parser.parse_args(base).encryption == "none"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--encryption", "wireguard"])
    made: list[agent_mod.Agent] = []

    def run_once(agent: agent_mod.Agent) -> int:  # the Agent as `run` made it; no API call
        made.append(agent)
        return 0

    monkeypatch.setattr(agent_mod, "run_once", run_once)
    monkeypatch.setattr(kube, "from_kubeconfig", lambda path: None)
    monkeypatch.setattr(kube, "Client", lambda credentials: None)
    assert agent_mod.run(parser.parse_args([*base, "--encryption", "ipsec"])) == 0
    assert made[0].encryption == "ipsec"


def test_backoff_is_exponential_and_bounded() -> None:
    backoff = agent_mod.Backoff(0.5, 4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


# --- the agent against the replayed API -----------------------------------------------------


class Recorder:
    """Stands in for `pycni reconcile`: records the peers file at each call."""

    def __init__(self, peers_file: Path) -> None:
        self.peers_file = peers_file
        self.calls: list[list[str]] = []

    def __call__(self, conf: Path) -> list[str]:
        assert conf.exists()
        self.calls.append([p["name"] for p in json.loads(self.peers_file.read_text())])
        return []


def test_agent_follows_the_cluster_through_410_and_an_outage(
    api: FakeApiServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pycni.agent")
    template = json.loads(TEMPLATE.read_text())
    peers_file = tmp_path / "peers.json"
    template["plugins"][0]["peersFile"] = str(peers_file)
    recorder = Recorder(peers_file)
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=2)
    node_agent = agent_mod.Agent(
        client,
        "kind-worker",
        template,
        tmp_path / "net.d" / "00-pycni-vxlan.conflist",
        recorder,
        backoff=agent_mod.Backoff(0.1, 0.4),
        watch_timeout=30,
    )
    worker = threading.Thread(target=node_agent.run, daemon=True)
    worker.start()

    def peers() -> list[str]:
        try:
            return [p["name"] for p in json.loads(peers_file.read_text())]
        except (OSError, ValueError):
            return []

    try:
        wait_for(
            "the first peer set", lambda: recorder.calls == [["kind-control-plane", "kind-worker2"]]
        )
        conf = json.loads(node_agent.conf_path.read_text())
        assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]

        api.put_node("kind-worker3", "172.18.0.5", ["10.244.3.0/24"])
        wait_for(
            "node add", lambda: peers() == ["kind-control-plane", "kind-worker2", "kind-worker3"]
        )
        api.delete_node("kind-worker2")
        wait_for("node delete", lambda: peers() == ["kind-control-plane", "kind-worker3"])
        calls = len(recorder.calls)
        api.put_node("kind-control-plane", "172.18.0.2", ["10.244.0.0/24"])  # unchanged peers
        time.sleep(0.5)
        assert len(recorder.calls) == calls, "a MODIFIED that changes no peer reconciles nothing"

        # the watch expires (ERROR 410 on the stream, then HTTP 410): list again
        lists = api.requests.count("LIST")
        api.expire_watches()
        wait_for("a new list after 410", lambda: api.requests.count("LIST") > lists)
        api.put_node("kind-worker4", "172.18.0.6", ["10.244.4.0/24"])
        wait_for("add after 410", lambda: "kind-worker4" in peers())

        # an outage: the last good peer set stays; changes made meanwhile arrive afterwards
        api.outage()
        wait_for("the outage noticed", lambda: "keeping the last good peer set" in caplog.text)
        assert peers() == ["kind-control-plane", "kind-worker3", "kind-worker4"]
        api.delete_node("kind-worker4")
        api.put_node("kind-worker5", "172.18.0.7", ["10.244.5.0/24"])
        api.restore()
        after = ["kind-control-plane", "kind-worker3", "kind-worker5"]
        wait_for(
            "recovery and its reconcile",
            lambda: peers() == after and bool(recorder.calls) and recorder.calls[-1] == after,
        )
        own = api.nodes["kind-worker"]
        api.put_node("kind-worker", "172.18.0.3", ["10.244.1.0/24", "fd00:10:244:1::/64"])
        assert own is not api.nodes["kind-worker"]
        wait_for(
            "the conflist rewritten with a new pod CIDR",
            lambda: "fd00:10:244:1::/64" in node_agent.conf_path.read_text(),
        )
    finally:
        node_agent.shutdown()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert "the watch expired (410" in caplog.text
    assert not list(tmp_path.glob("**/.*.tmp")), "no temporary file left behind"


def test_agent_process_stops_cleanly_on_sigterm(api: FakeApiServer, tmp_path: Path) -> None:
    template = json.loads(TEMPLATE.read_text())
    template["plugins"] = [{"type": "pycni-bridge", "ipam": template["plugins"][0]["ipam"]}]
    template_file = tmp_path / "00-pycni-bridge.conflist"
    template_file.write_text(json.dumps(template))
    argv = [sys.executable, "-c", "import sys; from pycni.cli import main; sys.exit(main())",
            "agent", "--node-name", "kind-worker2", "--template", str(template_file),
            "--conf-dir", str(tmp_path / "net.d"),
            "--kubeconfig", str(kubeconfig(api, tmp_path))]  # fmt: skip
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        conf = tmp_path / "net.d" / "00-pycni-bridge.conflist"
        wait_for("the conflist", conf.exists)
        assert json.loads(conf.read_text())["plugins"][0]["ipam"]["ranges"] == [
            [{"subnet": "10.244.2.0/24"}]
        ]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "stopped" in stderr


def test_signal_handlers_are_restored(api: FakeApiServer, tmp_path: Path) -> None:
    """run_until_signalled leaves SIGTERM and SIGINT as it found them."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=2)
    template = {"plugins": [{"type": "pycni-bridge", "ipam": {"ranges": []}}]}
    node_agent = agent_mod.Agent(
        client, "kind-worker", template, tmp_path / "c.conflist", lambda _: []
    )
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    assert agent_mod.run_until_signalled(node_agent) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_agent_without_api_keeps_going_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pki: Pki
) -> None:
    caplog.set_level(logging.INFO, logger="pycni.agent")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    creds = kube.Credentials(f"https://127.0.0.1:{port}", ca_pem=pki.ca.read_text())
    template: dict[str, Any] = {"plugins": []}
    node_agent = agent_mod.Agent(
        kube.Client(creds, timeout=1), "n", template, tmp_path / "c", lambda _: [],
        backoff=agent_mod.Backoff(0.05, 0.1),
    )  # fmt: skip
    worker = threading.Thread(target=node_agent.run, daemon=True)
    worker.start()
    wait_for("retries", lambda: caplog.text.count("API server unreachable") >= 3)
    node_agent.shutdown()
    worker.join(timeout=5)
    assert "no peer set written yet" in caplog.text
    assert not (tmp_path / "c").exists()


def test_once_writes_the_conflist_and_exits(api: FakeApiServer, tmp_path: Path) -> None:
    """The DaemonSet's install-conflist init container: one list, the files, exit 0; exit 1
    while the node has no pod CIDR (the kubelet then retries the init container)."""
    api.put_node("kind-worker9", "172.18.0.9", [])
    argv = [sys.executable, "-c", "import sys; from pycni.cli import main; sys.exit(main())",
            "agent", "--once", "--template", str(TEMPLATE), "--conf-dir", str(tmp_path / "net.d"),
            "--kubeconfig", str(kubeconfig(api, tmp_path))]  # fmt: skip
    done = subprocess.run([*argv, "--node-name", "kind-worker9"], check=False,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "node kind-worker9 has no pod CIDR yet" in done.stderr
    assert not (tmp_path / "net.d").exists()
    template = json.loads(TEMPLATE.read_text())
    peers_file = tmp_path / "peers.json"
    template["plugins"][0]["peersFile"] = str(peers_file)
    reconciled: list[str] = []

    def reconcile(conf: Path) -> list[str]:
        reconciled.append(str(conf))
        return []

    # run_once as --once runs it, with the datapath stubbed (this test has no node namespace)
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)))
    one = agent_mod.Agent(
        client, "kind-worker", template, tmp_path / "net.d" / TEMPLATE.name, reconcile
    )
    assert agent_mod.run_once(one) == 0
    conf = json.loads((tmp_path / "net.d" / TEMPLATE.name).read_text())
    assert conf["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert [p["name"] for p in json.loads(peers_file.read_text())] == [
        "kind-control-plane",
        "kind-worker2",
    ]
    assert reconciled == [str(tmp_path / "net.d" / TEMPLATE.name)]


def test_a_failed_reconcile_is_retried_at_the_next_event(tmp_path: Path) -> None:
    from tests.support.kube_replay import kind_node

    template = json.loads(TEMPLATE.read_text())
    template["plugins"][0]["peersFile"] = str(tmp_path / "peers.json")
    outcomes = [RuntimeError("pycni reconcile: error 105: netlink says no"), None]
    calls: list[Path] = []

    def reconcile(conf: Path) -> list[str]:
        calls.append(conf)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return ["add route 10.244.1.0/24 via 10.244.1.0"]

    node_agent = agent_mod.Agent(None, "a", template, tmp_path / "c.conflist", reconcile)
    node_agent.nodes = {
        n: agent_mod.NodeInfo.of(kind_node(n, ip, [cidr], 1))
        for n, ip, cidr in (
            ("a", "172.18.0.2", "10.244.0.0/24"),
            ("b", "172.18.0.3", "10.244.1.0/24"),
        )
    }
    node_agent.apply()
    assert len(calls) == 1 and node_agent.written_peers is None
    node_agent.apply()  # e.g. a MODIFIED that changes nothing: still reconciled, it failed before
    assert len(calls) == 2 and node_agent.written_peers is not None
    node_agent.apply()
    assert len(calls) == 2


def test_kubeconfig_file_paths_are_relative_to_the_kubeconfig(pki: Pki, tmp_path: Path) -> None:
    """certificate-authority, client-certificate, client-key and tokenFile as relative paths,
    read from the kubeconfig's own directory, as kubectl reads them."""
    conf_dir = tmp_path / "kube"
    (conf_dir / "pki").mkdir(parents=True)
    for source, name in ((pki.ca, "ca.crt"), (pki.client_cert, "c.crt"), (pki.client_key, "c.key")):
        (conf_dir / "pki" / name).write_bytes(source.read_bytes())
    (conf_dir / "token").write_text(TOKEN + "\n")
    path = conf_dir / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "contexts: [{name: a, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://kind-control-plane:6443/',"
        " certificate-authority: pki/ca.crt}}]\n"
        "users: [{name: u, user: {client-certificate: pki/c.crt, client-key: pki/c.key,"
        " tokenFile: token}}]\n"
    )
    creds = kube.from_kubeconfig(path)
    assert creds.server == "https://kind-control-plane:6443"
    assert creds.ca_pem == pki.ca.read_text()
    assert creds.cert_pem == pki.client_cert.read_text()
    assert creds.key_pem == pki.client_key.read_text()
    assert creds.token_file == conf_dir / "token"
    client = kube.Client(creds)
    assert client._token() == TOKEN


def test_http_410_on_a_new_watch_means_list_again(api: FakeApiServer, tmp_path: Path) -> None:
    """A watch request whose resourceVersion was compacted away while no watch was open (the
    previous one ended at its timeout) is answered HTTP 410: the agent lists again."""
    template = json.loads(TEMPLATE.read_text())
    template["plugins"][0]["peersFile"] = str(tmp_path / "peers.json")
    client = kube.Client(kube.from_kubeconfig(kubeconfig(api, tmp_path)), timeout=5)
    node_agent = agent_mod.Agent(
        client, "kind-worker", template, tmp_path / "c.conflist", lambda _: []
    )
    items, version = client.list_nodes()
    node_agent.nodes = {n.name: n for n in map(agent_mod.NodeInfo.of, items)}
    api.put_node("kind-worker3", "172.18.0.5", ["10.244.3.0/24"])
    with api.changed:  # compaction past `version` while no watch is open
        api.compacted = api.version
        api.history.clear()
    with pytest.raises(kube.Gone, match="too old resource version"):
        node_agent.watch(version)  # the request itself is answered 410, no stream
    lists = api.requests.count("LIST")
    worker = threading.Thread(target=node_agent.run, daemon=True)
    worker.start()
    try:
        wait_for("a new list", lambda: api.requests.count("LIST") > lists)
        wait_for(
            "worker3 among the peers",
            lambda: (
                (tmp_path / "peers.json").exists()
                and "kind-worker3" in (tmp_path / "peers.json").read_text()
            ),
        )
    finally:
        node_agent.shutdown()
        worker.join(timeout=10)
    assert not worker.is_alive()
