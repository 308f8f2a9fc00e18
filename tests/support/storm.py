"""A storm of pods on one node, as a busy node sees them: many pods churning at once.

with pod_storm(node, [net_a, net_b], 64, name="storm", workers=16) as storm:
    addresses = storm.churn()  # every pod ADDed, DELeted and ADDed again, in parallel
    ...
    storm.delete_all()         # and every pod DELeted, in parallel
    assert leftovers(node) == []
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pycni.lab import netns as netns_mod
from pycni.lab.testbed import Node

# CI runs the storm and kill tests sized down; PYCNI_STRESS=full runs them at full size.
FULL = os.environ.get("PYCNI_STRESS") == "full"


class Storm:
    """`len(namespaces)` pods of one node; pod n is on networks[n % len(networks)], with the
    container ID <name><n> and interface eth0, added through the node's runtime."""

    def __init__(
        self,
        node: Node,
        networks: list[dict[str, Any]],
        namespaces: list[netns_mod.Netns],
        name: str,
        workers: int,
    ) -> None:
        self.runtime = node.runtime()
        self.networks = networks
        self.namespaces = namespaces
        self.name = name
        self.workers = workers

    def _args(self, n: int) -> tuple[dict[str, Any], str, str, str]:
        return (
            self.networks[n % len(self.networks)],
            f"{self.name}{n}",
            self.namespaces[n].path,
            "eth0",
        )

    def _churn(self, n: int) -> str:
        self.runtime.add(*self._args(n))
        self.runtime.delete(*self._args(n))
        return str(self.runtime.add(*self._args(n))["ips"][0]["address"])

    def churn(self) -> list[str]:
        """Every pod ADDed, DELeted and ADDed again, `workers` at a time; pod n's address."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._churn, range(len(self.namespaces))))

    def delete_all(self) -> None:
        """Every pod DELeted, `workers` at a time."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            list(
                pool.map(lambda n: self.runtime.delete(*self._args(n)), range(len(self.namespaces)))
            )


@contextlib.contextmanager
def pod_storm(
    node: Node, networks: list[dict[str, Any]], pods: int, *, name: str, workers: int
) -> Iterator[Storm]:
    """`pods` pod namespaces (named after `name`) for a Storm; deleted on the way out, even on
    failure."""
    namespaces: list[netns_mod.Netns] = []
    try:
        namespaces.extend(netns_mod.create(name) for _ in range(pods))
        yield Storm(node, networks, namespaces, name, workers)
    finally:
        for namespace in namespaces:
            namespace.delete()
