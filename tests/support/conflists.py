"""The network most plugin tests run on one node: kubenet's shape, pycni-bridge first; and
the peer settings both overlay plugins (pycni-vxlan, pycni-ipip) refuse."""

from __future__ import annotations

from typing import Any


def kubenet(
    version: str, subnets: list[str], *chained: dict[str, Any], **bridge: Any
) -> dict[str, Any]:
    """A conflist named "kubenet": pycni-bridge on cbr0, the pods' gateway and default route,
    host-local over `subnets` (a range set each), then the `chained` plugins; `bridge` adds to
    or overrides pycni-bridge's settings."""
    plugin: dict[str, Any] = {
        "type": "pycni-bridge",
        "bridge": "cbr0",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipam": {"type": "pycni-host-local", "ranges": [[{"subnet": s}] for s in subnets]},
        **bridge,
    }
    return {"cniVersion": version, "name": "kubenet", "plugins": [plugin, *chained]}


# (change to the overlay plugin, peers file text or None, words the error must contain): what
# both overlay plugins refuse in their peers (pycni.datapath.peers), code 7 naming the field.
BAD_PEERS: list[tuple[dict[str, Any], str | None, list[str]]] = [
    (
        {"peers": [{"name": "x", "nodeIP": "172.18.0.9", "podCIDRs": ["10.244.0.128/25"]}]},
        None,
        ["$.peers[0].podCIDRs[0]", "overlaps"],
    ),
    ({"peers": [{"name": "x", "podCIDRs": []}]}, None, ["$.peers[0].nodeIP"]),
    ({}, '[{"nodeIP": ', ["$.peersFile", "not valid JSON"]),
    ({}, '{"nodeIP": "172.18.0.9"}', ["$.peersFile", "list"]),
    ({}, '[{"nodeIP": "172.18.0.9", "podCIDRs": ["10.300.0.0/24"]}]', ["$.peersFile[0]"]),
]
