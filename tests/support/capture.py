"""Packets seen on a link, for proofs of encapsulation: tcpdump in a namespace, parsed here.

    with capture(node.ns, "eth0") as seen:
        connectivity.probe(...)
    assert_ipip_encapsulated(seen.packets, pod_addresses)

Works on any kernel (the host's too, e.g. to show that a direct route does not encapsulate);
kernel_has_ipip() says whether the kernel can make IPIP devices at all (the host's cannot),
kernel_has_esp() whether it can install an ESP SA (the host's cannot either).
tcpdump writes a pcap file, every packet as it comes; stopping it (SIGINT, by PID) flushes it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pycni.lab import netns as netns_mod
from pycni.lab.netns import Netns

IPPROTO_IPIP = 4
IPPROTO_ESP = 50
_ETH_P_IP = 0x0800
_LINKTYPE_ETHERNET = 1


@dataclass(frozen=True)
class Packet:
    """An IPv4 packet: its outer addresses and protocol; for IP-in-IP, the inner ones too."""

    src: str
    dst: str
    proto: int
    inner_src: str | None = None
    inner_dst: str | None = None
    inner_proto: int | None = None

    def __str__(self) -> str:
        text = f"{self.src} > {self.dst} proto {self.proto}"
        if self.proto == IPPROTO_IPIP:
            text += f" [{self.inner_src} > {self.inner_dst} proto {self.inner_proto}]"
        return text


@dataclass
class Capture:
    pcap: Path
    packets: list[Packet] = field(default_factory=list)
    raw: bytes = b""  # the whole pcap file, for searches in the payloads

    def summary(self, limit: int = 20) -> str:
        shown = [str(p) for p in self.packets[:limit]]
        more = len(self.packets) - len(shown)
        return "\n".join(shown + ([f"... {more} more"] if more > 0 else [])) or "(no packets)"


@contextlib.contextmanager
def capture(ns: Netns, interface: str, *, timeout: float = 10.0) -> Iterator[Capture]:
    """Capture every IPv4 packet on `interface` of `ns` while the block runs; the packets are
    in `.packets` after it. Raises if tcpdump cannot start."""
    with tempfile.TemporaryDirectory(prefix="pycni-capture-") as tmp:
        result = Capture(Path(tmp) / "underlay.pcap")
        # --immediate-mode: each packet handed over at once (not in blocks a stop would lose);
        # -Z root: Debian's tcpdump otherwise drops to user tcpdump, who cannot write here.
        argv = ["tcpdump", "-i", interface, "-n", "-U", "--immediate-mode", "-Z", "root"]
        argv += ["-w", str(result.pcap), "ip"]
        dump = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_listening(dump, timeout)
            yield result
        finally:
            if dump.poll() is None:
                dump.send_signal(signal.SIGINT)  # tcpdump flushes and exits
            try:
                dump.wait(timeout)
            except subprocess.TimeoutExpired:
                dump.kill()
                dump.wait()
            if dump.stderr is not None:
                dump.stderr.close()
        result.packets = read_pcap(result.pcap)
        result.raw = result.pcap.read_bytes() if result.pcap.exists() else b""


def _wait_listening(dump: subprocess.Popen[str], timeout: float) -> None:
    """tcpdump says "listening on ..." on stderr once the capture is open."""
    assert dump.stderr is not None
    line = dump.stderr.readline()  # bounded: tcpdump prints it or exits (EOF)
    if "listening on" not in line:
        dump.kill()
        dump.wait(timeout)
        rest = dump.stderr.read()
        raise RuntimeError(f"tcpdump did not start: {(line + rest).strip()}")


def read_pcap(path: Path) -> list[Packet]:
    """The IPv4 packets of a pcap file written by tcpdump on an Ethernet-like link."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, only Ethernet (1) is read")
    packets, offset = [], 24
    while offset + 16 <= len(data):
        caplen = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) >= 34 and struct.unpack("!H", frame[12:14])[0] == _ETH_P_IP:
            packets.append(_ipv4(frame[14:]))
    return packets


def _ipv4(header: bytes) -> Packet:
    length = (header[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(header[12:16]), socket.inet_ntoa(header[16:20])
    proto = header[9]
    inner = header[length:]
    if proto == IPPROTO_IPIP and len(inner) >= 20:
        return Packet(
            src,
            dst,
            proto,
            socket.inet_ntoa(inner[12:16]),
            socket.inet_ntoa(inner[16:20]),
            inner[9],
        )
    return Packet(src, dst, proto)


def assert_ipip_encapsulated(packets: list[Packet], pod_addresses: Collection[str]) -> None:
    """The proof that pod traffic crossed this link in IP-in-IP: some IP protocol 4 packets
    carry the pods' addresses inside, and no packet shows a pod address bare (outside)."""
    pods = set(pod_addresses)
    listing = "\n".join(str(p) for p in packets[:20]) or "(no packets)"
    tunnelled = [p for p in packets if p.proto == IPPROTO_IPIP]
    assert tunnelled, f"no IP protocol 4 packet on the underlay; seen:\n{listing}"
    carried = {a for p in tunnelled for a in (p.inner_src, p.inner_dst)} & pods
    assert carried, f"the IPIP packets carry none of the pod addresses {sorted(pods)}:\n{listing}"
    bare = [p for p in packets if p.src in pods or p.dst in pods]
    assert not bare, "pod addresses bare on the underlay:\n" + "\n".join(map(str, bare[:20]))


def assert_not_encapsulated(packets: list[Packet], pod_addresses: Collection[str]) -> None:
    """The opposite proof (direct routes): pod addresses cross the link bare, no IPIP at all."""
    pods = set(pod_addresses)
    listing = "\n".join(str(p) for p in packets[:20]) or "(no packets)"
    tunnelled = [p for p in packets if p.proto == IPPROTO_IPIP]
    assert not tunnelled, f"IP protocol 4 packets on a direct route:\n{listing}"
    bare = [p for p in packets if p.src in pods or p.dst in pods]
    assert bare, f"no packet of the pods {sorted(pods)} crossed this link:\n{listing}"


def assert_only_esp(
    seen: Capture, nodes: Collection[str], hidden: Collection[str], *, minimum: int = 1
) -> None:
    """The proof that traffic between `nodes` crossed this link encrypted: at least `minimum`
    packets between them, every one ESP (IP protocol 50), and none of the `hidden` addresses
    (pods', overlay's) anywhere in the captured bytes, headers or payloads."""
    between = [p for p in seen.packets if p.src in nodes and p.dst in nodes]
    listing = seen.summary()
    assert len(between) >= minimum, f"{len(between)} packets between {sorted(nodes)}:\n{listing}"
    clear = [p for p in between if p.proto != IPPROTO_ESP]
    assert not clear, "packets between the nodes not in ESP:\n" + "\n".join(map(str, clear[:20]))
    bare = [p for p in seen.packets if {p.src, p.dst} & set(hidden)]
    assert not bare, "hidden addresses bare on the link:\n" + "\n".join(map(str, bare[:20]))
    found = [a for a in hidden if socket.inet_aton(a) in seen.raw]
    assert not found, f"the captured bytes contain the addresses {found}"


def kernel_has_esp() -> bool:
    """Whether this kernel installs an ESP SA with pycni's AEAD, as iproute2 asks it to (in a
    throwaway namespace): the oracle the plugins' own probe is checked against."""
    ns = netns_mod.create("espprobe")
    try:
        sa = ["src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi", "0x100"]
        aead = ["aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "128"]
        done = ns.run(["ip", "xfrm", "state", "add", *sa, "mode", "transport", *aead], check=False)
        return done.returncode == 0
    finally:
        ns.delete()


def kernel_has_ipip() -> bool:
    """Whether this kernel creates IPIP devices (in a throwaway namespace)."""
    ns = netns_mod.create("ipipprobe")
    try:
        done = ns.run(
            ["ip", "link", "add", "t0", "type", "ipip", "local", "192.0.2.1"], check=False
        )
        return done.returncode == 0
    finally:
        ns.delete()
