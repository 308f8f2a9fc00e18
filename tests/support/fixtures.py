"""The fixtures the whole suite shares; tests/conftest.py registers them (`pytest_plugins`).

- `bundle`, `reference`, `reference_dir`: what the tests run (the frozen plugins, the Go
  reference plugins), or unavailable() with the command that provides them.
- `netns_factory`, `netns`, `pod_ns`: the one namespace system. Every namespace a fixture makes
  is named `pycnit-<pid>-...` and deleted at teardown, even when the test fails; a session that
  crashed leaves namespaces whose pid is gone, and the next session deletes them.
- `node`: a pycni.lab.testbed.Node (a namespace standing in for a node, with its own state
  directory) running the frozen bundle. `cluster_factory`: emulated clusters (pycni.lab.cluster),
  destroyed at teardown.
- `fake_plugins`: fake CNI plugins in a fresh directory (tests/support/fake_plugins.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.cluster import Cluster
from pycni.lab.testbed import Node
from tests.support import fake_plugins as fake_plugins_mod
from tests.support.ci import unavailable
from tests.support.paths import BUNDLE, REFERENCE

NETNS_PREFIX = "pycnit"  # the fixtures' namespaces; cleanup_all(NETNS_PREFIX) after a crash


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
def reference_dir(reference: Path) -> Path:
    """`reference` (host-local checked there), with bridge and loopback too."""
    for plugin in ("bridge", "loopback"):
        if not (reference / plugin).is_file():
            unavailable(
                f"REFERENCE PLUGIN MISSING: {reference / plugin} not found;"
                " install them with `apt-get install containernetworking-plugins`"
            )
    return reference


@pytest.fixture(scope="session", autouse=True)
def _recover_crashed_namespaces() -> None:
    """Remove namespaces left by earlier test sessions that crashed (their process is gone)."""
    if os.geteuid() == 0:
        netns_mod.cleanup_all(NETNS_PREFIX)


@pytest.fixture
def netns_factory() -> Iterator[Callable[[], netns_mod.Netns]]:
    """Creates namespaces on demand; every one is deleted at teardown, even on failure."""
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        unavailable("network namespaces need the 'ip' command (iproute2)")
    created: list[netns_mod.Netns] = []

    def make() -> netns_mod.Netns:
        namespace = netns_mod.create(NETNS_PREFIX)
        created.append(namespace)
        return namespace

    yield make
    for namespace in reversed(created):
        namespace.delete()


@pytest.fixture
def netns(netns_factory: Callable[[], netns_mod.Netns]) -> netns_mod.Netns:
    """A throwaway network namespace: a node where a test needs one, or a pod."""
    return netns_factory()


@pytest.fixture
def pod_ns(netns_factory: Callable[[], netns_mod.Netns]) -> netns_mod.Netns:
    """Another throwaway namespace, standing in for a pod (beside `netns`, the node)."""
    return netns_factory()


@pytest.fixture
def node(bundle: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """A node (pycni.lab.testbed.Node) running the frozen bundle, named after the test module
    (its namespace and state directory say which tests made them); removed even on failure.
    A module that needs more (an uplink, a tool) overrides it: `def node(node: Node)`."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    made = Node.create(name, bundle)
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture
def cluster_factory(bundle: Path) -> Iterator[Callable[..., Cluster]]:
    """`cluster_factory(3, datapath="ipip", ...)`: pycni.lab.cluster.Cluster.create with the
    frozen bundle; every cluster made is destroyed at teardown, even on failure."""
    made: list[Cluster] = []

    def create(node_count: int, **options: Any) -> Cluster:
        made.append(Cluster.create(node_count, bundle, **options))
        return made[-1]

    yield create
    failures = []
    for cluster in reversed(made):  # each one, even when another's teardown fails
        try:
            cluster.destroy()
        except Exception as err:
            failures.append(err)
    if failures:
        raise failures[0]


@pytest.fixture
def fake_plugins(tmp_path: Path) -> Callable[..., fake_plugins_mod.FakePlugins]:
    """`fake_plugins("a", "b")` installs fake plugins named a and b in a fresh directory."""

    def install(*names: str) -> fake_plugins_mod.FakePlugins:
        return fake_plugins_mod.install(
            tmp_path / "fake-bin", tmp_path / "fake-calls.jsonl", *names
        )

    return install
