"""The Kubernetes lane: tests marked `k8s` bring up real clusters (packaging/k8s.sh up).

They run only in the lane (`PYCNI_K8S_LANE=1`, which `.ci/run`'s Kubernetes step sets) because
a cluster costs a minute and the binaries come from `packaging/k8s.sh build`'s cache. Outside
the lane each is skipped with that reason (shown by `-ra`); inside it, a missing cache fails
the test with the build's own message, never a skip.
"""

from __future__ import annotations

import os

import pytest

LANE_ENV = "PYCNI_K8S_LANE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(LANE_ENV) == "1":
        return
    skip = pytest.mark.skip(
        reason=f"Kubernetes lane only: set {LANE_ENV}=1 (needs root and the binaries of "
        "`packaging/k8s.sh build`; each cluster takes about a minute)"
    )
    for item in items:
        if item.get_closest_marker("k8s") is not None:
            item.add_marker(skip)
