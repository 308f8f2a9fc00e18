"""pycni-bridge + pycni-host-local against the Go bridge + host-local, pod by pod.

    .venv/bin/python bench/bridge.py [--pods 200] [--output FILE]      (as root)

A benchmark, not a test: it prints numbers and never fails on them. For each mode (without and
with ipMasq) it makes two namespaces standing in for two nodes — one for each implementation,
so their bridges and firewall rules never meet — then adds `--pods` pods to each, alternating
pycni and Go call by call (who goes first flips every pod), then CHECKs and DELs them all the
same way. Every call is one exec from inside the node's namespace, as a runtime makes it: a bare
environment, the config on stdin, cniVersion 1.0.0 (the newest the Go plugins 1.1.1 speak).
Reported per verb: median and p90 of each, and the paired ratio (the median over pods of
pycni's time over Go's for the same pod); and for ADD, the median of the last 50 pods over the
first 50 (does ADD slow down as pods accumulate?).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.startup import machine, p90, spawn  # noqa: E402

BUNDLE = REPO / "dist" / "cni" / "bin"
GO_DIR = Path("/usr/lib/cni")
CLONE_NEWNET = 0x40000000
VERBS = ("ADD", "CHECK", "DEL")
TARGETS = {  # (verb, masq) -> the ceiling for the paired ratio
    ("ADD", True): 1.0,
    ("DEL", True): 1.0,
    ("ADD", False): 2.5,
}
_libc = ctypes.CDLL(None, use_errno=True)


class Impl:
    def __init__(
        self,
        label: str,
        bin_dir: Path,
        bridge_type: str,
        ipam_type: str,
        node: str,
        state: Path,
        masq: bool,
    ) -> None:
        self.label, self.bin_dir, self.node, self.state = label, bin_dir, node, state
        self.ms: dict[str, list[float]] = {verb: [] for verb in VERBS}
        self.results: dict[str, dict[str, Any]] = {}
        self.config = {
            "cniVersion": "1.0.0",
            "name": "benchnet",
            "type": bridge_type,
            "bridge": "cbr0" if bridge_type.startswith("pycni") else "cni0",
            "isGateway": True,
            "isDefaultGateway": True,
            "ipMasq": masq,
            "ipam": {
                "type": ipam_type,
                "ranges": [[{"subnet": "10.98.0.0/16"}]],
                "dataDir": str(state / "ipam"),
            },
        }
        self.executable = bin_dir / bridge_type


@contextmanager
def inside(netns_path: str) -> Iterator[None]:
    """This thread in another network namespace (children inherit it), then back."""
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
    return f"/run/netns/{name}"


def netns_del(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], check=False, stderr=subprocess.DEVNULL)


def call(impl: Impl, verb: str, pod: str, pod_path: str) -> None:
    env = {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": pod,
        "CNI_NETNS": pod_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"{impl.bin_dir}",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }  # containerd passes its own; Go iptables needs it
    config = dict(impl.config)
    if verb != "ADD":
        config["prevResult"] = impl.results[pod]
    with inside(f"/run/netns/{impl.node}"):
        ms, status, _, out, err = spawn(
            impl.executable, env, json.dumps(config).encode(), impl.state / "stderr", rss=False
        )
    if status != 0:
        raise RuntimeError(f"{impl.label} {verb} {pod}: exit {status}: {out!r} {err}")
    if verb == "ADD":
        impl.results[pod] = json.loads(out)
    impl.ms[verb].append(ms)


def run_mode(pods: int, masq: bool, tag: str) -> tuple[Impl, Impl]:
    state = Path(tempfile.mkdtemp(prefix=f"pycni-bench-{tag}-"))
    nodes = [f"bnode-{tag}-py", f"bnode-{tag}-go"]
    pod_names: list[str] = []
    try:
        for node in nodes:
            netns_add(node)
            subprocess.run(["ip", "-n", node, "link", "set", "lo", "up"], check=True)
        py = Impl("pycni", BUNDLE, "pycni-bridge", "pycni-host-local", nodes[0], state / "py", masq)
        go = Impl("go", GO_DIR, "bridge", "host-local", nodes[1], state / "go", masq)
        for impl in (py, go):
            impl.state.mkdir()
        for verb in VERBS:
            for n in range(pods):
                pair = (py, go) if n % 2 == 0 else (go, py)
                for impl in pair:
                    pod = f"bp-{tag}-{impl.label}-{n}"
                    if verb == "ADD":
                        netns_add(pod)
                        pod_names.append(pod)
                    call(impl, verb, pod, f"/run/netns/{pod}")
            print(f"  {tag}: {verb} x {pods} pods, both plugins: done", file=sys.stderr, flush=True)
        return py, go
    finally:
        for name in pod_names + nodes:
            netns_del(name)
        subprocess.run(["rm", "-rf", str(state)], check=False)


def table(py: Impl, go: Impl, masq: bool) -> list[str]:
    lines = []
    for verb in VERBS:
        a, b = py.ms[verb], go.ms[verb]
        ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
        target = TARGETS.get((verb, masq))
        verdict = ""
        if target is not None:
            verdict = f" (target ≤ {target:.1f}: {'met' if ratio <= target else 'MISSED'})"
        lines.append(
            f"| {verb} | {'yes' if masq else 'no'} | {statistics.median(a):.1f} | {p90(a):.1f} |"
            f" {statistics.median(b):.1f} | {p90(b):.1f} | {ratio:.2f}x{verdict} |"
        )
    return lines


def flatness(impl: Impl) -> float:
    adds = impl.ms["ADD"]
    return statistics.median(adds[-50:]) / statistics.median(adds[:50])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/bridge.py: run as root (network namespaces)", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows = [
        "| verb | ipMasq | pycni median ms | pycni p90 | Go median ms | Go p90 | paired ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    flat = []
    for masq in (False, True):
        py, go = run_mode(args.pods, masq, "masq" if masq else "plain")
        rows += table(py, go, masq)
        if args.pods >= 100:
            mode = "with" if masq else "without"
            flat.append(
                f"- ADD, median of the last 50 pods over the first 50 ({mode} ipMasq):"
                f" pycni {flatness(py):.2f}, Go {flatness(go):.2f} (target for pycni ≤ 1.2)"
            )
    info = machine()
    text = "\n".join(
        [
            f"# pycni-bridge vs Go bridge (+ host-local): {args.pods} pods a mode, interleaved",
            "",
            *rows,
            "",
            *flat,
            "",
            *(f"- {k}: {v}" for k, v in info.items()),
            f"- wall time: {time.monotonic() - started:.0f} s",
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
