"""The agent's NetworkPolicy loop: watch NetworkPolicies, Pods and Namespaces, keep the model
(pycni.agent.netpol.model.Engine) current, and program this node's table after each burst of
changes.

Threads: one reflector per kind (pycni.agent.reflector), one for the plugin's records (inotify
on <state>/pods: a pod's address is known the moment its ADD ends, not when the kubelet reports
it), one for Events, and the sync loop. The sync loop:

1. waits until all three kinds have been listed once (before that, a partial view would open or
   cut traffic: after a restart the table stays exactly as the last agent left it);
2. writes the namespace markers first (a namespace that just got its first policy gates its new
   pods from now on), renders, programs (pycni.agent.netpol.program: one transaction of the
   difference), then removes the markers of namespaces that have no policy any more;
3. writes <state>/status.json: the resourceVersion of each kind that the programmed ruleset
   reflects (a change made in the API at version V is enforced once all three are >= V).

Bad input never stops it: a NetworkPolicy it cannot parse isolates the pods it selects and
allows nothing (its podSelector and policyTypes are read on their own; when even those cannot be
read, the last good version stays); one the kernel refuses is quarantined the same way. Both get
an Event (reason PolicyNotProgrammed) on the NetworkPolicy, once per resourceVersion.

While the API server is away, the reflectors keep what they know and nothing is reprogrammed:
the last rules stay. On SIGTERM nothing is removed either: enforcement holds across restarts.
`--network-policy=false` (disable()) removes the markers, then the table.

Long-lived path (the agent).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pycni.agent import kube
from pycni.agent.netpol.model import Desired, Engine
from pycni.agent.netpol.objects import (
    NamespaceInfo,
    ObjectError,
    PodInfo,
    Policy,
    Rule,
    Selector,
)
from pycni.agent.reflector import Reflector
from pycni.datapath.policy_names import NAMESPACES, PODS

log = logging.getLogger("pycni.agent")

POLICIES_PATH = "/apis/networking.k8s.io/v1/networkpolicies"
PODS_PATH = "/api/v1/pods"
NAMESPACES_PATH = "/api/v1/namespaces"
REASON = "PolicyNotProgrammed"


class Programmer(Protocol):
    recorded: set[str]  # the addresses the plugin's records hold: pending ones stay

    def load(self) -> None: ...

    def apply(self, desired: Desired) -> dict[str, str]:
        """Program `desired`; the policies (key -> why) that could not be programmed."""
        ...

    def disable(self) -> None: ...


@dataclass
class Record:
    """The plugin's record of one ADD."""

    container_id: str
    namespace: str
    name: str
    uid: str
    ips: tuple[str, ...]
    mtime: float


@dataclass
class Status:
    versions: dict[str, int] = field(default_factory=dict)
    syncs: int = 0
    last_program_seconds: float = 0.0
    programmed_at: float = 0.0


class Controller:
    def __init__(
        self,
        client_factory: Callable[[], kube.Client],
        node: str,
        state_dir: Path,
        programmer: Programmer,
        *,
        stop: threading.Event | None = None,
        watch_timeout: int = 300,
        backoff_limit: float = 30.0,
        debounce: float = 0.01,
    ) -> None:
        from pycni.agent.agent import Backoff

        self.node = node
        self.state_dir = state_dir
        self.programmer = programmer
        self.stop = stop or threading.Event()
        self.debounce = debounce
        self.engine = Engine(node)
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.status = Status()
        self.records: dict[str, Record] = {}
        self.policy_objects: dict[str, dict[str, Any]] = {}  # key -> metadata, for Events
        self.events = EventRecorder(client_factory(), node, self.stop)
        self._markers: set[str] = set()
        self._loaded = False
        self.changed = True  # an event came in since the last sync
        self.progressed = False
        self._api_pods: dict[str, PodInfo] = {}
        self._reported: set[tuple[str, str, str]] = set()
        self.reflectors = [
            Reflector(
                client_factory(),
                path,
                replace,
                event,
                stop=self.stop,
                progress=self._progress,
                backoff=Backoff(limit=backoff_limit),
                watch_timeout=watch_timeout,
                name=name,
            )
            for path, name, replace, event in (
                (NAMESPACES_PATH, "namespaces", self._replace_namespaces, self._namespace_event),
                (POLICIES_PATH, "networkpolicies", self._replace_policies, self._policy_event),
                (PODS_PATH, "pods", self._replace_pods, self._pod_event),
            )
        ]
        self._threads: list[threading.Thread] = []

    # --- running -------------------------------------------------------------------------

    def start(self) -> None:
        (self.state_dir / NAMESPACES).mkdir(parents=True, exist_ok=True)
        (self.state_dir / PODS).mkdir(parents=True, exist_ok=True)
        self._markers = set(os.listdir(self.state_dir / NAMESPACES))
        _ensure_bridge_filtering()
        self._load()
        self._read_records()
        self.events.start()
        for reflector in self.reflectors:
            reflector.start()
        for target, name in ((self._watch_records, "records"), (self._sync_loop, "sync")):
            thread = threading.Thread(target=target, name=f"netpol-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _load(self) -> bool:
        """Read the table back (making its skeleton first); False when nft cannot be used."""
        from pycni.cni.errors import CniError

        try:
            self.programmer.load()
        except (CniError, OSError) as err:
            log.error("failed to read the NetworkPolicy table: %s", err)
            self._loaded = False
            return False
        self._loaded = True
        return True

    def shutdown(self) -> None:
        self.stop.set()
        self.dirty.set()
        for reflector in self.reflectors:
            reflector.client.abort()
        self.events.client.abort()

    def join(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        done = True
        for reflector in self.reflectors:
            done &= reflector.join(max(0.0, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            done &= not thread.is_alive()
        return done

    def _progress(self) -> None:
        """A bookmark: nothing changed up to a newer version; say so in the status."""
        self.progressed = True
        self.dirty.set()

    def _changed(self) -> None:
        self.changed = True
        self.dirty.set()

    def _sync_loop(self) -> None:
        while not self.stop.is_set():
            self.dirty.wait(1.0)
            if self.stop.is_set():
                break
            if not self.dirty.is_set() or not all(r.listed.is_set() for r in self.reflectors):
                continue
            self.stop.wait(self.debounce)  # let a burst of events land in one transaction
            self.dirty.clear()
            if not self.changed and self.status.syncs:
                with self.lock:
                    versions = {r.name: r.version for r in self.reflectors}
                    if not self.changed:  # no event came in since the last sync
                        self.status.versions = versions
                        self._write_status()
                        continue
            self.changed = False
            if not self._loaded and not self._load():
                self.stop.wait(5.0)
                self._changed()
                continue
            try:
                self.sync()
            except Exception:  # the loop outlives any one sync; the next event retries
                log.exception("failed to program the NetworkPolicy ruleset; retrying")
                self.stop.wait(1.0)
                self._changed()

    def sync(self) -> None:
        started = time.monotonic()
        with self.lock:
            versions = {r.name: r.version for r in self.reflectors}
            gated = self.engine.policy_namespaces()
            self._write_markers(gated)
            desired = self.engine.render()
            recorded = {ip for r in self.records.values() for ip in r.ips}
        self.programmer.recorded = recorded
        failures = self.programmer.apply(desired)
        if failures:
            with self.lock:
                for key, why in failures.items():
                    self.engine.quarantine(key, why)
                    self._report(key, f"the kernel refused this policy's rules: {why}")
            self._changed()  # program again without them
            return
        self._remove_markers(gated)
        self.status.versions = versions
        self.status.syncs += 1
        self.status.last_program_seconds = time.monotonic() - started
        self.status.programmed_at = time.time()
        self._write_status()

    # --- markers and status ----------------------------------------------------------------

    def _write_markers(self, gated: set[str]) -> None:
        for namespace in sorted(gated - self._markers):
            (self.state_dir / NAMESPACES / namespace).touch()
            self._markers.add(namespace)

    def _remove_markers(self, gated: set[str]) -> None:
        for namespace in sorted(self._markers - gated):
            try:
                (self.state_dir / NAMESPACES / namespace).unlink()
            except FileNotFoundError:
                pass
            self._markers.discard(namespace)

    def _write_status(self) -> None:
        status = {
            "node": self.node,
            "versions": self.status.versions,
            "syncs": self.status.syncs,
            "lastProgramSeconds": round(self.status.last_program_seconds, 6),
            "programmedAt": self.status.programmed_at,
            "quarantined": dict(self.engine.quarantined),
        }
        # renamed into place (readers see a whole file), not synced: it describes the
        # running agent, and a status lost with the machine describes nothing
        path = self.state_dir / "status.json"
        tmp = path.with_name(f".status.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(status) + "\n")
        os.replace(tmp, path)

    # --- the three kinds ---------------------------------------------------------------------

    def _replace_namespaces(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            seen = set()
            for obj in items:
                namespace = self._parse_namespace(obj)
                if namespace is not None:
                    seen.add(namespace.name)
                    self.engine.upsert_namespace(namespace)
            for name in set(self.engine.namespaces) - seen:
                self.engine.delete_namespace(name)
        self._changed()

    def _namespace_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                name = (obj.get("metadata") or {}).get("name")
                if isinstance(name, str):
                    self.engine.delete_namespace(name)
            else:
                namespace = self._parse_namespace(obj)
                if namespace is not None:
                    self.engine.upsert_namespace(namespace)
        self._changed()

    def _parse_namespace(self, obj: dict[str, Any]) -> NamespaceInfo | None:
        try:
            return NamespaceInfo.parse(obj)
        except ObjectError as err:
            log.warning("ignoring a Namespace: %s", err)
            return None

    def _replace_policies(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            seen = set()
            for obj in items:
                key = self._take_policy(obj)
                if key is not None:
                    seen.add(key)
            for key in set(self.engine.policies) - seen:
                self.engine.delete_policy(key)
                self.policy_objects.pop(key, None)
        self._changed()

    def _policy_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                meta = obj.get("metadata") or {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                self.engine.delete_policy(key)
                self.policy_objects.pop(key, None)
            else:
                self._take_policy(obj)
        self._changed()

    def _take_policy(self, obj: dict[str, Any]) -> str | None:
        """Parse and upsert a policy (under the lock); its key, or None when it has no usable
        name."""
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        namespace, name = meta.get("namespace"), meta.get("name")
        if not isinstance(namespace, str) or not isinstance(name, str):
            log.warning("ignoring a NetworkPolicy without a namespace and a name")
            return None
        key = f"{namespace}/{name}"
        self.policy_objects[key] = meta
        try:
            policy = Policy.parse(obj)
            current = self.engine.policies.get(key)
            if current is None or current.resource_version != policy.resource_version:
                self.engine.quarantined.pop(key, None)  # a new version gets its chance
        except ObjectError as err:
            fallback = _isolating_only(obj, namespace, name)
            self._report(key, f"cannot enforce this policy: {err}; {_what_happens(fallback)}")
            if fallback is None:
                return key if key in self.engine.policies else None
            policy = fallback
            self.engine.quarantine(key, str(err))
        self.engine.upsert_policy(policy)
        return key

    def _replace_pods(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            seen = set()
            for obj in items:
                pod = self._parse_pod(obj)
                if pod is not None:
                    seen.add(pod.key)
                    self._take_pod(pod)
            for key in set(self._api_pods) - seen:
                self._api_pods.pop(key, None)
                self.engine.delete_pod(key)
        self._changed()

    def _pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                meta = obj.get("metadata") or {}
                key = f"{meta.get('namespace')}/{meta.get('name')}"
                self._api_pods.pop(key, None)
                self.engine.delete_pod(key)
            else:
                pod = self._parse_pod(obj)
                if pod is not None:
                    self._take_pod(pod)
        self._changed()

    def _parse_pod(self, obj: dict[str, Any]) -> PodInfo | None:
        try:
            return PodInfo.parse(obj)
        except ObjectError as err:
            meta = obj.get("metadata") or {}
            log.warning("ignoring Pod %s/%s: %s", meta.get("namespace"), meta.get("name"), err)
            return None

    def _take_pod(self, pod: PodInfo) -> None:
        """Upsert a pod, with the addresses its record gives when it runs on this node (under
        the lock)."""
        self._api_pods[pod.key] = pod
        self.engine.upsert_pod(self._with_record(pod))

    def _with_record(self, pod: PodInfo) -> PodInfo:
        if pod.node != self.node or pod.host_network:
            return pod
        records = [
            r
            for r in self.records.values()
            if (r.namespace, r.name) == (pod.namespace, pod.name) and r.uid in ("", pod.uid)
        ]
        if not records:
            # no ADD of it on this node since the records began: its reported addresses stand,
            # unless another pod's ADD holds one of them now (the address was reused)
            claimed = {ip for r in self.records.values() for ip in r.ips}
            kept = tuple(ip for ip in pod.ips if ip not in claimed)
            return pod if kept == pod.ips else pod.with_ips(kept)
        newest = max(records, key=lambda r: r.mtime)
        return pod.with_ips(newest.ips) if newest.ips != pod.ips else pod

    # --- the plugin's records --------------------------------------------------------------------

    def _watch_records(self) -> None:
        from pycni.agent.netpol.inotify import DirectoryWatch

        with DirectoryWatch(self.state_dir / PODS) as watch:
            while not self.stop.is_set():
                if watch.wait(1.0):
                    self._read_records()

    def _read_records(self) -> None:
        found: dict[str, Record] = {}
        directory = self.state_dir / PODS
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            log.warning("failed to read the plugin's records in %s: %s", directory, err)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            known = self.records.get(entry.name)
            try:
                mtime = entry.stat().st_mtime
                if known is not None and known.mtime == mtime:
                    found[entry.name] = known
                    continue
                doc = json.loads(Path(entry.path).read_text())
                found[entry.name] = Record(
                    entry.name,
                    str(doc["namespace"]),
                    str(doc["name"]),
                    str(doc.get("uid") or ""),
                    tuple(str(ip) for ip in doc.get("ips") or ()),
                    mtime,
                )
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("ignoring the record %s: %s", entry.path, err)
        if found.keys() == self.records.keys() and all(found[k] is self.records[k] for k in found):
            return
        with self.lock:
            self.records = found
            for pod in self._api_pods.values():  # this node's pods: an address may move
                if pod.node == self.node:
                    self.engine.upsert_pod(self._with_record(pod))
        self._changed()

    def recorded_addresses(self) -> set[str]:
        with self.lock:
            return {ip for r in self.records.values() for ip in r.ips}

    # --- events ------------------------------------------------------------------------------

    def _report(self, key: str, message: str) -> None:
        meta = self.policy_objects.get(key) or {}
        version = str(meta.get("resourceVersion") or "")
        if (key, version, message) in self._reported:
            return
        self._reported.add((key, version, message))
        log.warning("NetworkPolicy %s: %s", key, message)
        self.events.post(meta, message)


def _ensure_bridge_filtering() -> None:
    """Pods on one bridge (pycni-bridge, pycni-vxlan) reach each other without routing: only
    br_netfilter's bridge-nf-call-iptables brings their packets to the forward hook where the
    policy is. The bridge plugins turn it on; without br_netfilter it cannot be, and that is
    said loudly here, once, where a person reads the agent's log."""
    from pycni.cni.errors import CniError
    from pycni.datapath import node

    for family in ("iptables", "ip6tables"):
        try:
            present = node.ensure_sysctl(f"net/bridge/bridge-nf-call-{family}", "1", required=False)
        except CniError as err:
            log.error("%s: NetworkPolicy may not see traffic between pods of one bridge", err.msg)
            continue
        if not present:
            log.error(
                "br_netfilter is not loaded (modprobe br_netfilter): traffic between pods on one"
                " bridge (pycni-bridge, pycni-vxlan) bypasses NetworkPolicy"
            )
            return


def _isolating_only(obj: dict[str, Any], namespace: str, name: str) -> Policy | None:
    """A policy that could not be parsed, read for what it isolates only: its pod selector and
    its policy types (when those are readable), with no rule that allows anything."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    try:
        selector = Selector.parse(spec.get("podSelector"), "spec.podSelector")
    except ObjectError:
        return None
    types = spec.get("policyTypes")
    if not isinstance(types, list) or not types:
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    if not all(t in ("Ingress", "Egress") for t in types):
        types = ["Ingress", "Egress"]
    meta = obj.get("metadata") or {}
    none: tuple[Rule, ...] = ()
    return Policy(
        namespace,
        name,
        str(meta.get("uid") or ""),
        str(meta.get("resourceVersion") or ""),
        selector,
        none if "Ingress" in types else None,
        none if "Egress" in types else None,
    )


def _what_happens(fallback: Policy | None) -> str:
    if fallback is None:
        return "its pod selector cannot be read either: the last version that could stays in force"
    directions = [
        d for d, r in (("ingress", fallback.ingress), ("egress", fallback.egress)) if r is not None
    ]
    return f"the pods it selects are isolated for {' and '.join(directions)} and it allows nothing"


class EventRecorder:
    """Posts core/v1 Events in its own thread (an API outage never holds up programming);
    the queue is bounded and an Event that cannot be posted is logged and dropped."""

    def __init__(self, client: kube.Client, node: str, stop: threading.Event) -> None:
        self.client = client
        self.node = node
        self.stop = stop
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=256)

    def start(self) -> None:
        threading.Thread(target=self._run, name="netpol-events", daemon=True).start()

    def post(self, policy_meta: dict[str, Any], message: str) -> None:
        about = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "namespace": str(policy_meta.get("namespace") or "default"),
            "name": str(policy_meta.get("name") or ""),
            "uid": str(policy_meta.get("uid") or ""),
            "resourceVersion": str(policy_meta.get("resourceVersion") or ""),
        }
        event = kube.warning_event(about, REASON, message, self.node)
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            log.warning("dropping an Event (the queue is full): %s", message)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                event = self.queue.get(timeout=1.0)
            except queue.Empty:
                continue
            kube.post_event(self.client, event)
