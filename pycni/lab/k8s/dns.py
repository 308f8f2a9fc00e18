"""A minimal cluster DNS for the lane: Services and pods by name, as CoreDNS answers them.

The e2e Services specs reach a Service by its name before its ClusterIP
(`nc -zv -t -w 2 SERVICE PORT` in e2eservice.TestJig.CheckServiceReachability: the
session-affinity Conformance specs, hairpin, NodePort, the ExternalName type changes), and the
Kubernetes tree has no DNS server; Debian bookworm ships no CoreDNS. This is the part of the
Kubernetes DNS specification (kubernetes/dns, docs/specification.md) that those specs use, in
the standard library, following Services and Endpoints with the agent's reflector:

- `<service>.<ns>.svc.<domain>` A: the ClusterIP; a headless Service (clusterIP None): the
  ready addresses of its Endpoints; ExternalName: a CNAME to the external name (followed when
  it is in the cluster domain);
- `<hostname>.<service>.<ns>.svc.<domain>` A: the endpoint address with that hostname;
- `<a-b-c-d>.<ns>.pod.<domain>` A: a.b.c.d;
- `_<port>._<proto>.<service>.<ns>.svc.<domain>` SRV: the named port, target the Service name;
- a name that exists but has no record of the asked type: NOERROR, no answer (so the AAAA half
  of a resolver's A+AAAA pair does not turn an answer into a failure); anything else NXDOMAIN.
  There is no upstream: names outside the cluster domain do not resolve (the lane has no
  Internet either).

UDP and TCP on one address (port 53), TTL 5 s, answers larger than 512 bytes over UDP are sent
truncated (TC) so the client retries over TCP. Run on the control-plane node as
`python -m pycni.lab.k8s.dns --kubeconfig ADMIN --listen NODE_IP`; the cluster fronts it with the
Service kube-system/kube-dns (CLUSTER_DNS_IP, no selector, Endpoints = the node address:
`service_manifests()`) and gives the kubelets `clusterDNS` / `clusterDomain`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_IP = "10.96.0.10"
TTL = 5
UDP_LIMIT = 512

A, NS, CNAME, SOA, PTR, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 28, 33, 41, 255
IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4

log = logging.getLogger("pycni.lab.k8s.dns")


class FormatError(ValueError):
    """The packet is not a DNS query we can parse."""


@dataclass(frozen=True)
class Question:
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Query:
    ident: int
    flags: int
    question: Question


@dataclass(frozen=True)
class Record:
    name: str
    rtype: int
    data: (
        str | tuple[int, int, int, str]
    )  # A: address; CNAME: name; SRV: (prio, weight, port, target)


def read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at `offset`; the name and the offset after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(packet):
            raise FormatError("name runs past the packet")
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(packet) or jumps > 16:
                raise FormatError("bad compression pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            jumps += 1
            continue
        if length & 0xC0:
            raise FormatError("unknown label type")
        offset += 1
        if length == 0:
            break
        label = packet[offset : offset + length]
        if len(label) != length:
            raise FormatError("label runs past the packet")
        labels.append(label.decode("ascii", errors="replace"))
        offset += length
    return ".".join(labels).lower(), (end if end >= 0 else offset)


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            if len(raw) > 63:
                raise ValueError(f"label too long in {name!r}")
            out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def parse_query(packet: bytes) -> Query:
    if len(packet) < 12:
        raise FormatError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions (one is supported)")
    name, offset = read_name(packet, 12)
    if offset + 4 > len(packet):
        raise FormatError("question runs past the packet")
    qtype, qclass = struct.unpack("!HH", packet[offset : offset + 4])
    return Query(ident, flags, Question(name, qtype, qclass))


def _rdata(record: Record) -> bytes:
    if record.rtype == A:
        return ipaddress.IPv4Address(str(record.data)).packed
    if record.rtype == CNAME:
        return encode_name(str(record.data))
    if record.rtype == SRV:
        assert isinstance(record.data, tuple)
        priority, weight, port, target = record.data
        return struct.pack("!HHH", priority, weight, port) + encode_name(target)
    raise ValueError(f"no encoder for record type {record.rtype}")


def build_response(
    query: Query | None,
    rcode: int,
    answers: Sequence[Record] = (),
    *,
    ident: int = 0,
    limit: int | None = None,
) -> bytes:
    """The response to `query` (header, its question, the answers); truncated (TC, no answers)
    when longer than `limit`."""
    rd = query.flags & 0x0100 if query else 0
    opcode = query.flags & 0x7800 if query else 0
    flags = 0x8000 | opcode | 0x0400 | rd | 0x0080 | (rcode & 0xF)  # QR AA RD RA
    question = b""
    if query is not None:
        q = query.question
        question = encode_name(q.name) + struct.pack("!HH", q.qtype, q.qclass)
        ident = query.ident
    body = bytearray()
    for record in answers:
        rdata = _rdata(record)
        body += encode_name(record.name)
        body += struct.pack("!HHIH", record.rtype, IN, TTL, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", ident, flags, 1 if question else 0, len(answers), 0, 0)
    packet = header + question + bytes(body)
    if limit is not None and len(packet) > limit:
        header = struct.pack("!HHHHHH", ident, flags | 0x0200, 1 if question else 0, 0, 0, 0)
        packet = header + question
    return packet


class Records:
    """What the cluster's Services and Endpoints say, for lookups; fed by two reflectors."""

    def __init__(self, domain: str = CLUSTER_DOMAIN) -> None:
        self.domain = domain.strip(".").lower()
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._endpoints: dict[tuple[str, str], dict[str, Any]] = {}

    # --- feeding ------------------------------------------------------------------------------

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "")).lower(), str(meta.get("name", "")).lower()

    def replace_services(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._services = {self._key(item): item for item in items}

    def replace_endpoints(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._endpoints = {self._key(item): item for item in items}

    def service_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if kind == "DELETED":
                self._services.pop(self._key(obj), None)
            else:
                self._services[self._key(obj)] = obj

    def endpoints_event(self, kind: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if kind == "DELETED":
                self._endpoints.pop(self._key(obj), None)
            else:
                self._endpoints[self._key(obj)] = obj

    # --- answering ----------------------------------------------------------------------------

    def lookup(self, name: str, qtype: int) -> tuple[int, list[Record]]:
        """(rcode, answers) for a question; follows CNAMEs inside the cluster domain."""
        answers: list[Record] = []
        seen: set[str] = set()
        current = name.strip(".").lower()
        while True:
            records = self._records(current)
            if records is None:
                return (NOERROR if answers else NXDOMAIN), answers
            cname = next((record for record in records if record.rtype == CNAME), None)
            if cname is not None and qtype != CNAME:
                answers.append(cname)
                target = str(cname.data).strip(".").lower()
                if target in seen or not target.endswith("." + self.domain):
                    return NOERROR, answers
                seen.add(current)
                current = target
                continue
            answers += [record for record in records if qtype in (record.rtype, ANY)]
            return NOERROR, answers

    def _records(self, name: str) -> list[Record] | None:
        """Every record of `name`, [] for a name that exists without records, None: no name."""
        suffix = "." + self.domain
        if name == self.domain:
            return []
        if not name.endswith(suffix):
            return None
        labels = name[: -len(suffix)].split(".")
        with self._lock:
            if labels[-1] == "svc":
                return self._service_records(name, labels[:-1])
            if labels[-1] == "pod" and len(labels) == 3:
                return self._pod_records(name, labels[0])
        return [] if labels in (["svc"], ["pod"]) else None

    def _pod_records(self, name: str, dashed: str) -> list[Record] | None:
        try:
            address = ipaddress.IPv4Address(dashed.replace("-", "."))
        except ValueError:
            return None
        return [Record(name, A, str(address))]

    def _service_records(self, name: str, labels: list[str]) -> list[Record] | None:
        if len(labels) == 1:  # <ns>.svc: exists when some Service lives in the namespace
            return [] if any(ns == labels[0] for ns, _ in self._services) else None
        if len(labels) == 2:
            service, namespace = labels
            return self._service_answer(name, namespace, service)
        if len(labels) == 3:
            hostname, service, namespace = labels
            return self._endpoint_answer(name, namespace, service, hostname)
        if len(labels) == 4 and labels[0].startswith("_") and labels[1].startswith("_"):
            port, protocol, service, namespace = labels
            return self._srv_answer(name, namespace, service, port[1:], protocol[1:])
        return None

    def _service_answer(self, name: str, namespace: str, service: str) -> list[Record] | None:
        svc = self._services.get((namespace, service))
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            external = str(spec.get("externalName") or "").strip(".")
            return [Record(name, CNAME, external)] if external else []
        cluster_ip = str(spec.get("clusterIP") or "")
        if cluster_ip and cluster_ip != "None":
            return [Record(name, A, cluster_ip)] if _is_ipv4(cluster_ip) else []
        addresses = sorted({ip for ip, _ in self._ready_addresses(namespace, service)})
        return [Record(name, A, ip) for ip in addresses]

    def _endpoint_answer(
        self, name: str, namespace: str, service: str, hostname: str
    ) -> list[Record] | None:
        if (namespace, service) not in self._services:
            return None
        found = [
            Record(name, A, ip)
            for ip, host in self._ready_addresses(namespace, service)
            if host.lower() == hostname
        ]
        return found or None

    def _srv_answer(
        self, name: str, namespace: str, service: str, port: str, protocol: str
    ) -> list[Record] | None:
        svc = self._services.get((namespace, service))
        if svc is None:
            return None
        target = f"{service}.{namespace}.svc.{self.domain}"
        records = [
            Record(name, SRV, (0, 100, int(item.get("port", 0)), target))
            for item in (svc.get("spec") or {}).get("ports") or []
            if str(item.get("name", "")).lower() == port
            and str(item.get("protocol", "TCP")).lower() == protocol
        ]
        return records or None

    def _ready_addresses(self, namespace: str, service: str) -> list[tuple[str, str]]:
        endpoints = self._endpoints.get((namespace, service)) or {}
        found: list[tuple[str, str]] = []
        for subset in endpoints.get("subsets") or []:
            for address in subset.get("addresses") or []:
                ip = str(address.get("ip", ""))
                if _is_ipv4(ip):
                    found.append((ip, str(address.get("hostname", ""))))
        return found


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def answer(records: Records, packet: bytes, *, limit: int | None) -> bytes | None:
    """The response packet to one query packet (None: not worth answering)."""
    try:
        query = parse_query(packet)
    except FormatError as err:
        log.debug("malformed query: %s", err)
        ident = struct.unpack("!H", packet[:2])[0] if len(packet) >= 2 else 0
        return build_response(None, FORMERR, ident=ident) if len(packet) >= 12 else None
    if (query.flags >> 11) & 0xF != 0:
        return build_response(query, NOTIMP)
    question = query.question
    if question.qclass not in (IN, ANY):
        return build_response(query, NXDOMAIN)
    rcode, found = records.lookup(question.name, question.qtype)
    return build_response(query, rcode, found, limit=limit)


class _UDPHandler(socketserver.BaseRequestHandler):
    server: _UDPServer

    def handle(self) -> None:
        data, sock = self.request
        response = answer(self.server.records, data, limit=UDP_LIMIT)
        if response is not None:
            sock.sendto(response, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(10)
        try:
            while True:
                head = _recv_exactly(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                data = _recv_exactly(conn, length)
                if data is None:
                    return
                response = answer(self.server.records, data, limit=None)
                if response is None:
                    return
                conn.sendall(struct.pack("!H", len(response)) + response)
        except OSError:
            return


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], records: Records) -> None:
        self.records = records
        super().__init__(address, _UDPHandler)


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], records: Records) -> None:
        self.records = records
        super().__init__(address, _TCPHandler)


class Server:
    """UDP and TCP listeners on one address, answering from `records`, each in a thread."""

    def __init__(self, records: Records, host: str, port: int = 53) -> None:
        self.udp = _UDPServer((host, port), records)
        # port 0: the TCP listener takes the port the UDP one got
        self.port = self.udp.server_address[1]
        self.tcp = _TCPServer((host, self.port), records)
        self._threads = [
            threading.Thread(target=server.serve_forever, name=name, daemon=True)
            for name, server in (("dns-udp", self.udp), ("dns-tcp", self.tcp))
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.shutdown()
            server.server_close()


def service_manifests(node_ip: str, cluster_ip: str = CLUSTER_DNS_IP) -> list[dict[str, Any]]:
    """kube-system/kube-dns: a selector-less Service at `cluster_ip` and Endpoints pointing at
    the DNS process on `node_ip` (what `kubectl apply -f -` takes, as a List)."""
    ports = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    meta = {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [
                {"name": name, "port": port, "protocol": proto, "targetPort": port}
                for name, port, proto in ports
            ],
        },
    }
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": meta,
        "subsets": [
            {
                "addresses": [{"ip": node_ip}],
                "ports": [
                    {"name": name, "port": port, "protocol": proto} for name, port, proto in ports
                ],
            }
        ],
    }
    return [service, endpoints]


READY_LINE = "cluster DNS for"


def command(kubeconfig: Path, listen: str, *, python: str = sys.executable) -> list[str]:
    """The server's command line (to run inside the control-plane node's namespaces)."""
    return [python, "-m", "pycni.lab.k8s.dns", "--kubeconfig", str(kubeconfig), "--listen", listen]


def start(
    *,
    kubeconfig: Path,
    listen: str,
    log_path: Path,
    prefix: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.Popen[bytes]:
    """Start the server as `prefix + command(...)` (prefix: e.g. nsenter into the node), its
    output appended to `log_path`; return once it listens. The caller records the PID and
    stops it (SIGTERM) in `down`. Raises RuntimeError with the log's tail if it does not come up.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as stream:
        process = subprocess.Popen(
            [*prefix, *command(kubeconfig, listen)],
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[3],  # the checkout: `-m pycni...` imports
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_bytes()[start_offset:].decode(errors="replace")
        if READY_LINE in text:
            return process
        if process.poll() is not None:
            break
        time.sleep(0.1)
    if process.poll() is None:
        process.terminate()
        process.wait(10)
    tail = log_path.read_bytes()[start_offset:].decode(errors="replace")[-2000:]
    raise RuntimeError(
        f"the cluster DNS did not come up on {listen}:53 (exit {process.returncode}):\n{tail}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from pycni.agent import kube
    from pycni.agent.reflector import Reflector

    parser = argparse.ArgumentParser(prog="python -m pycni.lab.k8s.dns", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--listen", default="0.0.0.0", help="address to serve on (UDP and TCP)")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--domain", default=CLUSTER_DOMAIN)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    credentials = kube.from_kubeconfig(args.kubeconfig)
    records = Records(args.domain)
    stop = threading.Event()
    reflectors = [
        Reflector(
            kube.Client(credentials),
            "/api/v1/services",
            records.replace_services,
            records.service_event,
            stop=stop,
        ),
        Reflector(
            kube.Client(credentials),
            "/api/v1/endpoints",
            records.replace_endpoints,
            records.endpoints_event,
            stop=stop,
        ),
    ]
    server = Server(records, args.listen, args.port)
    for reflector in reflectors:
        reflector.start()
    server.start()
    log.info("%s %s on %s:%d (UDP, TCP)", READY_LINE, args.domain, args.listen, server.port)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    for reflector in reflectors:
        reflector.client.abort()
    return 0


if __name__ == "__main__":
    sys.exit(main())
