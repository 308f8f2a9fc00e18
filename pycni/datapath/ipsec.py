"""ESP on a node's tunnel packets: the desired xfrm state for a set of peers, and the reconcile
that makes the kernel's match it (pycni.netlink.xfrm does the talking).

Per peer, in transport mode (the tunnel packets themselves are protected, Weave's approach):
- policy `out` local -> peer for the tunnel's packets (VXLAN: UDP to the VXLAN port; IPIP: IP
  protocol 4) through an ESP SA, and policy `in` peer -> local for the same that lets in only
  what came through one: clear tunnel packets from a peer are dropped;
- two SAs, one per direction, with the keys and SPIs the agent derived for the pair
  (pycni.agent.ipsec_keys). A peer without keys keeps both policies and gets no SA: the kernel
  finds no SA for the `out` policy and drops the packets (no clear-text fallback).

`reconcile` adds what is missing and removes what is stale, only ever touching state marked as
pycni's (pycni.netlink.xfrm's OWNER_REQID / OWNER_PRIORITY). Order: SAs first (an SA no policy
uses is inert), then policies, then stale policies, then stale SAs; so for a listed peer there
is never a moment with an `out` policy missing (clear text out) or an `in` policy missing (clear
text accepted). A rekey is a new SPI: the new SAs go in beside the old ones, the old ones go.

Used by the node agent, not by the plugins; stdlib only all the same (pycni/datapath).
"""

from __future__ import annotations

from pycni.cni.ip import IP
from pycni.cni.record import Record
from pycni.netlink.xfrm import (
    DIR_IN,
    DIR_OUT,
    SecurityAssociation,
    SecurityPolicy,
    Xfrm,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

IPPROTO_IPIP = 4
IPPROTO_UDP = 17
VXLAN_PORT = 4789
KINDS = ("vxlan", "ipip")


class Tunnel(Record):
    """Which tunnel packets are protected: "vxlan" (UDP to `port`) or "ipip" (protocol 4)."""

    __slots__ = ("kind", "port")
    kind: str
    port: int

    def __init__(self, kind: str, port: int = VXLAN_PORT) -> None:
        if kind not in KINDS:
            raise ValueError(f"tunnel kind {kind!r}: expected one of {', '.join(KINDS)}")
        self._init(kind=kind, port=port)

    def selector(self) -> tuple[int, int | None]:
        """(IP protocol, destination port or None) of the tunnel packets."""
        if self.kind == "vxlan":
            return IPPROTO_UDP, self.port
        return IPPROTO_IPIP, None


class PairKeys(Record):
    """The keys of one node pair, seen from this node: `out_*` protects what this node sends
    to the peer, `in_*` what it receives from it (the peer's `out_*`)."""

    __slots__ = ("in_key", "in_spi", "out_key", "out_spi")
    out_spi: int
    out_key: bytes
    in_spi: int
    in_key: bytes

    def __init__(self, *, out_spi: int, out_key: bytes, in_spi: int, in_key: bytes) -> None:
        self._init(out_spi=out_spi, out_key=out_key, in_spi=in_spi, in_key=in_key)

    def __repr__(self) -> str:  # never the keys in a log
        return f"PairKeys(out_spi=0x{self.out_spi:08x}, in_spi=0x{self.in_spi:08x})"


class Peer(Record):
    """A peer node by its underlay address; `keys` None: no key known, no tunnel traffic."""

    __slots__ = ("address", "keys")
    address: IP
    keys: PairKeys | None

    def __init__(self, address: IP, keys: PairKeys | None) -> None:
        self._init(address=address, keys=keys)


class Changes(Record):
    """What one reconcile did, each item described for the log."""

    __slots__ = ("added", "removed")
    added: list[str]
    removed: list[str]

    def __init__(self, added: list[str], removed: list[str]) -> None:
        self._init(added=added, removed=removed)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def desired(
    local: IP, tunnel: Tunnel, peers: Iterable[Peer]
) -> tuple[list[SecurityAssociation], list[SecurityPolicy]]:
    """The SAs and policies `local` should have for `peers`."""
    proto, port = tunnel.selector()
    sas: list[SecurityAssociation] = []
    sps: list[SecurityPolicy] = []
    for peer in peers:
        if peer.address == local:
            continue
        sps.append(
            SecurityPolicy(direction=DIR_OUT, src=local, dst=peer.address, proto=proto, dport=port)
        )
        sps.append(
            SecurityPolicy(direction=DIR_IN, src=peer.address, dst=local, proto=proto, dport=port)
        )
        if peer.keys is not None:
            keys = peer.keys
            sas.append(
                SecurityAssociation(src=local, dst=peer.address, spi=keys.out_spi, key=keys.out_key)
            )
            sas.append(
                SecurityAssociation(src=peer.address, dst=local, spi=keys.in_spi, key=keys.in_key)
            )
    return sas, sps


def reconcile(
    xfrm: Xfrm, local: IP, tunnel: Tunnel, peers: Iterable[Peer], *, prune: bool = True
) -> Changes:
    """Make the kernel's pycni-owned xfrm state exactly `desired(local, tunnel, peers)`.
    Without `prune`, only add (and replace SAs): the state of a peer that left stays until
    its tunnel is gone (the agent prunes after the overlay's reconcile), so no packet to it
    ever leaves in the clear meanwhile."""
    peers = list(peers)
    want_sas, want_sps = desired(local, tunnel, peers)
    # larval SAs (SPI 0, made by the kernel while a policy waits for keys) expire by themselves
    have_sas = [sa for sa in xfrm.sas() if sa.owned and sa.spi != 0]
    have_sps = [sp for sp in xfrm.sps() if sp.owned]
    added: list[str] = []
    removed: list[str] = []
    for sa in want_sas:
        if not any(sa.same(h) for h in have_sas):
            # same SPI and destination, other key: it must go first (the kernel would refuse)
            for stale in [h for h in have_sas if (h.dst, h.spi) == (sa.dst, sa.spi)]:
                xfrm.delete_sa(stale.dst, stale.spi)
                have_sas.remove(stale)
                removed.append(str(stale))
            xfrm.add_sa(sa)
            added.append(str(sa))
    for sp in want_sps:
        if not any(sp.same(h) for h in have_sps):
            xfrm.add_sp(sp, update=True)  # update: the same selector with other settings
            added.append(str(sp))
    if not prune:  # leave the state of the peers not listed
        listed = {peer.address for peer in peers}
        have_sps = [sp for sp in have_sps if _remote(sp.src, sp.dst, local) in listed]
        have_sas = [sa for sa in have_sas if _remote(sa.src, sa.dst, local) in listed]
    wanted_sp_keys = {sp.key for sp in want_sps}
    for sp in have_sps:
        if sp.key not in wanted_sp_keys:
            xfrm.delete_sp(sp)
            removed.append(str(sp))
    for sa in have_sas:
        if not any(sa.same(w) for w in want_sas):
            xfrm.delete_sa(sa.dst, sa.spi)
            removed.append(str(sa))
    return Changes(added, removed)


def _remote(src: IP, dst: IP, local: IP) -> IP:
    return dst if src == local else src


def clear(xfrm: Xfrm) -> int:
    """Remove all of pycni's xfrm state (encryption turned off); how many entries went."""
    return xfrm.flush_owned()
