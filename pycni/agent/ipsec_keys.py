"""The agent's IPsec keying (`pycni agent --encryption ipsec`): no IKE, no shared secret in a file.

- At start the agent makes an X25519 key pair and a random per-boot nonce and publishes the
  public key and the nonce as annotations of its Node (ANNOTATION_PUBLIC_KEY, ANNOTATION_NONCE:
  base64), with a merge PATCH (RBAC: patch nodes).
- For each peer that has published both, one key per direction: HKDF-SHA256 over the X25519
  shared secret, with the cluster PSK (optional, from a Secret's file) as salt and, as info,
  the sender's public key and nonce then the receiver's. The same HKDF output gives the SPI,
  so SPIs are unique per pair and per boot of either side. Both sides compute the same two
  (A's `out` is B's `in`).
- A restarted agent has a new key pair and nonce: every SPI with it changes, so no replay window
  of the old SAs drops the new traffic; the peers rekey when they see its annotations change.
- Rekey before the ESP sequence number wraps (32 bits, no ESN): the kernel stops an SA at its
  hard packet limit (pycni.netlink.xfrm.HARD_PACKET_LIMIT, below 2**32); the agent checks its
  SAs' counters (`wrap_due`) and, past REKEY_PACKETS, takes a new nonce and publishes it: new
  keys and SPIs with every peer, long before the hard limit.
- A peer without a usable published key gets the policies but no SA: its tunnel traffic is
  dropped, never sent in the clear. The agent logs that and posts one Node event per peer until
  the peer has a key.

`cryptography` is imported here only: the agent's dependency, never the plugins'.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pycni.cni.ip import IP
from pycni.datapath import ipsec
from pycni.netlink import xfrm

ANNOTATION_PUBLIC_KEY = "pycni.io/ipsec-public-key"
ANNOTATION_NONCE = "pycni.io/ipsec-nonce"
NONCE_BYTES = 16
PUBLIC_KEY_BYTES = 32
SPI_MIN = 0x100  # 1..255 are reserved (RFC 4303)
REKEY_PACKETS = xfrm.SOFT_PACKET_LIMIT  # a new nonce when an SA has protected this many
EVENT_REASON = "IPsecPeerWithoutKey"
_INFO = b"pycni ipsec v1"
log = logging.getLogger("pycni.agent.ipsec")


@dataclass(frozen=True)
class Published:
    """What a node publishes: its X25519 public key and its per-boot nonce."""

    public_key: bytes
    nonce: bytes

    @classmethod
    def of(cls, annotations: dict[str, Any] | None) -> Published | None:
        """From a Node's annotations; None when absent or not a valid key and nonce."""
        annotations = annotations or {}
        try:
            key = base64.b64decode(str(annotations[ANNOTATION_PUBLIC_KEY]), validate=True)
            nonce = base64.b64decode(str(annotations[ANNOTATION_NONCE]), validate=True)
        except (KeyError, binascii.Error, ValueError):
            return None
        if len(key) != PUBLIC_KEY_BYTES or len(nonce) != NONCE_BYTES:
            return None
        return cls(key, nonce)

    def annotations(self) -> dict[str, str]:
        return {
            ANNOTATION_PUBLIC_KEY: base64.b64encode(self.public_key).decode(),
            ANNOTATION_NONCE: base64.b64encode(self.nonce).decode(),
        }


class NodeKey:
    """This boot's X25519 key pair and nonce. `rotate()` takes a new nonce (new keys and SPIs
    with every peer, the key pair unchanged)."""

    def __init__(self, private: X25519PrivateKey | None = None, nonce: bytes | None = None):
        self._private = private or X25519PrivateKey.generate()
        self.nonce = nonce or os.urandom(NONCE_BYTES)
        self.public_key = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def published(self) -> Published:
        return Published(self.public_key, self.nonce)

    def rotate(self) -> None:
        self.nonce = os.urandom(NONCE_BYTES)

    def shared_secret(self, peer_public_key: bytes) -> bytes:
        """X25519 with the peer's key; ValueError for a key of small order (all-zero result)."""
        return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public_key))


def direction(
    shared: bytes, sender: Published, receiver: Published, psk: bytes
) -> tuple[int, bytes]:
    """(SPI, AEAD key and salt) of the SA that protects sender -> receiver."""
    material = HKDF(
        algorithm=hashes.SHA256(),
        length=xfrm.AEAD_KEY_BYTES + 4,
        salt=psk or None,
        info=_INFO + sender.public_key + sender.nonce + receiver.public_key + receiver.nonce,
    ).derive(shared)
    spi = SPI_MIN + int.from_bytes(material[-4:], "big") % (0x1_0000_0000 - SPI_MIN)
    return spi, material[: xfrm.AEAD_KEY_BYTES]


def pair_keys(own: NodeKey, peer: Published, psk: bytes = b"") -> ipsec.PairKeys:
    """This node's keys with `peer` (ValueError for an unusable peer key)."""
    shared = own.shared_secret(peer.public_key)
    mine = own.published
    out_spi, out_key = direction(shared, mine, peer, psk)
    in_spi, in_key = direction(shared, peer, mine, psk)
    return ipsec.PairKeys(out_spi=out_spi, out_key=out_key, in_spi=in_spi, in_key=in_key)


def tunnel_of(conflist: dict[str, Any]) -> ipsec.Tunnel | None:
    """The tunnel whose packets ESP protects, from the conflist's overlay plugin."""
    for plugin in conflist.get("plugins", [conflist]):
        if plugin.get("type") == "pycni-vxlan":
            return ipsec.Tunnel("vxlan", int(plugin.get("port") or ipsec.VXLAN_PORT))
        if plugin.get("type") == "pycni-ipip":
            return ipsec.Tunnel("ipip")
    return None


@dataclass
class PeerNode:
    """What keying needs of a Node: its name, underlay address and annotations."""

    name: str
    address: str
    annotations: dict[str, Any]


@dataclass
class Keying:
    """The agent's side of IPsec: publishes this node's key, derives the pair keys, reconciles
    the node's xfrm state (`xfrm_factory()`: an Xfrm of the node's namespace). `client` has
    `patch(path, obj)` and `create(path, obj)` (pycni.agent.kube.Client)."""

    client: Any
    node_name: str
    tunnel: ipsec.Tunnel
    psk: bytes = b""
    key: NodeKey = field(default_factory=NodeKey)
    xfrm_factory: Callable[[], xfrm.Xfrm] = xfrm.Xfrm
    published: Published | None = None  # what the API server has, as far as we know
    reported: set[str] = field(default_factory=set)  # peers without key, already in an event
    confirmed: bool = False  # the Node has shown this boot's key since it was published
    rekey_packets: int = REKEY_PACKETS

    def publish(self) -> None:
        """PATCH this node's annotations to the current key and nonce."""
        want = self.key.published
        patch = {"metadata": {"annotations": want.annotations()}}
        self.client.patch(f"/api/v1/nodes/{self.node_name}", patch)
        self.published = want
        log.info("published IPsec key %s (nonce %s)", _short(want.public_key), _short(want.nonce))

    def apply(
        self,
        own_address: str,
        peers: Iterable[PeerNode],
        own_annotations: dict[str, Any] | None = None,
        *,
        prune: bool = True,
    ) -> ipsec.Changes:
        """Publish this boot's key if not done yet (or again, when the Node that showed it
        lost it); bring the xfrm state to `peers` (`prune`: see pycni.datapath.ipsec.reconcile).
        Raises CniError (pycni.netlink) when the kernel refuses the xfrm state."""
        from pycni.agent import kube

        shown = Published.of(own_annotations) if own_annotations is not None else None
        if shown == self.key.published:
            self.confirmed = True
        elif self.confirmed and own_annotations is not None:
            log.warning("this node's IPsec annotations changed under us: publishing again")
            self.confirmed = False
            self.published = None
        if self.published != self.key.published:
            try:
                self.publish()
            except kube.ApiError as err:  # the peers will not have our key yet: retried next time
                log.warning("failed to publish this node's IPsec key: %s", err)
        peers = list(peers)
        wanted = self._peers(peers)
        in_spis = [p.keys.in_spi for p in wanted if p.keys is not None]
        if len(set(in_spis)) != len(in_spis):
            # two peers derived the same SPI towards us (chance 2**-32 per pair): a new nonce
            # of ours changes every SPI towards us
            log.warning("two peers' SPIs towards this node collide: taking a new nonce")
            self.rotate()
            wanted = self._peers(peers)
        with self.xfrm_factory() as table:
            local = IP.parse(own_address)
            changes = ipsec.reconcile(table, local, self.tunnel, wanted, prune=prune)
        for change in changes.added:
            log.info("ipsec: add %s", change)
        for change in changes.removed:
            log.info("ipsec: remove %s", change)
        return changes

    def wrap_due(self) -> bool:
        """Whether one of this node's SAs has protected `rekey_packets` packets."""
        with self.xfrm_factory() as table:
            return any(sa.owned and sa.packets >= self.rekey_packets for sa in table.sas())

    def rotate(self) -> None:
        """A new nonce, published: new keys and SPIs with every peer."""
        from pycni.agent import kube

        self.key.rotate()
        self.confirmed = False
        try:
            self.publish()
        except kube.ApiError as err:
            log.warning("failed to publish this node's new IPsec nonce: %s", err)

    def _peers(self, peers: Iterable[PeerNode]) -> list[ipsec.Peer]:
        wanted = []
        for peer in peers:
            published = Published.of(peer.annotations)
            keys = None
            if published is not None:
                try:
                    keys = pair_keys(self.key, published, self.psk)
                except ValueError:  # a small-order public key: unusable
                    keys = None
            if keys is None:
                self._without_key(peer)
            else:
                self.reported.discard(peer.name)
            wanted.append(ipsec.Peer(IP.parse(peer.address), keys))
        return wanted

    def _without_key(self, peer: PeerNode) -> None:
        if peer.name in self.reported:
            return
        self.reported.add(peer.name)
        message = (
            f"node {peer.name} ({peer.address}) has published no usable IPsec key"
            f" (annotations {ANNOTATION_PUBLIC_KEY}, {ANNOTATION_NONCE}): no tunnel traffic"
            f" between {self.node_name} and it until it does"
        )
        log.warning("%s", message)
        self._event(peer.name, message)

    def _event(self, node: str, message: str) -> None:
        from pycni.agent import kube

        about = {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node}
        kube.post_event(
            self.client, kube.warning_event(about, EVENT_REASON, message, self.node_name)
        )


def _short(data: bytes) -> str:
    return base64.b64encode(data).decode()[:12]
