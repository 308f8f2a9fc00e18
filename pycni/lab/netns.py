"""Throwaway network namespaces for tests, the conformance harness and the demo.

Operator and test path. Everything here happens inside namespaces this module creates; nothing
touches the host's own interfaces. Namespaces are named `<prefix>-<pid>-<counter>-<random>` and
live at `/run/netns/<name>` (made by `ip netns add`, so `ip netns` and `CNI_NETNS` paths work as
usual). The creator's pid in the name lets `cleanup_all` recover from a crashed run without
pulling a namespace from under a process that is still using it.

Built on the `ip` command (iproute2), not pyroute2, so it behaves exactly like the commands a
person would type to look at the same namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

NETNS_DIR = Path("/run/netns")
DEFAULT_TIMEOUT = 30.0

_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")  # no '-': it separates the name's fields
_counter = itertools.count(1)


class NetnsError(Exception):
    """An `ip netns` command failed; the message carries its stderr."""


@dataclass(frozen=True)
class Netns:
    """A named network namespace under /run/netns. A context manager that deletes it."""

    name: str

    @property
    def path(self) -> str:
        """The path a runtime passes as CNI_NETNS."""
        return str(NETNS_DIR / self.name)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def delete(self) -> None:
        """Remove the namespace; nothing happens if it is already gone."""
        if not self.exists():
            return
        done = _ip("netns", "delete", self.name, check=False)
        if done.returncode != 0 and self.exists():
            raise NetnsError(f"failed to delete netns '{self.name}': {done.stderr.strip()}")

    def run(
        self,
        command: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` inside the namespace (`ip netns exec`, which also gives it the
        namespace's view of /sys); text output captured. `check` raises CalledProcessError."""
        return subprocess.run(
            [_ip_command(), "netns", "exec", self.name, *command],
            input=input,
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=check,
        )

    def ip(self, *args: str) -> str:
        """`ip <args>` inside the namespace; its stdout."""
        return self.run([_ip_command(), *args]).stdout

    def ip_json(self, *args: str) -> Any:
        """`ip -j <args>` inside the namespace, decoded (`[]` when ip prints nothing)."""
        text = self.ip("-j", *args)
        return json.loads(text) if text.strip() else []

    def link_names(self) -> list[str]:
        return [link["ifname"] for link in self.ip_json("link", "show")]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.delete()


def create(prefix: str = "pycni") -> Netns:
    """Create a new namespace named `<prefix>-<pid>-<counter>-<random>`."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"netns prefix {prefix!r} must be letters, digits, '_' or '.'")
    name = f"{prefix}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(2)}"
    done = _ip("netns", "add", name, check=False)
    if done.returncode != 0:
        raise NetnsError(f"failed to create netns '{name}': {done.stderr.strip()}")
    return Netns(name)


def cleanup_all(prefix: str, *, include_live: bool = False) -> list[str]:
    """Delete the namespaces named `<prefix>-<pid>-...` whose creating process has exited
    (leftovers of a crashed run); with `include_live`, those of running processes too. Names
    that do not follow the pattern are left alone. Returns the names deleted."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"netns prefix {prefix!r} must be letters, digits, '_' or '.'")
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-\d+-[0-9a-f]+$")
    deleted = []
    for name in sorted(os.listdir(NETNS_DIR)) if NETNS_DIR.is_dir() else ():
        match = pattern.match(name)
        if not match:
            continue
        if not include_live and _process_alive(int(match.group(1))):
            continue
        Netns(name).delete()
        deleted.append(name)
    return deleted


def _process_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _ip_command() -> str:
    found = shutil.which("ip")
    if found:
        return found
    for candidate in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise NetnsError("the 'ip' command (iproute2) is not installed")


def _ip(*args: str, check: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_ip_command(), *args], capture_output=True, text=True, timeout=DEFAULT_TIMEOUT, check=check
    )
