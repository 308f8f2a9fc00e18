"""Real packets between namespaces: the Kubernetes network model, checked.

An echo server in each pod namespace answers TCP and UDP on one port with the source address
it saw; a probe from another namespace sends one request and compares that address with its
own. "Reached, and the peer saw my pod IP" is the model's rule: every pod reaches every pod
and every node reaches every pod, without NAT.

Operator and test path (tests, the demo, the conformance harness): it runs the Python
interpreter inside namespaces with `ip netns exec`, nothing on a plugin's call path. Every
server is a process this module started; `stop` ends it by PID. Requests are bounded by a
timeout; nothing loops forever.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from pycni.lab.netns import Netns

PORT = 18080
TIMEOUT = 3.0

# Listens on [::] (dual-stack), TCP and UDP; answers each request with the peer's address.
_SERVER = r"""
import os, select, socket, sys
port = int(sys.argv[1])
socks = []
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    if kind == socket.SOCK_STREAM:
        s.listen(64)
    socks.append(s)
print("ready", flush=True)

def seen(addr):
    host = addr[0]
    return host[7:] if host.startswith("::ffff:") else host

while True:
    for s in select.select(socks, [], [], 60)[0]:
        if s.type == socket.SOCK_STREAM:
            conn, addr = s.accept()
            conn.settimeout(2)
            try:
                conn.recv(64)
                conn.sendall(seen(addr).encode())
            except OSError:
                pass
            conn.close()
        else:
            data, addr = s.recvfrom(64)
            s.sendto(seen(addr).encode(), addr)
"""

_PROBE = r"""
import socket, sys
target, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
family = socket.AF_INET6 if ":" in target else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(family, kind)
s.settimeout(timeout)
try:
    if proto == "tcp":
        s.connect((target, port))
        s.sendall(b"who")
    else:
        s.sendto(b"who", (target, port))
    print(s.recv(64).decode())
except OSError as err:
    print("ERROR " + (err.strerror or type(err).__name__))
"""


@dataclass(frozen=True)
class Server:
    netns: Netns
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@dataclass(frozen=True)
class Probe:
    source: str  # who sent (a name)
    target: str  # the address probed
    proto: str
    seen_as: str  # the source address the server saw, or "ERROR ..."
    expected_source: str | None  # the sender's own address, when NAT must not happen

    @property
    def reached(self) -> bool:
        return not self.seen_as.startswith("ERROR")

    @property
    def unnatted(self) -> bool:
        return self.expected_source is None or self.seen_as == self.expected_source

    @property
    def ok(self) -> bool:
        return self.reached and self.unnatted


def python() -> str:
    """The interpreter by its real path (a venv's symlink may not resolve inside a mount
    namespace)."""
    return os.path.realpath(sys.executable)


def serve(ns: Netns, port: int = PORT) -> Server:
    argv = ["ip", "netns", "exec", ns.name, python(), "-I", "-c", _SERVER, str(port)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    ready = process.stdout.readline().strip()
    if ready != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"echo server in {ns.name} did not start")
    return Server(ns, process)


def probe(
    source: Netns,
    target: str,
    proto: str,
    *,
    port: int = PORT,
    expected_source: str | None = None,
    name: str | None = None,
    timeout: float = TIMEOUT,
) -> Probe:
    argv = [python(), "-I", "-c", _PROBE, target, str(port), proto, str(timeout)]
    done = source.run(argv, check=False, timeout=timeout + 10)
    seen = done.stdout.strip() or f"ERROR {done.stderr.strip()[-100:]}"
    return Probe(name or source.name, target, proto, seen, expected_source)


def matrix(
    sources: Iterable[tuple[str, Netns, str | None]],
    targets: Iterable[tuple[str, str]],
    protos: tuple[str, ...] = ("tcp", "udp"),
) -> list[Probe]:
    """Probe every target from every source. `sources`: (name, namespace, its own address or
    None if its address may legitimately differ); `targets`: (name, address)."""
    results = []
    targets = list(targets)
    for name, ns, own in sources:
        for _target_name, address in targets:
            if own is not None and address == own:
                continue
            for proto in protos:
                results.append(probe(ns, address, proto, expected_source=own, name=name))
    return results


def report(probes: list[Probe]) -> str:
    """A table a person reads at a glance."""
    lines = [f"{'from':<12} {'to':<28} {'proto':<5} result"]
    for p in probes:
        verdict = "ok" if p.ok else ("NAT: seen as " + p.seen_as if p.reached else p.seen_as)
        lines.append(f"{p.source:<12} {p.target:<28} {p.proto:<5} {verdict}")
    failed = sum(not p.ok for p in probes)
    lines.append(f"{len(probes) - failed} of {len(probes)} probes ok")
    return "\n".join(lines)


def as_json(probes: list[Probe]) -> str:
    return json.dumps([p.__dict__ | {"ok": p.ok} for p in probes], indent=2)
