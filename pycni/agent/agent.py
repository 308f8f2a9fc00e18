"""`pycni agent`: the node agent. Keeps this node's CNI config and overlay in step with the
cluster's Node objects.

    pycni agent --node-name NODE --template /pycni/conf/00-pycni-vxlan.conflist \\
        [--kubeconfig /etc/kubernetes/kubelet.conf] [--conf-dir /etc/cni/net.d]

At start and whenever this node's pod CIDRs change, it writes the node's conflist: the template
with the IPAM ranges set to the node's spec.podCIDRs (and, for the overlays, localIP set to its
InternalIP), into --conf-dir under the template's file name. If the template's plugin reads a
`peersFile` (pycni-vxlan, pycni-ipip), the agent also writes that file: the other nodes' names,
InternalIPs and pod CIDRs, in the format those plugins read; atomically (a temporary file
renamed over it), and only when the peer set changes, each time followed by `pycni reconcile`
of the conflist so routes, neighbours and tunnels follow without waiting for a pod ADD.

Node objects come from the API server: list, then watch from the list's resourceVersion with
bookmarks; a watch that expires (HTTP 410, or an ERROR event with code 410) is followed by a
new list; any other failure by a retry with bounded exponential backoff. While the API server
cannot be reached, the last good peer set stays in place, and the log says so. Credentials: a
kubeconfig (--kubeconfig; on a kind node the kubelet's), else the pod's service account.

With --encryption ipsec, the overlay plugins of the conflist get `"encryption": "ipsec"`
(docs/encryption.md): the pods' MTU leaves ESP its room and the plugins refuse a kernel without
ESP; with none (the default) the key is left out. The agent then also keys the node pairs
(pycni.agent.ipsec_keys): its X25519 key and per-boot nonce as annotations of its Node, the
peers' xfrm state reconciled before the peers file (and pruned after the overlay's reconcile),
a check of the SAs' counters every 10 s that rekeys before a sequence number can wrap. With
none, any xfrm state of pycni's is removed. Stopping leaves the xfrm state as it is: traffic
goes on with the old keys while the agent restarts.

With --once it lists the nodes, writes what it would write, and exits (an init container's step:
status 1 while the node has no pod CIDR, so the kubelet retries it); with --encryption ipsec only
the conflist: the node's key is published once, by the agent that stays.

SIGTERM or SIGINT ends it cleanly (exit status 0); the previous handlers are restored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pycni.cni import registry
from pycni.datapath import encryption as encryption_mod

# pycni.agent.kube (ssl, http.client: ~45 ms) is imported where the agent runs, not when `pycni`
# builds its parser

COMMAND = "agent"
HELP = "node agent: write this node's conflist and peers file from the cluster's Node objects"

# The multi-node datapaths (localIP, peersFile): the plugins with a node reconciler.
PEER_PLUGINS = tuple(entry.executable for entry in registry.PLUGINS if entry.reconciler)
NETPOL_PLUGIN = "pycni-netpol"
POLICY_STATE_DIR = Path("/run/pycni/netpol")
ANNOTATION_PREFIX = "pycni.io/"
WRAP_CHECK_INTERVAL = 10.0  # seconds between checks of the ESP SAs' packet counters
log = logging.getLogger("pycni.agent")


# --- what the agent computes (no I/O) ----------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """What the agent needs of a Node object (of its annotations, pycni's own)."""

    name: str
    internal_ips: tuple[str, ...]
    pod_cidrs: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, obj: dict[str, Any]) -> NodeInfo:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
        ips = [
            str(a["address"])
            for a in status.get("addresses") or []
            if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address")
        ]
        ours = sorted(
            (str(k), str(v))
            for k, v in (meta.get("annotations") or {}).items()
            if str(k).startswith(ANNOTATION_PREFIX)
        )
        return cls(str(meta.get("name", "")), tuple(ips), tuple(cidrs), tuple(ours))

    @property
    def node_ip(self) -> str | None:
        """The underlay address of the overlays: the first IPv4 InternalIP, else the first."""
        for ip in self.internal_ips:
            if ":" not in ip:
                return ip
        return self.internal_ips[0] if self.internal_ips else None


def peer_set(nodes: Iterable[NodeInfo], own_name: str) -> list[dict[str, Any]]:
    """The peers file's content: every other node with an address and a pod CIDR, by name."""
    peers = []
    for node in sorted(nodes, key=lambda n: n.name):
        if node.name == own_name or node.node_ip is None or not node.pod_cidrs:
            continue
        peers.append({"name": node.name, "nodeIP": node.node_ip, "podCIDRs": list(node.pod_cidrs)})
    return peers


def render_conflist(
    template: dict[str, Any],
    node: NodeInfo,
    policy_state_dir: Path | None = None,
    encryption: str = encryption_mod.NONE,
) -> dict[str, Any]:
    """The template with the node's pod CIDRs as IPAM ranges (one range set per CIDR, as
    host-local wants them) and, for an overlay plugin, its InternalIP as localIP and the
    agent's `encryption` ("ipsec"; none: any `encryption` of the template's is left out, so
    the agent's flag decides). With `policy_state_dir` (NetworkPolicy on), pycni-netpol is
    chained last with that stateDir; without, any pycni-netpol of the template is left out."""
    conflist: dict[str, Any] = json.loads(json.dumps(template))
    plugins = [p for p in conflist.get("plugins", []) if p.get("type") != NETPOL_PLUGIN]
    for plugin in plugins:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and "ranges" in ipam:
            ipam["ranges"] = [[{"subnet": cidr}] for cidr in node.pod_cidrs]
        if plugin.get("type") in PEER_PLUGINS:
            if node.node_ip is not None:
                plugin["localIP"] = node.node_ip
            plugin.pop("encryption", None)
            if encryption == encryption_mod.IPSEC:
                plugin["encryption"] = encryption
    if policy_state_dir is not None:
        plugins.append({"type": NETPOL_PLUGIN, "stateDir": str(policy_state_dir)})
    if "plugins" in conflist:
        conflist["plugins"] = plugins
    return conflist


def peers_file_of(conflist: dict[str, Any]) -> Path | None:
    """The peersFile of the conflist's overlay plugin, if it has one."""
    for plugin in conflist.get("plugins", []):
        if plugin.get("type") in PEER_PLUGINS and plugin.get("peersFile"):
            return Path(plugin["peersFile"])
    return None


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old content or the new, never a part (same directory: rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- the agent ----------------------------------------------------------------------------


class Backoff:
    """Bounded exponential backoff: first, 2*first, ... up to `limit`; reset on success."""

    def __init__(self, first: float = 0.5, limit: float = 30.0) -> None:
        self.first, self.limit = first, limit
        self.next_delay = first

    def next(self) -> float:
        delay = self.next_delay
        self.next_delay = min(self.limit, delay * 2)
        return delay

    def reset(self) -> None:
        self.next_delay = self.first


@dataclass
class Agent:
    """One node's agent. `client` is a kube.Client (or anything with its list/watch/abort);
    `reconcile(conf_path)` brings the datapath to the peers file and returns its changes."""

    client: Any
    node_name: str
    template: dict[str, Any]
    conf_path: Path
    reconcile: Callable[[Path], list[str]]
    backoff: Backoff = field(default_factory=Backoff)
    watch_timeout: int = 300
    stop: threading.Event = field(default_factory=threading.Event)
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    written_conf: str | None = None
    written_peers: list[dict[str, Any]] | None = None
    policy_state_dir: Path | None = None  # NetworkPolicy on: pycni-netpol chained last
    encryption: str = encryption_mod.NONE  # IPSEC: the overlay plugins' `encryption`
    keying: Any = None  # IPSEC: a pycni.agent.ipsec_keys.Keying, which keys the xfrm state
    wrap_check_interval: float = WRAP_CHECK_INTERVAL
    apply_lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def peers_file(self) -> Path | None:
        return peers_file_of(self.template)

    def run(self) -> None:
        """List and watch until `stop` is set."""
        from pycni.agent import kube

        while not self.stop.is_set():
            try:
                items, version = self.client.list_nodes()
                with self.apply_lock:  # the rekey thread reads them
                    self.nodes = {n.name: n for n in map(NodeInfo.of, items)}
                log.info("listed %d nodes at resourceVersion %s", len(self.nodes), version)
                self.apply()
                self.backoff.reset()
                while not self.stop.is_set():
                    version = self.watch(version)
            except kube.Gone as err:
                log.info("the watch expired (410: %s): listing the nodes again", err)
            except kube.ApiError as err:
                if self.stop.is_set():
                    break
                delay = self.backoff.next()
                kept = (
                    f"keeping the last good peer set ({len(self.written_peers)} peers)"
                    if self.written_peers is not None
                    else "no peer set written yet"
                )
                log.warning("API server unreachable: %s; %s; retrying in %.1f s", err, kept, delay)
                self.stop.wait(delay)

    def watch(self, version: str) -> str:
        """One watch request; the resourceVersion to resume from when it ends."""
        for event in self.client.watch_nodes(version, self.watch_timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            node = NodeInfo.of(obj)
            if kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            with self.apply_lock:  # the rekey thread reads them
                if kind == "DELETED":
                    self.nodes.pop(node.name, None)
                else:
                    self.nodes[node.name] = node
            log.info("%s node %s", kind.lower(), node.name)
            self.apply()
            if self.stop.is_set():
                break
        return version

    def apply(self, *, conflist_only: bool = False) -> None:
        """Write the node's conflist and the peers file if they changed; reconcile on change.
        With encryption, the peers' xfrm state first: a peer's tunnel never exists without.
        `conflist_only`: the conflist, nothing else (no peers file, no datapath, no keying)."""
        with self.apply_lock:
            self._apply(conflist_only)

    def _apply(self, conflist_only: bool = False) -> None:
        own = self.nodes.get(self.node_name)
        if own is None or not own.pod_cidrs:
            log.warning("node %s has no pod CIDR yet: conflist not written", self.node_name)
            return
        conflist = render_conflist(self.template, own, self.policy_state_dir, self.encryption)
        conf_text = json.dumps(conflist, indent=2) + "\n"
        conf_changed = conf_text != self.written_conf
        if conf_changed:
            write_atomically(self.conf_path, conf_text)
            self.written_conf = conf_text
            log.info("wrote %s (pod CIDRs %s)", self.conf_path, ", ".join(own.pod_cidrs))
        if conflist_only:
            return
        peers_file = self.peers_file
        if peers_file is None:
            return
        peers = peer_set(self.nodes.values(), self.node_name)
        if self.keying is not None and not self.apply_encryption(own, peers, prune=False):
            return  # no peers file (so no new tunnel) without the peers' xfrm state
        if peers == self.written_peers and not conf_changed:
            return
        write_atomically(peers_file, json.dumps(peers, indent=2) + "\n")
        self.written_peers = peers
        names = ", ".join(p["name"] for p in peers) or "none"
        log.info("wrote %s: %d peers (%s)", peers_file, len(peers), names)
        try:
            for change in self.reconcile(self.conf_path):
                log.info("reconcile: %s", change)
        except RuntimeError as err:
            # the peers file is right; the datapath is not: try again on the next event
            self.written_peers = None
            log.error("%s; retrying at the next node event", err)
            return
        if self.keying is not None:  # the tunnels of departed peers are gone: their xfrm too
            self.apply_encryption(own, peers, prune=True)

    def apply_encryption(self, own: NodeInfo, peers: list[dict[str, Any]], *, prune: bool) -> bool:
        """Reconcile the xfrm state of `peers` (keying); False when the kernel refused it.
        Without `prune` only add: a departed peer's state goes after its tunnel."""
        from pycni.agent.ipsec_keys import PeerNode
        from pycni.cni.errors import CniError

        if own.node_ip is None:
            log.error("node %s has no InternalIP: no IPsec", self.node_name)
            return False
        nodes = [
            PeerNode(p["name"], p["nodeIP"], dict(self.nodes[p["name"]].annotations)) for p in peers
        ]
        try:
            self.keying.apply(own.node_ip, nodes, dict(own.annotations), prune=prune)
        except CniError as err:
            self.written_peers = None
            log.error("IPsec: %s; retrying at the next node event", err.msg)
            return False
        except OSError as err:  # no NETLINK_XFRM at all (xfrm_user missing)
            self.written_peers = None
            log.error("IPsec: no xfrm netlink in this kernel (modprobe xfrm_user): %s", err)
            return False
        return True

    def check_wrap(self) -> None:
        """Rekey (a new nonce) when an SA nears its sequence number's end, then reconcile."""
        from pycni.cni.errors import CniError

        try:
            due = self.keying.wrap_due()
        except (CniError, OSError) as err:
            log.error("IPsec: failed to read the SA counters: %s", err)
            return
        if due:
            log.info("IPsec: an SA is near its sequence number's end: rekeying (new nonce)")
            with self.apply_lock:
                self.keying.rotate()
                self._apply()

    def shutdown(self) -> None:
        self.stop.set()
        self.client.abort()


# --- the subcommand ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name (default: $NODE_NAME, else the host name)",
    )
    parser.add_argument(
        "--template",
        type=Path,
        required=True,
        help="the conflist to install (its IPAM ranges are replaced by the pod CIDRs)",
    )
    parser.add_argument(
        "--conf-dir", type=Path, default=Path("/etc/cni/net.d"), help="default /etc/cni/net.d"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="a kubeconfig (a kind node's kubelet: /etc/kubernetes/kubelet.conf);"
        " default: the pod's service account",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="list the nodes once, write the conflist (and peers file), reconcile, exit:"
        " status 0 if the conflist was written (an init container's step); with"
        " --encryption ipsec the conflist only (the agent that stays publishes the key)",
    )
    parser.add_argument(
        "--network-policy",
        type=_boolean,
        default=True,
        metavar="true|false",
        help="enforce NetworkPolicy on this node (default true): watch NetworkPolicies, Pods"
        " and Namespaces, program table inet pycni-policy, chain pycni-netpol into the"
        " conflist; false removes the table and pycni-netpol",
    )
    parser.add_argument(
        "--policy-state-dir",
        type=Path,
        default=POLICY_STATE_DIR,
        help=f"what the agent and pycni-netpol share (default {POLICY_STATE_DIR})",
    )
    parser.add_argument(
        "--encryption",
        choices=(encryption_mod.NONE, encryption_mod.IPSEC),
        default=encryption_mod.NONE,
        help="ipsec: the VXLAN/IPIP packets between nodes travel as IPsec ESP, keyed by this"
        " agent, and the conflist's overlay plugin says so (its pods' MTU leaves ESP room;"
        " docs/encryption.md); needs esp4 in the kernel. Default none: in the clear",
    )
    parser.add_argument(
        "--ipsec-psk-file",
        type=Path,
        default=None,
        help="with --encryption ipsec: a file (a mounted Secret) whose bytes are mixed into"
        " every IPsec key as HKDF salt; every node needs the same (default: none)",
    )
    # tests: rekey after fewer packets, check more often (the kernel lane proves the rekey)
    parser.add_argument("--ipsec-rekey-packets", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ipsec-check-interval", type=float, default=WRAP_CHECK_INTERVAL, help=argparse.SUPPRESS
    )
    parser.add_argument("--watch-timeout", type=int, default=300, help=argparse.SUPPRESS)
    parser.add_argument("--backoff-limit", type=float, default=30.0, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from pycni.agent import kube

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pycni-agent %(levelname)s %(message)s"
    )
    try:
        template = json.loads(args.template.read_text())
        credentials = (
            kube.from_kubeconfig(args.kubeconfig) if args.kubeconfig else kube.in_cluster()
        )
        client = kube.Client(credentials)
    except (OSError, ValueError) as err:
        log.error("failed to read template '%s': %s", args.template, err)
        return 1
    except kube.ConfigProblem as err:
        log.error("%s", err)
        return 1
    policy = getattr(args, "network_policy", False)
    agent = Agent(
        client,
        args.node_name,
        template,
        args.conf_dir / args.template.name,
        reconcile_conflist,
        backoff=Backoff(limit=args.backoff_limit),
        watch_timeout=args.watch_timeout,
        policy_state_dir=args.policy_state_dir if policy else None,
        encryption=getattr(args, "encryption", encryption_mod.NONE),
    )
    log.info("node %s: managing %s", agent.node_name, agent.conf_path)
    if agent.encryption == encryption_mod.IPSEC:
        try:
            agent.keying = make_keying(args, template, kube.Client(credentials))
            agent.wrap_check_interval = getattr(args, "ipsec_check_interval", WRAP_CHECK_INTERVAL)
        except (OSError, ValueError) as err:
            log.error("IPsec: %s", err)
            return 1
    else:
        disable_encryption()
    if args.once:
        return run_once(agent)
    if not policy:
        disable_policy(args)
        return run_until_signalled(agent, None)
    from pycni.agent.netpol.controller import Controller
    from pycni.agent.netpol.program import NftProgrammer

    controller = Controller(
        lambda: kube.Client(credentials),
        args.node_name,
        args.policy_state_dir,
        NftProgrammer(),
        stop=agent.stop,
        watch_timeout=args.watch_timeout,
        backoff_limit=args.backoff_limit,
    )
    return run_until_signalled(agent, controller)


def make_keying(args: argparse.Namespace, template: dict[str, Any], client: Any) -> Any:
    """The IPsec keying of --encryption ipsec (ValueError: no overlay to encrypt)."""
    from pycni.agent import ipsec_keys

    tunnel = ipsec_keys.tunnel_of(template)
    if tunnel is None:
        raise ValueError(
            f"--encryption ipsec needs a pycni-vxlan or pycni-ipip template, not {args.template}"
        )
    psk = b""
    psk_file = getattr(args, "ipsec_psk_file", None)
    if psk_file is not None:
        psk = psk_file.read_bytes()
    keying = ipsec_keys.Keying(client, args.node_name, tunnel, psk)
    if getattr(args, "ipsec_rekey_packets", None):
        keying.rekey_packets = args.ipsec_rekey_packets
    log.info(
        "IPsec: %s tunnel packets in ESP (%s)", tunnel.kind, "PSK mixed in" if psk else "no PSK"
    )
    return keying


def disable_encryption() -> None:
    """--encryption none: remove any xfrm state of pycni's (a node where it was on before)."""
    from pycni.cni.errors import CniError
    from pycni.datapath import ipsec
    from pycni.netlink.xfrm import Xfrm

    try:
        with Xfrm() as table:
            removed = ipsec.clear(table)
    except (CniError, OSError) as err:  # no xfrm_user in this kernel: nothing of ours either
        log.debug("no xfrm state to clear: %s", err)
        return
    if removed:
        log.info("IPsec is off on this node: removed %d xfrm policies and SAs", removed)


def disable_policy(args: argparse.Namespace) -> None:
    """--network-policy=false: the markers go first (no new pod is gated), then the table."""
    import shutil

    from pycni.cni.errors import CniError

    shutil.rmtree(args.policy_state_dir / "namespaces", ignore_errors=True)
    try:
        from pycni.agent.netpol.program import NftProgrammer

        NftProgrammer().disable()
    except CniError as err:
        log.error("failed to remove the NetworkPolicy table: %s", err.msg)
        return  # the node's own work goes on; the table (if any) stays as it was
    log.info("NetworkPolicy is off on this node: table inet pycni-policy removed")


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")


def run_once(agent: Agent) -> int:
    """One list and one apply: 0 if the node's conflist is now written.

    With IPsec keying, the conflist only. Keying publishes this process's key; the agent that
    starts next has a key of its own and publishes it too, so every peer would rekey twice at
    start (and briefly hold SAs for a key nobody uses). The peers file, and with it every
    tunnel, waits for that agent: no tunnel exists before its SAs."""
    from pycni.agent import kube

    try:
        items, _ = agent.client.list_nodes()
    except kube.ApiError as err:
        log.error("failed to list the nodes: %s", err)
        return 1
    agent.nodes = {n.name: n for n in map(NodeInfo.of, items)}
    agent.apply(conflist_only=agent.keying is not None)
    return 0 if agent.written_conf is not None else 1


def run_until_signalled(agent: Agent, controller: Any = None) -> int:
    """The agent in a worker thread (and the NetworkPolicy controller's threads);
    SIGTERM/SIGINT set its stop event (the handlers never raise) and the previous handlers
    come back before returning. The policy table is left as it is: enforcement holds while
    the agent restarts."""
    worker = threading.Thread(target=agent.run, name="pycni-agent", daemon=True)
    rekey = threading.Thread(target=_check_wraps, args=(agent,), name="pycni-rekey", daemon=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        agent.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if controller is not None:
            controller.start()
        worker.start()
        if agent.keying is not None:
            rekey.start()
        while worker.is_alive() and not agent.stop.is_set():
            agent.stop.wait(1.0)
        agent.shutdown()
        if controller is not None:
            controller.shutdown()
            controller.join(timeout=10)
        worker.join(timeout=10)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if worker.is_alive():
        log.error("the watch did not stop within 10 s")
        return 1
    log.info("stopped")
    return 0


def _check_wraps(agent: Agent) -> None:
    while not agent.stop.wait(agent.wrap_check_interval):
        agent.check_wrap()


def reconcile_conflist(conf_path: Path) -> list[str]:
    """`pycni reconcile --conf conf_path` in this process; its printed changes."""
    import contextlib
    import io

    from pycni.agent import reconcile

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = reconcile.run(argparse.Namespace(conf=conf_path))
    if status != 0:
        raise RuntimeError(err.getvalue().strip() or f"pycni reconcile exited {status}")
    return out.getvalue().splitlines()


def main(argv: list[str] | None = None) -> int:
    """The frozen `pycni-agent` executable (packaging/agent.spec): this subcommand alone."""
    parser = argparse.ArgumentParser(
        prog="pycni-agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
