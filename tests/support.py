"""Helpers the tests share that are not fixtures (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def plugin_table() -> ModuleType:
    """packaging/plugin_table.py, loaded by path (`packaging` is also a PyPI package's name)."""
    spec = importlib.util.spec_from_file_location(
        "plugin_table", REPO / "packaging" / "plugin_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HOLD_FLOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def flock_held(path: Path) -> Iterator[int]:
    """Another process holds flock(2) on `path` (as a stuck plugin would); yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_FLOCK, str(path)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def kernel_has_ipip() -> bool:
    """Whether this kernel creates IPIP devices (in a throwaway namespace)."""
    from pycni.lab import netns as netns_mod

    ns = netns_mod.create("ipipprobe")
    try:
        done = ns.run(
            ["ip", "link", "add", "t0", "type", "ipip", "local", "192.0.2.1"], check=False
        )
        return done.returncode == 0
    finally:
        ns.delete()


def is_address(name: str) -> bool:
    """Whether a file name is an IP address: a lease in host-local's store (beside it lie the
    lock, last_reserved_ip.N and per-container index files)."""
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
