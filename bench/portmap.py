"""pycni-portmap against the reference portmap (/usr/lib/cni/portmap), side by side.

    .venv/bin/python bench/portmap.py [--pods 64] [--rounds 30] [--repeats 3] [--json FILE]

A benchmark, not a test: it prints numbers and never fails on them. What is fair: only the
portmap plugins are timed, each called exactly as a runtime calls the second plugin of a
conflist, with the same prevResult (what a bridge returned: one pod address per pod on a node
bridge) — the main plugin is not in the measurement, so neither bridge's cost colours it. Each
implementation gets a namespace of its own standing in for a node (a bridge with the pods'
gateway, so the route to the pods exists); iptables rules and nftables rules never meet.

1. `--pods` pods, each with hostPorts (TCP and UDP), ADDed all at once (one thread a pod),
   then DELed all at once: failed calls (summed), and the wall time of each phase (median of
   `--repeats` runs, the implementations taking turns at going first).
2. A single DEL of a pod without hostPorts (containerd's everyday DEL): `--rounds` calls,
   alternating the implementations; median, p90 and the paired ratio (target ≤ 3x). In the
   same rounds, the floors under pycni's figure, each paired with that round's reference DEL:
   pycni-portmap's VERSION (the frozen executable's start, no config read) and a bare start of
   the CPython the bundle is frozen from (`python -I -S -c pass`: no PyInstaller, no pycni).

`run(pods=, rounds=) -> dict` is the same as a function (the JSON `--json` writes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import inside  # noqa: E402
from bench.startup import machine, p90, spawn  # noqa: E402

BUNDLE = REPO / "dist" / "cni" / "bin"
GO_DIR = Path("/usr/lib/cni")
DEL_RATIO_TARGET = 3.0


class Impl:
    def __init__(self, label: str, executable: Path, node: str, state: Path) -> None:
        self.label, self.executable, self.node, self.state = label, executable, node, state
        self.node_path = f"/run/netns/{node}"

    def call(self, verb: str, pod: int, port: int | None) -> tuple[float, str]:
        """One call; (ms, "" or the failure)."""
        config: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "benchnet",
            "type": self.executable.name,
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": self.node_path}],
                "ips": [{"address": f"10.99.{pod // 250}.{pod % 250 + 2}/16", "interface": 0}],
            },
        }
        if port is not None:
            config["runtimeConfig"] = {
                "portMappings": [
                    {"hostPort": port, "containerPort": 80, "protocol": proto}
                    for proto in ("tcp", "udp")
                ]
            }
        env = {
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": f"bench-{pod}",
            "CNI_NETNS": self.node_path,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.executable.parent),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",  # the reference execs iptables
        }
        with inside(self.node_path):
            ms, status, _, out, err = spawn(
                self.executable,
                env,
                json.dumps(config).encode(),
                self.state / f"stderr-{pod}",
                rss=False,
            )
        return ms, "" if status == 0 else f"{verb} pod {pod}: {out.decode()[:200]} {err[:200]}"


# What a DEL without mappings cannot go below, each timed like a plugin call (spawn to reap).
FLOORS: dict[str, tuple[Path, tuple[str, ...], dict[str, str]]] = {
    "pycni_version": (BUNDLE / "pycni-portmap", (), {"CNI_COMMAND": "VERSION"}),
    # The CPython the bundle is frozen from (build.sh freezes with .venv's interpreter).
    "interpreter": (
        Path(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}"),
        ("-I", "-S", "-c", "pass"),
        {},
    ),
}


def start_ms(executable: Path, args: tuple[str, ...], env: dict[str, str], state: Path) -> float:
    ms, status, _, _, err = spawn(
        executable, env, b"", state / "stderr-floor", rss=False, args=args
    )
    if status != 0:
        raise RuntimeError(f"{executable} {' '.join(args)} exited {status}: {err[:200]}")
    return ms


def node_add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True)
    for argv in (
        ["link", "set", "lo", "up"],
        ["link", "add", "cbr0", "type", "bridge"],
        ["addr", "add", "10.99.0.1/16", "dev", "cbr0"],
        ["link", "set", "cbr0", "up"],
    ):
        subprocess.run(["ip", "-n", name, *argv], check=True)


def parallel(impl: Impl, verb: str, pods: int) -> dict[str, Any]:
    started = time.monotonic()
    with ThreadPoolExecutor(pods) as pool:
        outcomes = list(pool.map(lambda n: impl.call(verb, n, 20000 + n), range(pods)))
    wall = (time.monotonic() - started) * 1000
    failures = [problem for _, problem in outcomes if problem]
    return {"wall_ms": round(wall, 1), "failures": len(failures), "first_failure": failures[:1]}


def run(pods: int = 64, rounds: int = 30, repeats: int = 3) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="pycni-bench-portmap-"))
    tag = f"{os.getpid()}"
    impls = [
        Impl("pycni", BUNDLE / "pycni-portmap", f"bpm-{tag}-py", state / "py"),
        Impl("reference", GO_DIR / "portmap", f"bpm-{tag}-go", state / "go"),
    ]
    out: dict[str, Any] = {
        "benchmark": "portmap",
        "pods": pods,
        "rounds": rounds,
        "repeats": repeats,
    }
    try:
        for impl in impls:
            node_add(impl.node)
            impl.state.mkdir()
        runs: dict[str, list[dict[str, Any]]] = {impl.label: [] for impl in impls}
        for r in range(repeats):
            for impl in impls if r % 2 == 0 else impls[::-1]:
                add = parallel(impl, "ADD", pods)
                delete = parallel(impl, "DEL", pods)
                runs[impl.label].append({"parallel_add": add, "parallel_del": delete})
                print(f"  {impl.label}: {pods} pods added and deleted", file=sys.stderr)
        for label, done in runs.items():
            out[label] = {
                phase: {
                    "wall_ms": statistics.median(d[phase]["wall_ms"] for d in done),
                    "failures": sum(d[phase]["failures"] for d in done),
                    "first_failure": [f for d in done for f in d[phase]["first_failure"]][:1],
                }
                for phase in ("parallel_add", "parallel_del")
            }
            out[label]["parallel_total_ms"] = statistics.median(
                d["parallel_add"]["wall_ms"] + d["parallel_del"]["wall_ms"] for d in done
            )
        samples: dict[str, list[float]] = {impl.label: [] for impl in impls}
        floors: dict[str, list[float]] = {floor: [] for floor in FLOORS}
        for n in range(rounds):
            for impl in impls if n % 2 == 0 else impls[::-1]:
                ms, problem = impl.call("DEL", 5000 + n, None)
                if problem:
                    raise RuntimeError(f"{impl.label}: {problem}")
                samples[impl.label].append(ms)
            for floor, (executable, args, env) in FLOORS.items():
                floors[floor].append(start_ms(executable, args, env, state))
        py, go = samples["pycni"], samples["reference"]
        ratio = statistics.median(a / b for a, b in zip(py, go, strict=True))
        out["del_without_mappings"] = {
            "pycni_median_ms": round(statistics.median(py), 2),
            "pycni_p90_ms": round(p90(py), 2),
            "reference_median_ms": round(statistics.median(go), 2),
            "reference_p90_ms": round(p90(go), 2),
            "paired_ratio": round(ratio, 2),
            "target_ratio": DEL_RATIO_TARGET,
            "met": ratio <= DEL_RATIO_TARGET,
            "floors": {
                floor: {
                    "command": " ".join(
                        [
                            *(f"{k}={v}" for k, v in FLOORS[floor][2].items()),
                            FLOORS[floor][0].name,
                            *FLOORS[floor][1],
                        ]
                    ),
                    "median_ms": round(statistics.median(ms), 2),
                    "paired_ratio": round(
                        statistics.median(a / b for a, b in zip(ms, go, strict=True)), 2
                    ),
                }
                for floor, ms in floors.items()
            },
        }
        out["machine"] = machine()
        return out
    finally:
        for impl in impls:
            subprocess.run(["ip", "netns", "delete", impl.node], check=False)
        subprocess.run(["rm", "-rf", str(state)], check=False)


def render(result: dict[str, Any]) -> str:
    py, go = result["pycni"], result["reference"]
    d = result["del_without_mappings"]
    rows = [
        f"# pycni-portmap vs reference portmap: {result['pods']} pods with hostPorts in parallel"
        f" (median of {result['repeats']} runs)",
        "",
        "| | pycni-portmap | reference portmap |",
        "|---|---:|---:|",
    ]
    for phase in ("parallel_add", "parallel_del"):
        rows.append(
            f"| {phase.replace('_', ' ').upper().replace('PARALLEL', 'parallel')} wall ms"
            f" (failures) | {py[phase]['wall_ms']:.0f} ({py[phase]['failures']}) |"
            f" {go[phase]['wall_ms']:.0f} ({go[phase]['failures']}) |"
        )
    rows += [
        f"| total wall ms | {py['parallel_total_ms']:.0f} | {go['parallel_total_ms']:.0f} |",
        f"| DEL without mappings, median ms (p90) | {d['pycni_median_ms']:.1f}"
        f" ({d['pycni_p90_ms']:.1f}) | {d['reference_median_ms']:.1f}"
        f" ({d['reference_p90_ms']:.1f}) |",
        "",
        f"- DEL without mappings, paired ratio pycni/reference: {d['paired_ratio']:.2f}x"
        f" (target ≤ {d['target_ratio']:.0f}x: {'met' if d['met'] else 'MISSED'})",
        *floor_lines(d),
    ]
    for label, side in (("pycni", py), ("reference", go)):
        for phase in ("parallel_add", "parallel_del"):
            if side[phase]["first_failure"]:
                rows.append(f"- {label} {phase} first failure: {side[phase]['first_failure'][0]}")
    rows += [f"- {k}: {v}" for k, v in result["machine"].items()]
    return "\n".join(rows)


def floor_lines(d: dict[str, Any]) -> list[str]:
    """The floors under the DEL figure, as list items (shared with bench/portmap_suite.py)."""
    floors = d.get("floors", {})
    labels = {
        "pycni_version": "the frozen executable's own start",
        "interpreter": "a bare start of the CPython it is frozen from",
    }
    return [
        f"- floor, {labels[name]} (`{floor['command']}`): {floor['median_ms']:.1f} ms,"
        f" {floor['paired_ratio']:.2f}x the reference's DEL"
        for name, floor in floors.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/portmap.py: run as root (network namespaces)", file=sys.stderr)
        return 2
    result = run(pods=args.pods, rounds=args.rounds, repeats=args.repeats)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
