"""The kernel's xfrm tables as iproute2 shows them (`ip xfrm state|policy`), parsed: the
independent reader pycni.netlink.xfrm's tests compare against. iproute2 6.1 has no JSON output
for xfrm, so the text is read, only the fields the tests compare."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pycni.lab.netns import Netns

_DIRECTIONS = {"in": 0, "out": 1, "fwd": 2}
_PROTOS = {"udp": 17, "ipencap": 4, "tcp": 6, "icmp": 1}


@dataclass(frozen=True)
class IpState:
    src: str
    dst: str
    spi: int
    reqid: int
    mode: str
    aead: str
    key: bytes
    icv_bits: int


@dataclass(frozen=True)
class IpPolicy:
    direction: int
    src: str
    dst: str
    proto: int
    dport: int | None
    priority: int
    tmpl_proto: str | None
    tmpl_reqid: int | None
    tmpl_mode: str | None


def _blocks(text: str) -> list[str]:
    blocks: list[str] = []
    for line in text.splitlines():
        if line and not line[0].isspace():
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return blocks


def ip_states(ns: Netns) -> list[IpState]:
    states = []
    for block in _blocks(ns.ip("xfrm", "state", "list")):
        head = re.match(r"src (\S+) dst (\S+)", block)
        spi = re.search(r"proto esp spi 0x([0-9a-f]+) reqid (\d+) mode (\w+)", block)
        aead = re.search(r"aead (\S+) 0x([0-9a-f]+) (\d+)", block)
        assert head and spi and aead, f"unexpected `ip xfrm state` output:\n{block}"
        states.append(
            IpState(
                src=head[1],
                dst=head[2],
                spi=int(spi[1], 16),
                reqid=int(spi[2]),
                mode=spi[3],
                aead=aead[1],
                key=bytes.fromhex(aead[2]),
                icv_bits=int(aead[3]),
            )
        )
    return states


def ip_policies(ns: Netns) -> list[IpPolicy]:
    policies = []
    for block in _blocks(ns.ip("xfrm", "policy", "list")):
        head = re.match(r"src (\S+)/\d+ dst (\S+)/\d+(?: proto (\w+))?(?: dport (\d+))?", block)
        way = re.search(r"dir (\w+) priority (\d+)", block)
        tmpl = re.search(r"proto (\w+) reqid (\d+) mode (\w+)", block)
        assert head and way, f"unexpected `ip xfrm policy` output:\n{block}"
        if way[1] not in _DIRECTIONS:
            continue
        proto = head[3]
        policies.append(
            IpPolicy(
                direction=_DIRECTIONS[way[1]],
                src=head[1],
                dst=head[2],
                proto=0 if proto is None else _PROTOS.get(proto, -1),
                dport=None if head[4] is None else int(head[4]),
                priority=int(way[2]),
                tmpl_proto=tmpl[1] if tmpl else None,
                tmpl_reqid=int(tmpl[2]) if tmpl else None,
                tmpl_mode=tmpl[3] if tmpl else None,
            )
        )
    return policies
