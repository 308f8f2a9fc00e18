"""Per-call latency and peak RSS of VERSION, ADD, CHECK, STATUS and DEL, pycni against the Go
reference, interleaved call by call; with the bridge, also the scale curve (ADD as pods
accumulate on one node).

How a suite runs: each implementation gets a namespace standing in for a node (so bridges and
firewall rules never meet) and its own dataDir. Then, verb by verb, every pod gets the call from
both implementations, alternating (who goes first flips every pod): VERSION for every pod,
then ADD for every pod (so pods accumulate: the ADD of pod n finds n-1 pods), CHECK, STATUS,
and DEL. One unrecorded pod warms the caches first. Peak RSS comes from separate calls
(`rss_rounds` more pods), each plugin started through a short-lived /bin/sh so that ru_maxrss
is the plugin's own (see bench/startup.py).

STATUS: the Go plugins 1.1.1 predate it (CNI 1.1.0). What containerd 2.x does every 5 s per
node is STATUS; on the Go plugins the nearest thing, and their cheapest call, is VERSION: so
pycni's STATUS (cniVersion 1.1.0) is compared with Go's VERSION.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import plots
from bench.common import (
    GO_VERSION,
    CallError,
    Context,
    Outcome,
    Plugin,
    Target,
    median,
    netns_add,
    netns_del,
    p90,
    paired_ratio,
)

VERBS = ("VERSION", "ADD", "CHECK", "STATUS", "DEL")
STARTUP_LIMIT = 6.0  # VERSION and STATUS within 6x of Go
RSS_LIMIT_MIB = 15.0
FLAT_LIMIT = 1.2
BRIDGE_LIMITS = {  # (verb, ipMasq) -> the ceiling for the paired ratio
    ("ADD", True): 1.0,
    ("DEL", True): 1.0,
    ("ADD", False): 2.5,
    ("DEL", False): 2.0,
}


def bridge_config(bridge_type: str, ipam_type: str, masq: bool, state: Path) -> dict[str, Any]:
    return {
        "cniVersion": GO_VERSION,
        "name": "benchnet",
        "type": bridge_type,
        "bridge": "cni0",
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": masq,
        "ipam": {
            "type": ipam_type,
            "ranges": [[{"subnet": "10.98.0.0/16"}]],
            "dataDir": str(state / "ipam"),
        },
    }


def host_local_config(ipam_type: str, state: Path) -> dict[str, Any]:
    """A bridge network's config as the bridge plugin hands it to its IPAM plugin."""
    return {
        "cniVersion": GO_VERSION,
        "name": "benchnet",
        "type": "bridge",
        "bridge": "cni0",
        "ipam": {
            "type": ipam_type,
            "ranges": [[{"subnet": "10.99.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(state / "ipam"),
        },
    }


def bridge_suite(masq: bool) -> Any:
    def run(ctx: Context) -> Outcome:
        tag = "masq" if masq else "plain"
        with_masq = "with" if masq else "without"
        title = f"pycni-bridge vs Go bridge (+ host-local), {with_masq} ipMasq"

        def make(label: str, bin_dir: Path, kind: str, ipam: str, state: Path, node: str) -> Plugin:
            config = bridge_config(kind, ipam, masq, state)
            status_verb = "STATUS" if label == "pycni" else "VERSION"
            return Plugin(label, bin_dir / kind, config, node, state, status_verb=status_verb)

        return _suite(ctx, title, tag, make, pod_namespaces=True, masq=masq)

    return run


def host_local_suite(ctx: Context) -> Outcome:
    title = "pycni-host-local vs Go host-local"

    def make(label: str, bin_dir: Path, kind: str, ipam: str, state: Path, node: str) -> Plugin:
        config = host_local_config(ipam, state)
        status_verb = "STATUS" if label == "pycni" else "VERSION"
        exe = bin_dir / ipam
        return Plugin(label, exe, config, None, state, status_verb=status_verb)

    return _suite(ctx, title, "hostlocal", make, pod_namespaces=False, masq=None)


def _suite(
    ctx: Context, title: str, tag: str, make: Any, *, pod_namespaces: bool, masq: bool | None
) -> Outcome:
    pods = ctx.sizes.pods if pod_namespaces else ctx.sizes.rounds
    state = Path(tempfile.mkdtemp(prefix=f"pycni-bench-{tag}-"))
    prefix = f"pb{os.getpid()}{tag[:2]}"
    nodes: list[str] = []
    try:
        impls = []
        for label, bin_dir, kind, ipam in (
            ("pycni", ctx.bundle, "pycni-bridge", "pycni-host-local"),
            ("Go", ctx.go_dir, "bridge", "host-local"),
        ):
            (state / label).mkdir()
            nodes.append(f"{prefix}-{label}")
            node = netns_add(nodes[-1])
            impls.append(make(label, bin_dir, kind, ipam, state / label, node))
        py, go = impls
        if not pod_namespaces:
            nodes.append(f"{prefix}-pod")
            netns_add(nodes[-1])
        shared_pod = None if pod_namespaces else f"/run/netns/{prefix}-pod"
        run_cycles(py, go, pods, ctx.sizes.rss_rounds, prefix, shared_pod)
    finally:
        for name in nodes:
            netns_del(name)
        shutil.rmtree(state, ignore_errors=True)
    where = "host-local" if masq is None else "bridge"
    return report(ctx, title, tag, py, go, pods, where, masq)


def run_cycles(
    py: Plugin, go: Plugin, pods: int, rss_rounds: int, prefix: str, shared_pod: str | None
) -> None:
    """Every verb for every pod from both implementations, interleaved (one unrecorded pod
    first, `rss_rounds` pods for peak RSS after). Each pod gets a namespace of its own, named
    `<prefix>-<label>-<pod>`, made before its ADD and removed after its DEL; with
    `shared_pod` every call names that one instead (IPAM never enters it)."""
    made: set[str] = set()

    def cycle(names: list[str], record: str) -> None:
        for verb in VERBS:
            for n, name in enumerate(names):
                for impl in (py, go) if n % 2 == 0 else (go, py):
                    pod = f"{prefix}-{impl.label}-{name}"
                    if verb == "ADD" and shared_pod is None:
                        netns_add(pod)
                        made.add(pod)
                    impl.call(verb, name, shared_pod or f"/run/netns/{pod}", record=record)
                    if verb == "DEL" and shared_pod is None:
                        netns_del(pod)
                        made.discard(pod)

    try:
        cycle(["w"], "")
        cycle([f"p{n}" for n in range(pods)], "time")
        cycle([f"r{n}" for n in range(rss_rounds)], "rss")
    finally:
        for name in made:
            netns_del(name)


def report(
    ctx: Context,
    title: str,
    tag: str,
    py: Plugin,
    go: Plugin,
    pods: int,
    where: str,
    masq: bool | None = None,
) -> Outcome:
    """The suite's table, targets and plots. `where` names the comparison in the targets;
    the start-up targets come from host-local and the bridge without ipMasq, the ADD/DEL
    ratio targets and the scale curve from the bridge (`masq` not None)."""
    outcome = Outcome(title, samples=pods)
    outcome.lines += [
        f"{pods} pods on one node per implementation; every verb for every pod, the two"
        " alternating call by call. Milliseconds, spawn to reap; peak RSS in MiB (median of"
        f" {ctx.sizes.rss_rounds} separate calls).",
        "",
        "| verb | pycni median | pycni p90 | Go median | Go p90 | paired ratio |"
        " RSS pycni | RSS Go |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for verb in VERBS:
        a, b = py.ms[verb], go.ms[verb]
        ratios[verb] = paired_ratio(a, b)
        go_verb = "VERSION" if verb == "STATUS" else verb
        outcome.lines.append(
            f"| {verb}{' (Go: VERSION)' if go_verb != verb else ''}"
            f" | {median(a):.1f} | {p90(a):.1f} | {median(b):.1f} | {p90(b):.1f}"
            f" | {ratios[verb]:.2f}x | {median(py.rss_kib[verb]) / 1024:.1f}"
            f" | {median(go.rss_kib[verb]) / 1024:.1f} |"
        )
    outcome.lines += [
        "",
        "STATUS: the Go plugins 1.1.1 have no STATUS (CNI 1.1.0); pycni's STATUS is compared"
        " with Go's VERSION, its cheapest call.",
    ]
    if where in ("host-local", "bridge") and not masq:
        for verb in ("VERSION", "STATUS"):
            outcome.targets.append(
                Target(
                    f"{verb} ({where})",
                    f"≤ {STARTUP_LIMIT:g}x Go" + (" VERSION" if verb == "STATUS" else ""),
                    f"{ratios[verb]:.2f}x",
                    ratios[verb] <= STARTUP_LIMIT,
                )
            )
    if masq is not None:
        for verb in ("ADD", "DEL"):
            limit = BRIDGE_LIMITS[(verb, masq)]
            outcome.targets.append(
                Target(
                    f"{verb}, {'with' if masq else 'without'} ipMasq",
                    f"≤ {limit:g}x Go bridge",
                    f"{ratios[verb]:.2f}x",
                    ratios[verb] <= limit,
                )
            )
    peak = max(median(py.rss_kib[verb]) for verb in VERBS) / 1024
    outcome.targets.append(
        Target(
            f"peak RSS per call ({where})",
            f"≤ {RSS_LIMIT_MIB:g} MiB",
            f"{peak:.1f} MiB",
            peak <= RSS_LIMIT_MIB,
        )
    )
    data: dict[str, Any] = {
        "pods": pods,
        "ms": {"pycni": py.ms, "Go": go.ms},
        "rss_kib": {"pycni": py.rss_kib, "Go": go.rss_kib},
        "ratios": ratios,
    }
    if masq is not None:
        flat = _flatness(py.ms["ADD"]), _flatness(go.ms["ADD"])
        window = min(50, max(1, pods // 4))
        outcome.lines += [
            "",
            f"Scale: ADD median of the last {window} pods over the first {window}: pycni"
            f" {flat[0]:.2f}, Go {flat[1]:.2f}. Unlike the paired ratios, this compares calls"
            " made a minute or more apart: a change in the machine's load between them enters"
            " it (Go's figure from the same run shows how much; on a quiet machine Go's grows"
            " ≈ 1.7x over 200 pods).",
        ]
        outcome.targets.append(
            Target(
                f"flat with scale, {'with' if masq else 'without'} ipMasq"
                f" (last {window} / first {window} of {pods} ADDs)",
                f"≤ {FLAT_LIMIT:g} (Go: {flat[1]:.2f})",
                f"{flat[0]:.2f}",
                flat[0] <= FLAT_LIMIT,
            )
        )
        data["flatness"] = {"pycni": flat[0], "Go": flat[1], "window": window}
        outcome.plots.append(
            plots.scale_curve(
                ctx.plots / f"scale-{tag}.png",
                f"ADD latency as pods accumulate on one node ({with_label(masq)})",
                {
                    f"pycni-bridge (last {window} / first {window}: {flat[0]:.2f})": py.ms["ADD"],
                    f"Go bridge (last {window} / first {window}: {flat[1]:.2f})": go.ms["ADD"],
                },
            )
        )
    outcome.plots.insert(
        0,  # the distributions first, then the scale curve
        plots.distributions(
            ctx.plots / f"latency-{tag}.png",
            title,
            VERBS,
            {"pycni": py.ms, "Go": go.ms},
            note="STATUS: Go has none (1.1.1); its VERSION is shown",
        ),
    )
    outcome.data = data
    return outcome


def with_label(masq: bool) -> str:
    return "with ipMasq" if masq else "without ipMasq"


def _flatness(adds: list[float]) -> float:
    window = min(50, max(1, len(adds) // 4))
    return median(adds[-window:]) / median(adds[:window])


__all__ = ["CallError", "bridge_suite", "host_local_suite"]
