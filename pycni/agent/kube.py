"""A thin Kubernetes API client for the node agent: list and watch any resource (Nodes for the
overlay; NetworkPolicies, Pods and Namespaces for policy), create an Event, merge-patch this
node's annotations (its IPsec key, pycni.agent.ipsec_keys). Nothing else.

Why not a maintained client (`kubernetes`, `lightkube`, `kr8s`)? What the agent needs is a
reflector: list, watch from the list's resourceVersion with bookmarks, list again on 410, back
off on anything else, keep the last good state meanwhile. None of those clients does that for
the caller (kubernetes-client/python documents that a 410 is yours to recover from by listing
again; kr8s#476 and airflow#21087 are users finding out), so the loop below would be written
anyway; what a client would add is typed models (an object per pod: the agent holds every pod
of the cluster, and its RSS is budgeted at 5,000 pods) and a dependency tree (urllib3,
requests, google-auth, websocket-client; or httpx, anyio) frozen into the agent. The client
here is http.client over ssl, tested against a stand-in API server shaped after real
responses (tests: kube_replay).

Credentials come from a kubeconfig (a kind node has the kubelet's, /etc/kubernetes/kubelet.conf:
a client certificate and key as files or inline data, the cluster CA) or from the pod's service
account (token, CA, KUBERNETES_SERVICE_HOST/PORT). Requests go through http.client over ssl;
the watch is read as the API server streams it: one JSON event per line of a chunked response.

Errors the agent acts on:
- `Gone`: the resourceVersion is too old (HTTP 410, or a watch ERROR event with code 410):
  list again;
- `Unreachable`: anything else that keeps us from the API server (refused, reset, timeout,
  TLS failure, an HTTP error status): retry later with backoff, keep what we have.

Long-lived path (the agent), never a plugin's: it imports ssl, http.client and yaml freely.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KIND_KUBELET_CONF = Path("/etc/kubernetes/kubelet.conf")
NODES_PATH = "/api/v1/nodes"
EVENT_MESSAGE_LIMIT = 1024  # characters of an Event's message kept; the rest is cut

log = logging.getLogger("pycni.agent")


class ApiError(Exception):
    """The API server could not be used for this request."""


class Unreachable(ApiError):
    """Connection refused, reset or timed out, a TLS failure, or an HTTP error status."""


class Gone(ApiError):
    """410: the resourceVersion asked for is no longer available; list again."""


class ConfigProblem(ApiError):
    """The kubeconfig or service account cannot be used (missing keys, unreadable files)."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str  # https://host:port
    ca_pem: str | None = None  # None: the system's trust store
    insecure: bool = False  # insecure-skip-tls-verify
    token_file: Path | None = None  # re-read on each request (projected tokens rotate)
    token: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None


def in_cluster(
    env: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> Credentials:
    """The pod's service account, as client-go's rest.InClusterConfig finds it."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ConfigProblem(
            "not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset"
        )
    token_file = account_dir / "token"
    if not token_file.exists():
        raise ConfigProblem(f"no service account token at {token_file}")
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        server=f"https://{host}:{port}",
        ca_pem=_read(account_dir / "ca.crt"),
        token_file=token_file,
    )


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """The cluster and user of `context` (default: current-context) in a kubeconfig. Relative
    file paths in it are relative to the kubeconfig's directory, as kubectl reads them."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigProblem(f"failed to read kubeconfig '{path}': {err}") from None
    if not isinstance(doc, dict):
        raise ConfigProblem(f"kubeconfig '{path}' is not a YAML mapping")
    name = context or doc.get("current-context")
    ctx = _named(doc, "contexts", "context", name, path)
    cluster = _named(doc, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(doc, "users", "user", ctx.get("user"), path)
    base = path.parent
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigProblem(f"kubeconfig '{path}': cluster '{ctx.get('cluster')}' has no server")
    token_file = user.get("tokenFile")
    return Credentials(
        server=server.rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=user.get("token"),
        token_file=base / token_file if token_file else None,
        cert_pem=_data_or_file(user, "client-certificate", base),
        key_pem=_data_or_file(user, "client-key", base),
    )


def _named(doc: dict[str, Any], section: str, key: str, name: object, path: Path) -> Any:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            if isinstance(value, dict):
                return value
    raise ConfigProblem(f"kubeconfig '{path}' has no {key} named {name!r}")


def _data_or_file(section: dict[str, Any], key: str, base: Path) -> str | None:
    """`<key>-data` (base64 PEM) or `<key>` (a file), as kubectl reads them."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data).decode()
        except ValueError as err:
            raise ConfigProblem(f"kubeconfig {key}-data is not base64 PEM: {err}") from None
    file = section.get(key)
    return _read(base / file) if file else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ConfigProblem(f"failed to read '{path}': {err.strerror}") from None


class Client:
    """Requests to one API server. `timeout` bounds connecting and each read."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        url = urlsplit(credentials.server)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise ConfigProblem(f"unusable API server address {credentials.server!r}")
        self._scheme, self._host = url.scheme, url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._context = _tls_context(credentials) if url.scheme == "https" else None
        self._open: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False

    # --- the Node calls of the overlay's agent -------------------------------------------

    def list_nodes(self) -> tuple[list[dict[str, Any]], str]:
        """Every Node, and the list's resourceVersion to watch from."""
        return self.list(NODES_PATH)

    def watch_nodes(
        self, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[dict[str, Any]]:
        return self.watch(NODES_PATH, resource_version, timeout_seconds)

    # --- any resource --------------------------------------------------------------------

    def list(self, path: str) -> tuple[list[dict[str, Any]], str]:
        """Every object of a collection (e.g. /api/v1/pods), and the list's resourceVersion to
        watch from."""
        body = self._request("GET", path, {}, self.timeout)
        what = path.rsplit("/", 1)[-1]
        try:
            doc = json.loads(body.read())
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise Unreachable(f"failed to read the {what} list: {_reason(err)}") from None
        finally:
            self._close()
        items = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise Unreachable(f"the {what} list has no items")
        return items, str(doc.get("metadata", {}).get("resourceVersion", ""))

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """POST an object to a collection (e.g. an Event to /api/v1/namespaces/NS/events);
        the object the server stored."""
        body = self._request("POST", path, {}, self.timeout, json.dumps(obj).encode())
        try:
            created = json.loads(body.read())
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise Unreachable(f"failed to read the answer to POST {path}: {_reason(err)}") from None
        finally:
            self._close()
        return created if isinstance(created, dict) else {}

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of one object (e.g. a Node's annotations at
        /api/v1/nodes/NAME); the object as the server stored it."""
        body = self._request(
            "PATCH",
            path,
            {},
            self.timeout,
            json.dumps(patch).encode(),
            content_type="application/merge-patch+json",
        )
        try:
            patched = json.loads(body.read())
        except (OSError, ValueError, http.client.HTTPException) as err:
            raise Unreachable(
                f"failed to read the answer to PATCH {path}: {_reason(err)}"
            ) from None
        finally:
            self._close()
        return patched if isinstance(patched, dict) else {}

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int = 300
    ) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) of a collection from `resource_version` until the
        server ends the watch (after about `timeout_seconds`). BOOKMARK events are passed on
        (they carry the resourceVersion to resume from); an ERROR event with code 410 raises
        Gone."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        # no event for a while is normal (bookmarks come about once a minute); a silence
        # longer than the server's own timeout means the connection is dead
        body = self._request("GET", path, query, timeout_seconds + self.timeout)
        try:
            while True:
                try:
                    line = body.readline()
                except (OSError, http.client.HTTPException) as err:
                    raise Unreachable(f"the watch broke off: {_reason(err)}") from None
                if not line:
                    return
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise Unreachable(
                        f"the watch sent a line that is not JSON: {line[:80]!r}"
                    ) from None
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise Gone(status.get("message") or "resourceVersion expired")
                    raise Unreachable(f"the watch ended with an error: {status.get('message')}")
                yield event
        finally:
            self._close()

    def abort(self) -> None:
        """Break a request or watch blocked in another thread (its reader sees the connection
        end); every later request fails at once. For shutting down."""
        with self._lock:
            self._aborted = True
            conn = self._open
            if conn is not None and conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # --- plumbing ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        timeout: float,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> http.client.HTTPResponse:
        self._close()
        conn: http.client.HTTPConnection
        if self._context is not None:
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            conn.connect()
        except OSError as err:
            conn.close()
            raise Unreachable(f"{method} {path}: {_reason(err)}") from None
        with self._lock:  # either abort() sees this connection, or we see the abort
            if self._aborted:
                conn.close()
                raise Unreachable("the client was shut down")
            self._open = conn
        headers = {"Accept": "application/json", "User-Agent": "pycni-agent"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            headers["Content-Type"] = content_type
        target = f"{path}?{urlencode(query)}" if query else path
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self._close()
            raise Unreachable(f"{method} {target}: {_reason(err)}") from None
        if response.status == 410:
            message = _status_message(response)
            self._close()
            raise Gone(message or "410 Gone")
        if response.status not in (200, 201):
            message = _status_message(response)
            self._close()
            raise Unreachable(f"{method} {target}: HTTP {response.status}: {message}")
        return response

    def _token(self) -> str | None:
        if self.credentials.token_file is not None:
            try:
                return self.credentials.token_file.read_text().strip()
            except OSError as err:
                raise ConfigProblem(
                    f"failed to read token '{self.credentials.token_file}': {err.strerror}"
                ) from None
        return self.credentials.token

    def _close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


def warning_event(
    involved: Mapping[str, str], reason: str, message: str, host: str
) -> dict[str, Any]:
    """A core/v1 Event of type Warning about the object `involved` refers to (apiVersion, kind,
    name; namespace, uid, resourceVersion where known), reported by the agent on node `host`.
    It lives in the object's namespace; one about a cluster-scoped object (a Node) in
    "default"."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{involved['name']}.",
            "namespace": involved.get("namespace") or "default",
        },
        "involvedObject": dict(involved),
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "type": "Warning",
        "source": {"component": "pycni-agent", "host": host},
        "reportingComponent": "pycni-agent",
        "reportingInstance": host,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post_event(client: Client, event: dict[str, Any]) -> None:
    """POST `event` (see `warning_event`) to its namespace. An Event only tells a person: one
    that cannot be posted is logged and dropped, never raised."""
    namespace = event["metadata"]["namespace"]
    try:
        client.create(f"/api/v1/namespaces/{namespace}/events", event)
    except ApiError as err:
        about = event["involvedObject"]
        name = "/".join(filter(None, (about.get("namespace"), about["name"])))
        log.warning("failed to post an Event on %s %s: %s", about["kind"], name, err)


def _tls_context(credentials: Credentials) -> ssl.SSLContext:
    if credentials.ca_pem is not None and not credentials.insecure:
        context = ssl.create_default_context(cadata=credentials.ca_pem)
    else:
        context = ssl.create_default_context()
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if credentials.cert_pem is not None:
        if credentials.key_pem is None:
            raise ConfigProblem("a client certificate without a client key")
        # ssl loads a key pair only from files: a private directory, gone right after
        with tempfile.TemporaryDirectory(prefix="pycni-agent-") as scratch:
            cert, key = Path(scratch, "client.crt"), Path(scratch, "client.key")
            for file, pem in ((cert, credentials.cert_pem), (key, credentials.key_pem)):
                fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(pem)
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as err:
                raise ConfigProblem(f"unusable client certificate or key: {err}") from None
    return context


def _status_message(response: http.client.HTTPResponse) -> str:
    """The message of a Status object in an error response, or the start of the body."""
    try:
        body = response.read(65536)
    except (OSError, http.client.HTTPException):
        return response.reason
    try:
        status = json.loads(body)
        return str(status.get("message") or response.reason)
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace") or response.reason


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__
