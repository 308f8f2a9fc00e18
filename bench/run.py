"""`python -m bench`: every benchmark of pycni against the Go reference plugins, in one run,
written up as BENCHMARKS.md with plots.

    .venv/bin/python -m bench                    # as root; writes ./BENCHMARKS.md, ./benchmarks/
    .venv/bin/python -m bench --smoke --out /tmp/b   # tiny sizes: does the command work?
    .venv/bin/python -m bench --only bridge,dataplane-vxlan
    .venv/bin/python -m bench --only dataplane-ipsec --update   # into the existing document

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

from bench import (
    dataplane,
    ipsec,
    k8s_podstart,
    latency,
    netpol,
    overlay,
    portmap_suite,
    routed,
    scale,
)
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
    Suite("dataplane-ipsec", ipsec.suite),
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
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep OUT/BENCHMARKS.md and results.json of an earlier run and replace (or add)"
        " only the suites run now, each marked with this run's date and load",
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
    write(out_dir, outcomes, info, update_earlier=args.update)
    print(f"wrote {out_dir / 'BENCHMARKS.md'} and {plots_dir}/", file=sys.stderr)
    return 1 if failed else 0


def write(
    out_dir: Path,
    outcomes: list[tuple[Suite, Outcome, float]],
    info: dict[str, Any],
    *,
    update_earlier: bool,
) -> None:
    """OUT/BENCHMARKS.md and OUT/benchmarks/results.json; with `update_earlier`, the earlier
    ones with only these suites replaced or added (`update`)."""
    raw = {
        s.name: {"title": o.title, "not_measured": o.not_measured, "data": o.data, "seconds": t}
        for s, o, t in outcomes
    }
    document_path, json_path = out_dir / "BENCHMARKS.md", out_dir / "benchmarks" / "results.json"
    document = render(outcomes, info, out_dir)
    results: dict[str, Any] = {"machine": info, "suites": raw}
    if update_earlier and document_path.exists():
        earlier: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
        titles = {name: s.get("title", "") for name, s in earlier.get("suites", {}).items()}
        document = update(document_path.read_text(), titles, outcomes, info, out_dir)
        results = _merged_results(earlier, info, raw)
    document_path.write_text(document)
    json_path.write_text(json.dumps(results, indent=1, default=str))


def update(
    earlier: str,
    earlier_titles: dict[str, str],
    outcomes: list[tuple[Suite, Outcome, float]],
    info: dict[str, Any],
    out: Path,
) -> str:
    """`earlier` (a document `render` wrote; `earlier_titles`: its suites' section titles by
    suite name, from its results.json) with the sections and target rows of the suites run now
    replaced, or added in SUITES order, each section saying which run it comes from; the rest,
    its "Machine and run" included, stays the earlier run's."""
    fresh = render(outcomes, info, out).split("\n")
    lines = earlier.rstrip("\n").split("\n")
    note = (
        f"(From a separate run, `python -m bench --only ... --update`: {info.get('date', '?')},"
        f" pycni {info.get('pycni', '?')}, load average {info.get('load average at start', '?')}"
        f" at start and {info.get('load average at end', '?')} at end.)"
    )
    order = [s.name for s in SUITES]
    for suite, outcome, _ in outcomes:
        bounds = _section_bounds(fresh, outcome.title)
        assert bounds is not None, outcome.title  # render wrote it
        start, end = bounds
        section = [fresh[start], "", note, *fresh[start + 1 : end]]
        old = _section_bounds(lines, earlier_titles.get(suite.name, outcome.title))
        if old is not None:
            lines[old[0] : old[1]] = section
        else:  # before the first section of a suite that comes later in SUITES
            later = {
                f"## {title}"
                for name, title in earlier_titles.items()
                if name in order and order.index(name) > order.index(suite.name)
            }
            at = next((n for n, line in enumerate(lines) if line in later), len(lines))
            lines[at:at] = [*section, ""] if at < len(lines) else ["", *section]
        old_title = earlier_titles.get(suite.name, outcome.title)
        whats = {t.what for t in outcome.targets} | {outcome.title, old_title}
        lines = [line for line in lines if not _target_row_of(line, whats)]
        rows = [
            f"| {t.what} | {t.limit} | {t.figure} | {verdict(t.met)} |" for t in outcome.targets
        ]
        if outcome.not_measured:
            rows = [f"| {outcome.title} | | not measured: {outcome.not_measured} | |"]
        last_row = lines.index("## Machine and run") - 1
        while last_row > 0 and not lines[last_row].startswith("| "):
            last_row -= 1
        lines[last_row + 1 : last_row + 1] = rows
    return "\n".join(lines) + "\n"


def _section_bounds(lines: list[str], title: str) -> tuple[int, int] | None:
    """[start, end) of the section headed `## title`: up to the next `## ` heading, without
    the blank lines before it."""
    if f"## {title}" not in lines:
        return None
    start = lines.index(f"## {title}")
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), len(lines))
    while end > start + 1 and lines[end - 1] == "":
        end -= 1
    return start, end


def _target_row_of(line: str, whats: set[str]) -> bool:
    return line.startswith("| ") and line[2:].split(" | ", 1)[0] in whats


def _merged_results(
    earlier: dict[str, Any], info: dict[str, Any], raw: dict[str, Any]
) -> dict[str, Any]:
    """The earlier results.json with the suites run now replaced or added (in SUITES order),
    and this run's machine facts appended under "updates"."""
    order = [s.name for s in SUITES]
    suites = {**earlier.get("suites", {}), **raw}
    ranked = sorted(suites, key=lambda name: order.index(name) if name in order else len(order))
    return {
        "machine": earlier.get("machine", info),
        "suites": {name: suites[name] for name in ranked},
        "updates": [*earlier.get("updates", []), {"suites": sorted(raw), "machine": info}],
    }


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
