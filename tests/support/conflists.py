"""The network most plugin tests run on one node: kubenet's shape, pycni-bridge first."""

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
