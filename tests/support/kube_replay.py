"""A stand-in Kubernetes API server for the node agent's tests, over HTTPS: Nodes; and, for
NetworkPolicy, Pods, Namespaces, NetworkPolicies (list and watch, cluster-wide) and Events
(created by POST to /api/v1/namespaces/NS/events).

It answers what the agent asks, shaped as kube-apiserver answers it: the Node object as a kind
v1.31 node's (fields as in the API reference and kind's node image: providerID kind://docker/...,
the kubeadm annotations, InternalIP and Hostname addresses), the watch framing and the 410
Status objects as quoted from real servers in kubernetes/kubernetes#25151 (HTTP 200, chunked,
one event per line) and wso2/apk#571 (the ERROR event's Status, reason Expired, code 410). No
live API server was recorded here (there is none on this machine):

- GET /api/v1/nodes: a NodeList (kind, apiVersion, metadata.resourceVersion, items);
- GET /api/v1/nodes?watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=N: a
  chunked stream, one JSON event per line: ADDED / MODIFIED / DELETED with the whole Node,
  BOOKMARK with only kind, apiVersion and metadata.resourceVersion; an RV older than the
  compaction point gets HTTP 410 with a Status body; `expire_watches()` ends open watches with
  an ERROR event holding a Status with code 410, as the watch cache does;
- `outage()` closes the listening socket and every open stream (connection refused, as when
  the API server is down); `restore()` listens again on the same address.

Authentication as the real server does it for a kind node: a client certificate signed by the
cluster CA (the kubelet's kubeconfig), or a bearer token (a service account); anything else is
401 with a Status body. Certificates are made with the openssl CLI in a scratch directory.
"""

from __future__ import annotations

import base64
import copy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from pycni.netlink.namespace import socket_in_netns

HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take over its TLS handshake
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InB5Y25pLXRlc3QifQ.c2VydmljZWFjY291bnQ.c2lnbmF0dXJl"


# --- objects shaped like a kind cluster's ----------------------------------------------------


def kind_node(name: str, ip: str, pod_cidrs: list[str], resource_version: int) -> dict[str, Any]:
    """A Node as `kubectl get node NAME -o json` shows it on kind v1.31 (images trimmed)."""
    control_plane = name.endswith("control-plane")
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    spec: dict[str, Any] = {"providerID": f"kind://docker/kind/{name}"}
    if pod_cidrs:
        spec = {"podCIDR": pod_cidrs[0], "podCIDRs": list(pod_cidrs), **spec}
    if control_plane:
        spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": f"5b3f0c7e-0000-4000-8000-{abs(hash(name)) % 10**12:012d}",
            "resourceVersion": str(resource_version),
            "creationTimestamp": "2026-11-22T06:00:00Z",
            "labels": labels,
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
            "managedFields": [
                {
                    "manager": "kubelet",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-11-22T06:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}},
                }
            ],
        },
        "spec": spec,
        "status": {
            "capacity": {
                "cpu": "2",
                "ephemeral-storage": "61202244Ki",
                "hugepages-2Mi": "0",
                "memory": "8131008Ki",
                "pods": "110",
            },
            "allocatable": {
                "cpu": "2",
                "ephemeral-storage": "61202244Ki",
                "hugepages-2Mi": "0",
                "memory": "8131008Ki",
                "pods": "110",
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "lastHeartbeatTime": "2026-11-22T06:01:00Z",
                    "lastTransitionTime": "2026-11-22T06:00:00Z",
                    "reason": "KubeletNotReady",
                    "message": "container runtime network not ready: NetworkReady=false"
                    " reason:NetworkPluginNotReady message:Network plugin returns error:"
                    " cni plugin not initialized",
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "0c5d6f2b6a7e4d1c9b8a7f6e5d4c3b2a",
                "systemUUID": "0c5d6f2b-6a7e-4d1c-9b8a-7f6e5d4c3b2a",
                "bootID": "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9",
                "kernelVersion": "6.18.0",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.18",
                "kubeletVersion": "v1.31.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, as the API server sends errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


# --- certificates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "kubelet.crt"

    @property
    def client_key(self) -> Path:
        return self.dir / "kubelet.key"

    @classmethod
    def create(cls, directory: Path, server_ips: list[str]) -> Pki:
        """A cluster CA, an API server certificate for `server_ips` and a kubelet client
        certificate (CN system:node:..., O system:nodes, as kubeadm issues it)."""
        directory.mkdir(parents=True, exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
                "-subj", "/CN=kubernetes")  # fmt: skip
        sans = ",".join([*(f"IP:{ip}" for ip in server_ips), "DNS:kind-control-plane"])
        (directory / "server.ext").write_text(f"subjectAltName={sans}\n")
        (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subject, ext in (
            ("apiserver", "/CN=kube-apiserver", "server.ext"),
            ("kubelet", "/O=system:nodes/CN=system:node:kind-worker", "client.ext"),
        ):
            openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                    "-subj", subject)  # fmt: skip
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                    "-extfile", ext)  # fmt: skip
        return cls(directory)

    def kubeconfig(self, server: str, *, inline: bool) -> str:
        """A kubeconfig like a kind node's /etc/kubernetes/kubelet.conf: inline data, or as
        kubeadm leaves it after the kubelet's TLS bootstrap: the CA inline, and certificate
        and key both named by one file holding the two (kubelet-client-current.pem)."""

        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        if inline:
            cluster = f"certificate-authority-data: {b64(self.ca)}"
            user = (
                f"client-certificate-data: {b64(self.client_cert)}\n"
                f"    client-key-data: {b64(self.client_key)}"
            )
        else:
            current = self.dir / "kubelet-client-current.pem"
            current.write_bytes(self.client_cert.read_bytes() + self.client_key.read_bytes())
            cluster = f"certificate-authority-data: {b64(self.ca)}"
            user = f"client-certificate: {current}\n    client-key: {current}"
        return f"""apiVersion: v1
clusters:
- cluster:
    {cluster}
    server: {server}
  name: kind
contexts:
- context:
    cluster: kind
    user: system:node:kind-worker
  name: system:node:kind-worker@kind
current-context: system:node:kind-worker@kind
kind: Config
preferences: {{}}
users:
- name: system:node:kind-worker
  user:
    {user}
"""


# --- the server --------------------------------------------------------------------------


@dataclass
class _Event:
    resource_version: int
    type: str
    obj: dict[str, Any]
    resource: str = "nodes"


# collection path -> (resource, kind, apiVersion, namespaced)
COLLECTIONS = {
    "/api/v1/nodes": ("nodes", "Node", "v1", False),
    "/api/v1/pods": ("pods", "Pod", "v1", True),
    "/api/v1/namespaces": ("namespaces", "Namespace", "v1", False),
    "/apis/networking.k8s.io/v1/networkpolicies": (
        "networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
        True,
    ),
}
KINDS = {resource: (kind, version) for resource, kind, version, _ in COLLECTIONS.values()}


def object_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 in place: objects merge, null deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApiServer:
    """Nodes, a history of changes, watches; thread-safe. Start with `start()`, end with
        `close()`. `make_socket` creates the listening socket (e.g. inside a namespace), bound to
    `host`."""

    def __init__(
        self,
        pki: Pki,
        make_socket: Callable[[], socket.socket],
        host: str,
        *,
        bookmark_interval: float = 1.0,
    ) -> None:
        self.pki = pki
        self.host = host
        self.make_socket = make_socket
        self.bookmark_interval = bookmark_interval
        self.objects: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in KINDS}
        self.nodes = self.objects["nodes"]
        self.events: list[dict[str, Any]] = []  # Events POSTed, in order
        self.patches: list[tuple[str, dict[str, Any]]] = []  # (node, merge patch), in order
        self.history: list[_Event] = []
        self.version = 1000
        self.compacted = 0  # watches from an RV below this get 410
        self.changed = threading.Condition()
        self.requests: list[str] = []  # "LIST" or "WATCH rv", in order
        self.generation = 0  # bumped to end every open watch
        self.expire_open_watches = False
        self.up = False  # False during an outage: a stream still open then ends at once
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    # --- the cluster ---------------------------------------------------------------------

    def put_node(self, name: str, ip: str, pod_cidrs: list[str]) -> None:
        with self.changed:
            self.version += 1
            kind = "MODIFIED" if name in self.nodes else "ADDED"
            self.nodes[name] = kind_node(name, ip, pod_cidrs, self.version)
            self.history.append(_Event(self.version, kind, copy.deepcopy(self.nodes[name])))
            self.changed.notify_all()

    def delete_node(self, name: str) -> None:
        with self.changed:
            self.version += 1
            obj = self.nodes.pop(name)
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.history.append(_Event(self.version, "DELETED", obj))
            self.changed.notify_all()

    # --- any resource ------------------------------------------------------------------

    def put(self, resource: str, obj: dict[str, Any]) -> int:
        """Create or replace an object (a deep copy is kept); the new resourceVersion."""
        with self.changed:
            self.version += 1
            kind, api_version = KINDS[resource]
            obj = copy.deepcopy(obj)
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", api_version)
            meta = obj.setdefault("metadata", {})
            key = object_key(obj)
            old = self.objects[resource].get(key)
            meta.setdefault(
                "uid",
                (old or {}).get("metadata", {}).get("uid")
                or f"0000{self.version:08d}-0000-4000-8000-{abs(hash(key)) % 10**12:012d}",
            )
            meta["resourceVersion"] = str(self.version)
            self.objects[resource][key] = obj
            event = "MODIFIED" if old is not None else "ADDED"
            self.history.append(_Event(self.version, event, copy.deepcopy(obj), resource))
            self.changed.notify_all()
            return self.version

    def delete(self, resource: str, key: str) -> int:
        """Delete an object by "namespace/name" (or "name"); the new resourceVersion."""
        with self.changed:
            self.version += 1
            obj = self.objects[resource].pop(key)
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.history.append(_Event(self.version, "DELETED", obj, resource))
            self.changed.notify_all()
            return self.version

    def get(self, resource: str, key: str) -> dict[str, Any] | None:
        with self.changed:
            found = self.objects[resource].get(key)
            return copy.deepcopy(found) if found is not None else None

    def expire_watches(self) -> None:
        """Compact the history: open watches end with ERROR 410, old RVs get HTTP 410."""
        with self.changed:
            self.compacted = self.version  # a watch from the current RV is still fine
            self.history.clear()
            self.generation += 1
            self.expire_open_watches = True
            self.changed.notify_all()

    # --- serving -----------------------------------------------------------------------

    def start(self) -> None:
        sock = self.make_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0 if self.address is None else self.address[1]))
        sock.listen(16)
        self.address = sock.getsockname()[:2]
        with self.changed:
            self.up = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.pki.ca)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate, or a bearer token
        server = ThreadingHTTPServer(("", 0), _handler(self), bind_and_activate=False)
        server.socket.close()
        # The TLS handshake happens in each connection's own thread (Handler.setup), not in
        # accept() on the serving thread: there one client slow to say hello would hold up
        # every other one, which no real API server does.
        server.socket = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()

    def outage(self) -> None:
        """Stop listening and cut every open stream: clients see connection refused."""
        with self.changed:
            self.up = False
            self.generation += 1
            self.expire_open_watches = False
            self.changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.outage()

    def port(self) -> int:
        assert self.address is not None
        return self.address[1]

    def kubeconfig(self, *, inline: bool = True) -> str:
        """A kubelet-style kubeconfig for this server (started): its address, the cluster CA,
        a client certificate (see Pki.kubeconfig)."""
        return self.pki.kubeconfig(f"https://{self.host}:{self.port()}", inline=inline)


def in_netns(pki: Pki, netns: str, host: str, *, bookmark_interval: float = 1.0) -> FakeApiServer:
    """A server (not started) whose listening socket is made inside the network namespace at
    `netns` (an emulated cluster's underlay, a node's namespace) and bound to `host` there."""

    def make_socket() -> socket.socket:
        # socket_in_netns hands back what the factory made: a socket.socket
        return cast(socket.socket, socket_in_netns(netns, lambda: socket.socket(socket.AF_INET)))

    return FakeApiServer(pki, make_socket, host, bookmark_interval=bookmark_interval)


def _handler(api: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def setup(self) -> None:
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
            super().setup()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if not self._authenticated():
                self._send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
                return
            if url.path not in COLLECTIONS:
                self._send_json(
                    404, status_object(404, "NotFound", "the server could not find the resource")
                )
                return
            resource = COLLECTIONS[url.path][0]
            if query.get("watch") in ("1", "true"):
                self._watch(query, resource)
            else:
                self._list(resource)

        def do_POST(self) -> None:
            request = self._read_authenticated()
            if request is None:
                return
            parts, body = request
            if len(parts) != 5 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "events":
                self._send_json(405, status_object(405, "MethodNotAllowed", "not here"))
                return
            try:
                event = json.loads(body)
            except ValueError:
                self._send_json(400, status_object(400, "BadRequest", "not JSON"))
                return
            with api.changed:
                api.version += 1
                meta = event.setdefault("metadata", {})
                meta["name"] = meta.get("name") or f"{meta.get('generateName', 'e.')}{api.version}"
                meta["namespace"] = parts[3]
                meta["resourceVersion"] = str(api.version)
                api.events.append(event)
            self._send_json(201, event)

        def do_PATCH(self) -> None:
            """A JSON merge patch (RFC 7386) of one Node: what the agent sends for its IPsec
            annotations; a MODIFIED event follows, as from a real API server."""
            request = self._read_authenticated()
            if request is None:
                return
            parts, body = request
            if len(parts) != 4 or parts[:3] != ["api", "v1", "nodes"]:
                self._send_json(405, status_object(405, "MethodNotAllowed", "not here"))
                return
            if self.headers.get("Content-Type") != "application/merge-patch+json":
                self._send_json(415, status_object(415, "UnsupportedMediaType", "merge patch"))
                return
            try:
                patch = json.loads(body)
            except ValueError:
                self._send_json(400, status_object(400, "BadRequest", "not JSON"))
                return
            with api.changed:
                node = api.nodes.get(parts[3])
                if node is None:
                    self._send_json(404, status_object(404, "NotFound", f"node {parts[3]}"))
                    return
                merge_patch(node, patch)
                api.version += 1
                node["metadata"]["resourceVersion"] = str(api.version)
                api.patches.append((parts[3], copy.deepcopy(patch)))
                api.history.append(_Event(api.version, "MODIFIED", copy.deepcopy(node)))
                api.changed.notify_all()
                answer = copy.deepcopy(node)
            self._send_json(200, answer)

        def _read_authenticated(self) -> tuple[list[str], bytes] | None:
            """The path's segments and the body of a request that sends one (read whatever
            the answer, so the connection stays usable); None once a 401 is sent."""
            parts = urlsplit(self.path).path.strip("/").split("/")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._authenticated():
                self._send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
                return None
            return parts, body

        def _authenticated(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                return True
            cert = self.connection.getpeercert()
            return bool(cert)

        def _list(self, resource: str) -> None:
            kind, api_version = KINDS[resource]
            with api.changed:
                api.requests.append("LIST" if resource == "nodes" else f"LIST {resource}")
                body = {
                    "kind": f"{kind}List",
                    "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(api.version)},
                    "items": [copy.deepcopy(n) for n in api.objects[resource].values()],
                }
            self._send_json(200, body)

        def _watch(self, query: dict[str, str], resource: str) -> None:
            since = int(query.get("resourceVersion") or 0)
            deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
            bookmarks = query.get("allowWatchBookmarks") == "true"
            with api.changed:
                api.requests.append(
                    f"WATCH {since}" if resource == "nodes" else f"WATCH {resource} {since}"
                )
                generation = api.generation
                if since < api.compacted:
                    message = f"too old resource version: {since} ({api.compacted})"
                    gone = status_object(410, "Expired", message)
                    expired = True
                else:
                    expired = False
            if expired:
                self._send_json(410, gone)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = since
            last_bookmark = time.monotonic()
            try:
                while time.monotonic() < deadline:
                    with api.changed:
                        if api.generation != generation or not api.up:
                            if api.expire_open_watches:
                                message = f"too old resource version: {since} ({api.compacted})"
                                error = status_object(410, "Expired", message)
                                self._chunk({"type": "ERROR", "object": error})
                            break
                        events = [
                            e
                            for e in api.history
                            if e.resource_version > sent and e.resource == resource
                        ]
                        if not events:
                            api.changed.wait(0.2)
                            events = [
                                e
                                for e in api.history
                                if e.resource_version > sent and e.resource == resource
                            ]
                        current = api.version
                    for event in events:
                        self._chunk({"type": event.type, "object": event.obj})
                        sent = event.resource_version
                    now = time.monotonic()
                    if bookmarks and now - last_bookmark >= api.bookmark_interval:
                        sent = max(sent, current)
                        self._chunk(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": KINDS[resource][0],
                                    "apiVersion": KINDS[resource][1],
                                    "metadata": {"resourceVersion": str(sent)},
                                },
                            }
                        )
                        last_bookmark = now
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client went away
            self.close_connection = True

        def _chunk(self, event: dict[str, Any]) -> None:
            data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _send_json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
