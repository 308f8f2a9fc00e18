"""Fixtures shared by the whole suite: the frozen bundle, the reference plugins, namespaces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycni.lab import netns as netns_mod

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "dist" / "cni" / "bin"
REFERENCE = Path("/usr/lib/cni")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# tests/kernel/ needs a kernel with IPIP: it runs inside the kernel lane's guest, where the lane
# sets PYCNI_KERNEL_LANE=guest (and =collect when the host lists its tests), never in the host
# run; tests/test_kernel_lane.py reports each of its tests.
collect_ignore = [] if os.environ.get("PYCNI_KERNEL_LANE") in ("guest", "collect") else ["kernel"]


def unavailable(reason: str) -> None:
    """A test that cannot run says so: skipped (loudly, with the reason) on a developer's
    machine, failed in CI, where everything it needs is installed by .ci/run."""
    if IN_CI:
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def bundle() -> Path:
    """dist/cni/bin, as packaging/build.sh leaves it."""
    if not (BUNDLE / "pycni-host-local").exists():
        unavailable(f"{BUNDLE} has no frozen plugins: run packaging/build.sh first")
    return BUNDLE


@pytest.fixture(scope="session")
def reference() -> Path:
    """The Go reference plugins (Debian containernetworking-plugins)."""
    if not (REFERENCE / "host-local").exists():
        unavailable(f"{REFERENCE}/host-local missing: apt-get install containernetworking-plugins")
    return REFERENCE


@pytest.fixture
def netns() -> Iterator[netns_mod.Netns]:
    """A throwaway network namespace standing in for a pod; removed even if the test fails."""
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    ns = netns_mod.create("pyt")
    try:
        yield ns
    finally:
        ns.delete()
