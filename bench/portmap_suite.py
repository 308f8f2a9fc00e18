"""The portmap suite of `python -m bench`: bench/portmap.py (pycni-portmap against the Go
portmap: `portmap_pods` pods with hostPorts ADDed and DELed all at once, and the plain DEL of a
pod without mappings, interleaved) turned into a section of BENCHMARKS.md.

Until bench/portmap.py and pycni-portmap exist on this checkout, it says so and measures
nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from bench import plots
from bench.common import Context, Outcome, Target

TITLE = "pycni-portmap vs Go portmap: pods with hostPorts in parallel"


def missing(ctx: Context) -> str | None:
    if importlib.util.find_spec("bench.portmap") is None:
        return "bench/portmap.py has not landed on this checkout"
    if not (ctx.bundle / "pycni-portmap").is_file():
        return "pycni-portmap is not in the bundle: it has not landed on this checkout"
    return None


def suite(ctx: Context) -> Outcome:
    why = missing(ctx)
    if why:
        return Outcome(TITLE, not_measured=why)
    portmap = importlib.import_module("bench.portmap")
    pods, rounds = ctx.sizes.portmap_pods, ctx.sizes.portmap_rounds
    settings: dict[str, Any] = {"pods": pods, "rounds": rounds}
    repeats = 1
    if "repeats" in inspect.signature(portmap.run).parameters:
        repeats = settings["repeats"] = ctx.sizes.portmap_repeats
    result: dict[str, Any] = portmap.run(**settings)
    py, go = result["pycni"], result["reference"]
    plain = result["del_without_mappings"]
    outcome = Outcome(TITLE, samples=pods, data=result)
    outcome.lines += [
        f"{pods} pods, each with a TCP and a UDP hostPort, ADDed all at once (one thread a"
        f" pod), then DELed all at once (median of {repeats} such waves); only the portmap"
        " plugins are timed, each called as the second plugin of a conflist with the same"
        " prevResult. Then a DEL of a pod without"
        f" mappings (containerd's everyday DEL), {rounds} calls, alternating.",
        "",
        "| | pycni-portmap | Go portmap |",
        "|---|---:|---:|",
    ]
    for phase, label in (("parallel_add", "ADD"), ("parallel_del", "DEL")):
        outcome.lines.append(
            f"| {pods} {label}s in parallel, wall s (failed calls)"
            f" | {py[phase]['wall_ms'] / 1000:.2f} ({py[phase]['failures']})"
            f" | {go[phase]['wall_ms'] / 1000:.2f} ({go[phase]['failures']}) |"
        )
    outcome.lines += [
        f"| ADD + DEL wall s | {py['parallel_total_ms'] / 1000:.2f}"
        f" | {go['parallel_total_ms'] / 1000:.2f} |",
        f"| DEL without mappings, median ms (p90) | {plain['pycni_median_ms']:.1f}"
        f" ({plain['pycni_p90_ms']:.1f}) | {plain['reference_median_ms']:.1f}"
        f" ({plain['reference_p90_ms']:.1f}) |",
    ]
    floors = portmap.floor_lines(plain) if hasattr(portmap, "floor_lines") else []
    if floors:
        outcome.lines += [
            "",
            "What a DEL without mappings cannot go below, timed in the same rounds and paired"
            " with that round's Go DEL:",
            "",
            *floors,
        ]
    for label, side in (("pycni", py), ("Go", go)):
        for phase in ("parallel_add", "parallel_del"):
            if side[phase]["first_failure"]:
                outcome.lines.append(
                    f"\n{label} {phase}: first failure: {side[phase]['first_failure'][0]}"
                )
    ratio = py["parallel_total_ms"] / go["parallel_total_ms"]
    failed = py["parallel_add"]["failures"] + py["parallel_del"]["failures"]
    outcome.targets += [
        Target(
            f"portmap: {pods} pods with hostPorts in parallel, ADD + DEL wall time",
            "≤ Go's (portmap issue), no failed call",
            f"{ratio:.2f}x ({py['parallel_total_ms'] / 1000:.2f} s vs"
            f" {go['parallel_total_ms'] / 1000:.2f} s), failed calls: pycni {failed}, Go"
            f" {go['parallel_add']['failures'] + go['parallel_del']['failures']}",
            ratio <= 1.0 and failed == 0,
        ),
        Target(
            "portmap: DEL of a pod without mappings",
            f"≤ {plain['target_ratio']:g}x Go (portmap issue)",
            f"{plain['paired_ratio']:.2f}x",
            bool(plain["met"]),
        ),
    ]
    outcome.plots.append(
        plots.bars(
            ctx.plots / "portmap.png",
            f"{pods} pods with hostPorts: ADD + DEL in parallel",
            "wall time, s",
            {
                "pycni-portmap": [py["parallel_total_ms"] / 1000],
                "Go portmap": [go["parallel_total_ms"] / 1000],
            },
        )
    )
    return outcome
