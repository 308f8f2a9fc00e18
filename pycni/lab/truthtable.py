"""Truth tables of pod-to-pod reachability, in the style of Kubernetes' e2e netpol model
(test/e2e/network/netpol: model.go, reachability.go, truthtable.go): pods named
"<namespace>/<pod>", an expected table built from a default and exceptions, the observed table
from real probes, and both printed side by side when they differ.

Probing: every pod runs one `PodAgent` (a Python process inside the pod's namespace, started
through `ip netns exec`, ended by PID) that serves TCP and UDP on the model's ports (each reply
is "ok") and, on request, probes a batch of targets concurrently: TCP is a connect plus one
request and its answer, UDP a datagram resent every 0.2 s until answered. Every probe is
bounded by its timeout; a batch takes about one timeout however many probes it holds, and all
pods probe at once, so a full table (9 pods x 8 peers x 2 ports x 2 protocols) costs about one
timeout. A probe expected to pass that times out is probed again with a longer timeout before
it counts as a failure (a busy machine is slow; it never makes a blocked connection pass).

Operator and test path (the tests), never a plugin's.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("tcp", "udp")
TIMEOUT = 0.6  # a blocked cell costs this; a reached one that is slower is probed again
RETRY_TIMEOUT = 4.0

Cell = tuple[str, str, int, str]  # (from pod, to pod, port, protocol)

_AGENT = r"""
import asyncio, json, socket, sys

PORTS = [int(p) for p in sys.argv[1].split(",")]

class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(b"ok", addr)

async def handle(reader, writer):
    try:
        await asyncio.wait_for(reader.read(16), 5)
        writer.write(b"ok")
        await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()

def bound(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    return s

async def tcp(ip, port, timeout):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except Exception:
        return False
    try:
        writer.write(b"who")
        await writer.drain()
        return await asyncio.wait_for(reader.read(16), timeout) == b"ok"
    except Exception:
        return False
    finally:
        writer.close()

async def udp(ip, port, timeout):
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not got.done():
                got.set_result(data == b"ok")
        def error_received(self, exc):
            pass
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=(ip, port), family=family)
    try:
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            transport.sendto(b"who")
            try:
                return await asyncio.wait_for(asyncio.shield(got), min(0.2, deadline - loop.time()))
            except asyncio.TimeoutError:
                continue
        return False
    finally:
        transport.close()

async def main():
    loop = asyncio.get_running_loop()
    for port in PORTS:
        await asyncio.start_server(handle, sock=bound(socket.SOCK_STREAM, port), backlog=128)
        await loop.create_datagram_endpoint(Echo, sock=bound(socket.SOCK_DGRAM, port))
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        request = json.loads(line)
        timeout = request["timeout"]
        probes = [tcp(ip, p, timeout) if proto == "tcp" else udp(ip, p, timeout)
                  for ip, p, proto in request["targets"]]
        results = await asyncio.gather(*probes)
        print(json.dumps({"id": request["id"], "results": results}), flush=True)

asyncio.run(main())
"""


def python() -> str:
    return os.path.realpath(sys.executable)


class PodAgent:
    """The probe server and prober of one pod: a process in its namespace."""

    def __init__(self, netns: str, ports: Iterable[int] = PORTS) -> None:
        argv = ["ip", "netns", "exec", netns, python(), "-I", "-c", _AGENT,
                ",".join(str(p) for p in ports)]  # fmt: skip
        self.netns = netns
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.stop()
            err = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"the probe agent in {netns} did not start: {err[-500:]}")
        self._next = 0

    def send(self, targets: list[tuple[str, int, str]], timeout: float) -> int:
        assert self.process.stdin is not None
        self._next += 1
        request = {"id": self._next, "targets": targets, "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._next

    def receive(self, request_id: int) -> list[bool]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the probe agent in {self.netns} ended")
        answer = json.loads(line)
        if answer["id"] != request_id:
            raise RuntimeError(f"the probe agent in {self.netns} answered out of turn")
        return [bool(r) for r in answer["results"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def probe(
    agents: Mapping[str, PodAgent],
    cells: list[tuple[str, str, str, int, str]],
    timeout: float = TIMEOUT,
) -> dict[tuple[str, str, int, str], bool]:
    """Probe every cell (from pod, to pod, to address, port, protocol), all pods at once;
    whether each was reached."""
    by_source: dict[str, list[tuple[str, str, str, int, str]]] = {}
    for cell in cells:
        by_source.setdefault(cell[0], []).append(cell)
    pending = {
        src: agents[src].send([(ip, port, proto) for _, _, ip, port, proto in batch], timeout)
        for src, batch in by_source.items()
    }
    results = {}
    for src, request_id in pending.items():
        for cell, reached in zip(by_source[src], agents[src].receive(request_id), strict=True):
            results[(cell[0], cell[1], cell[3], cell[4])] = reached
    return results


@dataclass
class Reachability:
    """The expected table: a default, then exceptions, later ones winning. Patterns are
    fnmatch-style over "<namespace>/<pod>" ("x/*", "*/a"); `port` and `protocol` None match
    every port and protocol."""

    pods: tuple[str, ...]
    default: bool = True
    rules: list[tuple[str, str, int | None, str | None, bool]] = field(default_factory=list)

    def expect(
        self,
        src: str,
        dst: str,
        allowed: bool,
        *,
        port: int | None = None,
        protocol: str | None = None,
    ) -> Reachability:
        self.rules.append((src, dst, port, protocol, allowed))
        return self

    def ingress(self, dst: str, allowed: bool, **where: object) -> Reachability:
        """Everything towards `dst` (from other pods)."""
        return self.expect("*", dst, allowed, **where)  # type: ignore[arg-type]

    def egress(self, src: str, allowed: bool, **where: object) -> Reachability:
        return self.expect(src, "*", allowed, **where)  # type: ignore[arg-type]

    def allowed(self, src: str, dst: str, port: int, protocol: str) -> bool:
        verdict = self.default
        for s, d, p, proto, allowed in self.rules:
            if (
                fnmatch.fnmatchcase(src, s)
                and fnmatch.fnmatchcase(dst, d)
                and p in (None, port)
                and proto in (None, protocol)
            ):
                verdict = allowed
        return verdict

    def table(
        self, ports: Iterable[int] = PORTS, protocols: Iterable[str] = PROTOCOLS
    ) -> dict[Cell, bool]:
        return {
            (src, dst, port, proto): self.allowed(src, dst, port, proto)
            for src in self.pods
            for dst in self.pods
            if src != dst  # loopback is not policy's business (kubernetes#95879)
            for port in ports
            for proto in protocols
        }


def model_pods(
    namespaces: Iterable[str] = NAMESPACES, pods: Iterable[str] = POD_NAMES
) -> tuple[str, ...]:
    return tuple(f"{ns}/{pod}" for ns in namespaces for pod in pods)


def render(
    pods: tuple[str, ...],
    expected: Mapping[Cell, bool],
    observed: Mapping[Cell, bool] | None = None,
    ports: Iterable[int] = PORTS,
    protocols: Iterable[str] = PROTOCOLS,
) -> str:
    """One grid per port and protocol: rows send, columns receive; "." reached, "X" blocked,
    "-" not probed (self); with `observed`, a wrong cell shows the observed verdict in
    brackets."""
    lines = []
    for port in ports:
        for proto in protocols:
            lines.append(f"{port}/{proto}   " + " ".join(f"{p:>5}" for p in pods))
            for src in pods:
                row = []
                for dst in pods:
                    cell = (src, dst, port, proto)
                    if cell not in expected:
                        row.append("    -")
                        continue
                    want = "." if expected[cell] else "X"
                    if (
                        observed is not None
                        and cell in observed
                        and observed[cell] != expected[cell]
                    ):
                        got = "." if observed[cell] else "X"
                        row.append(f"{want}[{got}]".rjust(5))
                    else:
                        row.append(want.rjust(5))
                lines.append(f"{src:>9} " + " ".join(row))
            lines.append("")
    return "\n".join(lines)


def compare(
    pods: tuple[str, ...],
    expected: Mapping[Cell, bool],
    observed: Mapping[Cell, bool],
    ports: Iterable[int] = PORTS,
    protocols: Iterable[str] = PROTOCOLS,
) -> str | None:
    """None when they agree; else both tables and the wrong cells, for a person to read."""
    wrong = sorted(c for c in expected if observed.get(c) != expected[c])
    if not wrong:
        return None
    ports, protocols = list(ports), list(protocols)

    def word(reached: bool | None) -> str:
        return "reached" if reached else "blocked"

    listing = "\n".join(
        f"  {c[0]} -> {c[1]} {c[2]}/{c[3]}: expected {word(expected[c])},"
        f" observed {word(observed.get(c))}"
        for c in wrong
    )
    return (
        f"{len(wrong)} of {len(expected)} cells differ:\n{listing}\n\n"
        f"expected:\n{render(pods, expected, None, ports, protocols)}\n"
        f"observed (expected[observed] where they differ):\n"
        f"{render(pods, expected, observed, ports, protocols)}"
    )


def probe_table(
    agents: Mapping[str, PodAgent],
    address: Callable[[str, str], str],
    expected: Mapping[Cell, bool],
    timeout: float = TIMEOUT,
    retry_timeout: float = RETRY_TIMEOUT,
) -> dict[Cell, bool]:
    """Probe every cell of `expected` (`address(src, dst)`: the address src probes dst at: a
    pod IP, or a Service's ClusterIP); cells expected reached that were not are probed once
    more with `retry_timeout`."""
    cells = [(s, d, address(s, d), port, proto) for s, d, port, proto in expected]
    observed = probe(agents, cells, timeout)
    again = [
        c
        for c in cells
        if expected[(c[0], c[1], c[3], c[4])] and not observed[(c[0], c[1], c[3], c[4])]
    ]
    if again:
        observed.update(probe(agents, again, retry_timeout))
    return observed
