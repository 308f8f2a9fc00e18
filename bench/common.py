"""What every suite of `python -m bench` shares: the plugins under test, one exec of a plugin
as a runtime makes it, namespaces, statistics, and the shape of a suite's result.

Benchmark path (never a plugin's): it may import anything.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.startup import spawn

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "dist" / "cni" / "bin"
GO_DIR = Path("/usr/lib/cni")
GO_VERSION = "1.0.0"  # the newest cniVersion Debian's Go plugins (1.1.1) speak
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # containerd passes its own; Go's ipMasq execs iptables
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Sizes:
    """How much each suite does. `full` is the issue's; `smoke` proves the command works."""

    pods: int  # pods per node in the per-call and scale suites
    rounds: int  # containers in the host-local suite
    rss_rounds: int  # separate calls that sample peak RSS, per verb and plugin
    concurrent_pods: int
    concurrency: int
    iperf_seconds: int
    iperf_repeats: int  # runs per configuration, interleaved
    portmap_pods: int  # pods with hostPorts added at once
    portmap_rounds: int  # DELs without mappings, per implementation
    portmap_repeats: int  # parallel waves, per implementation (the median is reported)


FULL = Sizes(
    pods=200,
    rounds=100,
    rss_rounds=5,
    concurrent_pods=200,
    concurrency=8,
    iperf_seconds=2,
    iperf_repeats=5,
    portmap_pods=64,
    portmap_rounds=30,
    portmap_repeats=3,
)
SMOKE = Sizes(
    pods=4,
    rounds=4,
    rss_rounds=1,
    concurrent_pods=8,
    concurrency=4,
    iperf_seconds=1,
    iperf_repeats=1,
    portmap_pods=4,
    portmap_rounds=2,
    portmap_repeats=1,
)


@dataclass(frozen=True)
class Context:
    bundle: Path  # the frozen pycni plugins (dist/cni/bin)
    go_dir: Path  # the Go reference plugins
    plots: Path  # where the suites write their PNGs
    sizes: Sizes


@dataclass(frozen=True)
class Target:
    """One of the issue's targets: what it asks, what was measured, whether that meets it
    (None: measured for context only)."""

    what: str
    limit: str
    figure: str
    met: bool | None


@dataclass
class Outcome:
    """What a suite hands the report: markdown, targets, plots, raw numbers; or why it
    measured nothing."""

    title: str
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    not_measured: str | None = None
    samples: int = 0


class CallError(Exception):
    """A plugin call failed: the benchmark stops rather than time errors."""


# --- statistics -----------------------------------------------------------------------


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p90(samples: Sequence[float]) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median over pairs of a/b: what holds on a noisy machine when a and b ran side by
    side, call by call."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "context"}[met]


# --- namespaces and calls -------------------------------------------------------------


@contextmanager
def inside(netns_path: str | None) -> Iterator[None]:
    """This thread in another network namespace (its children are born there), then back."""
    if netns_path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns_path}")
        yield
    finally:
        _libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def netns_add(name: str) -> str:
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return f"/run/netns/{name}"


def netns_del(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=False, stderr=subprocess.DEVNULL)


@dataclass
class Plugin:
    """One side of a comparison: an executable, its config (without prevResult), the node
    namespace its calls run in, and the samples taken. `status_verb` is the verb sent when the
    suite measures STATUS: the Go plugins 1.1.1 have none, so they get VERSION, their
    cheapest call."""

    label: str
    executable: Path
    config: dict[str, Any]
    node: str | None  # the node's netns path, None for the benchmark's own
    state: Path
    status_verb: str = "STATUS"
    status_version: str = "1.1.0"
    ms: dict[str, list[float]] = field(default_factory=dict)
    rss_kib: dict[str, list[int]] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def _stderr(self) -> Path:
        return self.state / f"stderr-{threading.get_ident()}"  # one per thread: concurrency

    def call(self, verb: str, pod: str, pod_netns: str, *, record: str = "time") -> float:
        """One exec of the plugin as a runtime makes it; `record` is "time", "rss" or ""
        (warm-up). Returns the milliseconds from spawn to reap."""
        sent = self.status_verb if verb == "STATUS" else verb
        env = {"CNI_COMMAND": sent, "PATH": PATH}
        config: dict[str, Any] | None = dict(self.config)
        if sent in ("ADD", "CHECK", "DEL"):
            env |= {
                "CNI_CONTAINERID": pod,
                "CNI_NETNS": pod_netns,
                "CNI_IFNAME": "eth0",
                "CNI_PATH": str(self.executable.parent),
            }
            if sent != "ADD":
                assert config is not None
                config["prevResult"] = self.results[pod]
        elif sent == "STATUS":
            env["CNI_PATH"] = str(self.executable.parent)
            assert config is not None
            config["cniVersion"] = self.status_version
        else:
            config = None
        stdin = json.dumps(config).encode() if config is not None else b""
        with inside(self.node):
            ms, status, rss, out, err = spawn(
                self.executable, env, stdin, self._stderr(), rss=record == "rss"
            )
        if status != 0:
            raise CallError(
                f"{self.label} {sent} {pod}: exit {status}: {out.decode(errors='replace')} {err}"
            )
        if sent == "ADD":
            self.results[pod] = json.loads(out)
        if sent == "DEL":
            self.results.pop(pod, None)
        if record == "time":
            self.ms.setdefault(verb, []).append(ms)
        elif record == "rss":
            self.rss_kib.setdefault(verb, []).append(rss)
        return ms


def versions() -> dict[str, str]:
    """Versions worth stating next to the numbers."""
    from importlib.metadata import version

    def dpkg(package: str) -> str:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            check=False,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip() or "unknown"

    head = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "pycni": f"{version('pycni')} (git {head or 'unknown'})",
        "iperf3": dpkg("iperf3"),
    }
