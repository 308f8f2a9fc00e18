"""`python -m bench`: every benchmark of pycni against the Go reference plugins, in one run,
written up as BENCHMARKS.md with plots.

    .venv/bin/python -m bench                    # as root; writes ./BENCHMARKS.md, ./benchmarks/
    .venv/bin/python -m bench --smoke --out /tmp/b   # tiny sizes: does the command work?
    .venv/bin/python -m bench --only bridge,dataplane-vxlan

`packaging/bench.sh` sets a fresh Debian machine up, builds the bundle if missing and runs
this. A benchmark, not a test: it never fails on a figure (it exits 1 only when a suite could
not run). Each suite is one entry of SUITES: a name, and a function from the run's Context to
an Outcome (markdown, targets met or missed, plots, raw numbers; or why nothing was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dataplane, k8s_podstart, latency, netpol, overlay, portmap_suite, routed, scale
from bench.common import BUNDLE, FULL, GO_DIR, REPO, SMOKE, Context, Outcome, verdict, versions
from bench.startup import become_subreaper, machine


@dataclass(frozen=True)
class Suite:
    name: str
    run: Callable[[Context], Outcome]


SUITES = [
    Suite("host-local", latency.host_local_suite),
    Suite("bridge", latency.bridge_suite(masq=False)),
    Suite("bridge-masq", latency.bridge_suite(masq=True)),
    Suite("ipip", routed.latency_suite),
    Suite("vxlan", overlay.latency_suite),
    Suite("concurrency", scale.concurrency_suite),
    Suite("floor", scale.floor_suite),
    Suite("portmap", portmap_suite.suite),
    Suite("dataplane-bridge", dataplane.same_node_suite),
    Suite("dataplane-vxlan", dataplane.vxlan_suite),
    Suite("dataplane-ipip", routed.throughput_suite),
    Suite("netpol", netpol.suite),
    Suite("k8s-podstart", k8s_podstart.suite),
]


def _sigterm(signum: int, frame: object) -> None:
    if os.getpid() == _MAIN_PID:  # run the finally blocks: namespaces, temp dirs
        raise SystemExit(128 + signum)
    os._exit(128 + signum)  # a forked child never runs the parent's cleanup


_MAIN_PID = os.getpid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO,
        help="writes OUT/BENCHMARKS.md and"
        " OUT/benchmarks/ (plots, results.json); default: the repository",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the command works")
    parser.add_argument(
        "--only", help="comma-separated suite names: " + ", ".join(s.name for s in SUITES)
    )
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the frozen pycni plugins")
    parser.add_argument("--go", type=Path, default=GO_DIR, help="the Go reference plugins")
    args = parser.parse_args(argv)

    suites = SUITES
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {s.name for s in SUITES}
        if unknown:
            parser.error(f"unknown suites: {', '.join(sorted(unknown))}")
        suites = [s for s in SUITES if s.name in wanted]
    problems = prerequisites(args.bundle, args.go)
    if problems:
        print("python -m bench: " + "; ".join(problems), file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _sigterm)
    become_subreaper()
    sizes = SMOKE if args.smoke else FULL
    out_dir = args.out.resolve()
    plots_dir = out_dir / "benchmarks"
    plots_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.bundle.resolve(), args.go, plots_dir, sizes)
    info: dict[str, str] = {**machine(), **versions()}
    info["load average at start"] = _load()
    started = time.monotonic()
    outcomes: list[tuple[Suite, Outcome, float]] = []
    failed = False
    for suite in suites:
        print(f"==> {suite.name}", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            outcome = suite.run(ctx)
        except Exception as err:
            traceback.print_exc()
            outcome = Outcome(suite.name, not_measured=f"failed: {type(err).__name__}: {err}")
            failed = True
        took = time.monotonic() - began
        print(f"    {took:.0f} s", file=sys.stderr, flush=True)
        outcomes.append((suite, outcome, took))
    info["load average at end"] = _load()
    info["wall time"] = f"{time.monotonic() - started:.0f} s"
    info["sizes"] = "smoke (tiny: the numbers mean nothing)" if args.smoke else "full"
    document = render(outcomes, info, out_dir)
    (out_dir / "BENCHMARKS.md").write_text(document)
    raw = {
        s.name: {"title": o.title, "not_measured": o.not_measured, "data": o.data, "seconds": t}
        for s, o, t in outcomes
    }
    (plots_dir / "results.json").write_text(
        json.dumps({"machine": info, "suites": raw}, indent=1, default=str)
    )
    print(f"wrote {out_dir / 'BENCHMARKS.md'} and {plots_dir}/", file=sys.stderr)
    return 1 if failed else 0


def prerequisites(bundle: Path, go_dir: Path) -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (it creates network namespaces)")
    if not (bundle / "pycni-bridge").is_file():
        problems.append(f"no {bundle}/pycni-bridge: run packaging/build.sh")
    if not (go_dir / "bridge").is_file():
        problems.append(f"no {go_dir}/bridge: apt-get install containernetworking-plugins")
    for tool in ("ip", "iperf3", "nft"):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` missing: run packaging/setup.sh")
    return problems


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def render(outcomes: list[tuple[Suite, Outcome, float]], info: dict[str, Any], out: Path) -> str:
    lines = [
        "# pycni benchmarks",
        "",
        "Generated by `packaging/bench.sh` (`python -m bench`): pycni's frozen plugins against the"
        " Go reference plugins (Debian `containernetworking-plugins`), side by side in one run,"
        " interleaved call by call; medians, p90 and paired ratios (the median over pairs of"
        " pycni's time over Go's in the same pair: on shared, noisy machines absolute times move"
        " ±30% between runs, the paired ratios hold far better). Do not edit: run it again.",
        "",
        "## Targets",
        "",
        "| target | limit | measured | verdict |",
        "|---|---|---|---|",
    ]
    for _suite, outcome, _ in outcomes:
        for t in outcome.targets:
            lines.append(f"| {t.what} | {t.limit} | {t.figure} | {verdict(t.met)} |")
        if outcome.not_measured:
            lines.append(f"| {outcome.title} | | not measured: {outcome.not_measured} | |")
    lines += ["", "## Machine and run", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    lines.append(
        "- samples: "
        + "; ".join(f"{s.name} {o.samples}" for s, o, _ in outcomes if not o.not_measured)
    )
    for suite, outcome, took in outcomes:
        lines += ["", f"## {outcome.title}", ""]
        if outcome.not_measured:
            lines.append(f"Not measured: {outcome.not_measured}.")
            continue
        lines += outcome.lines
        lines += ["", f"(suite `{suite.name}`, {took:.0f} s)"]
        for plot in outcome.plots:
            lines += ["", f"![{plot.stem}]({plot.relative_to(out).as_posix()})"]
    return "\n".join(lines) + "\n"
