"""Many pods at once, and the floor.

- concurrency: `concurrent_pods` pods ADDed with `concurrency` calls in flight (as a node
  starting many pods does), then DELed the same way; total wall time per implementation, pycni
  against the Go bridge, each on its own node namespace. The phases alternate between the two
  (ADD pycni, ADD Go, DEL Go, DEL pycni, and the order flips between the modes).
- floor: the same kernel work as a bridge ADD (veth with its peer created in the pod, enslaved,
  address, link up, default route) and DEL (delete the veth) done by one long-lived process
  through pycni.netlink, no process start, no IPAM: what no plugin exec can beat, for context.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import (
    Context,
    Outcome,
    Plugin,
    Target,
    median,
    netns_add,
    netns_del,
    p90,
)
from bench.latency import bridge_config


def concurrency_suite(ctx: Context) -> Outcome:
    pods, workers = ctx.sizes.concurrent_pods, ctx.sizes.concurrency
    outcome = Outcome(f"{pods} pods at concurrency {workers}: total wall time")
    outcome.lines += [
        f"{pods} pods ADDed with {workers} calls in flight, then DELed the same way; each"
        " implementation on its own node namespace; the phases alternate between the two."
        f" CPU s: user + system time of the plugins and what they exec'd, ADD + DEL (the"
        f" machine has {os.cpu_count()} CPUs: with {workers} calls in flight, CPU per call"
        " is what bounds the wall time).",
        "",
        "| ipMasq | pycni ADD s | Go ADD s | pycni DEL s | Go DEL s | pycni ADD+DEL"
        " | Go ADD+DEL | ratio | CPU s pycni | CPU s Go |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for masq in (False, True):
        walls = _concurrent(ctx, masq, pods, workers)
        total = {label: walls[label]["ADD"] + walls[label]["DEL"] for label in walls}
        cpu = {label: walls[label]["ADD CPU"] + walls[label]["DEL CPU"] for label in walls}
        ratio = total["pycni"] / total["Go"]
        outcome.lines.append(
            f"| {'yes' if masq else 'no'} | {walls['pycni']['ADD']:.2f}"
            f" | {walls['Go']['ADD']:.2f} | {walls['pycni']['DEL']:.2f}"
            f" | {walls['Go']['DEL']:.2f} | {total['pycni']:.2f} | {total['Go']:.2f}"
            f" | {ratio:.2f}x | {cpu['pycni']:.2f} | {cpu['Go']:.2f} |"
        )
        outcome.targets.append(
            Target(
                f"{pods} pods at concurrency {workers}, ADD + DEL wall time,"
                f" {'with' if masq else 'without'} ipMasq",
                "≤ Go's",
                f"{total['pycni']:.2f} s vs {total['Go']:.2f} s ({ratio:.2f}x)",
                ratio <= 1.0,
            )
        )
        outcome.data["masq" if masq else "plain"] = walls
    outcome.samples = pods
    return outcome


def _concurrent(ctx: Context, masq: bool, pods: int, workers: int) -> dict[str, dict[str, float]]:
    tag = "cm" if masq else "cp"
    state = Path(tempfile.mkdtemp(prefix=f"pycni-bench-{tag}-"))
    prefix = f"pb{os.getpid()}{tag}"
    made: list[str] = []
    try:
        impls = []
        for label, bin_dir, kind, ipam in (
            ("pycni", ctx.bundle, "pycni-bridge", "pycni-host-local"),
            ("Go", ctx.go_dir, "bridge", "host-local"),
        ):
            (state / label).mkdir()
            made.append(f"{prefix}-{label}")
            node = netns_add(made[-1])
            config = bridge_config(kind, ipam, masq, state / label)
            impls.append(Plugin(label, bin_dir / kind, config, node, state / label))
            for n in range(pods):
                made.append(f"{prefix}-{label}-{n}")
                netns_add(made[-1])
        order = impls if not masq else impls[::-1]
        walls: dict[str, dict[str, float]] = {impl.label: {} for impl in impls}
        for verb, sequence in (("ADD", order), ("DEL", order[::-1])):
            for impl in sequence:
                wall, cpu = _wave(impl, verb, pods, workers, prefix)
                walls[impl.label][verb] = wall
                walls[impl.label][f"{verb} CPU"] = cpu
        return walls
    finally:
        for name in reversed(made):
            netns_del(name)
        shutil.rmtree(state, ignore_errors=True)


def _wave(impl: Plugin, verb: str, pods: int, workers: int, prefix: str) -> tuple[float, float]:
    """`verb` for every pod, `workers` at a time: (wall s, CPU s of the plugins and whatever
    they exec'd and waited for: host-local, iptables)."""

    def one(n: int) -> None:
        impl.call(verb, f"c{n}", f"/run/netns/{prefix}-{impl.label}-{n}")

    before = os.times()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, range(pods)):
            pass
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def floor_suite(ctx: Context) -> Outcome:
    from pycni.cni.ip import IP, Prefix
    from pycni.netlink import Rtnl

    pods = ctx.sizes.pods
    prefix = f"pb{os.getpid()}fl"
    made: list[str] = []
    adds: list[float] = []
    dels: list[float] = []
    try:
        made.append(f"{prefix}-node")
        node = netns_add(made[-1])
        with Rtnl(netns=node) as host:
            bridge = host.create_bridge("cni0", up=True)
            host.add_address(bridge.index, Prefix.parse("10.97.0.1/16"))
            gateway = IP.parse("10.97.0.1")
            default = Prefix.parse("0.0.0.0/0")
            veths = []
            for n in range(pods):
                made.append(f"{prefix}-{n}")
                pod_path = netns_add(made[-1])
                address = Prefix.parse(f"10.97.{(n + 2) // 256}.{(n + 2) % 256}/16")
                started = time.perf_counter()
                veth = host.create_veth(f"veth{n}", "eth0", peer_netns=pod_path)
                host.set_link(veth.index, master=bridge.index, up=True)
                with Rtnl(netns=pod_path) as pod:
                    eth0 = pod.get_link("eth0")
                    pod.add_address(eth0.index, address, nodad=True)
                    pod.set_link(eth0.index, up=True)
                    pod.add_route(default, gateway=gateway)
                adds.append((time.perf_counter() - started) * 1000)
                veths.append(veth.index)
            for index in veths:
                started = time.perf_counter()
                host.delete_link(index)
                dels.append((time.perf_counter() - started) * 1000)
    finally:
        for name in reversed(made):
            netns_del(name)
    outcome = Outcome("The floor: the same kernel work from one long-lived process", samples=pods)
    outcome.lines += [
        f"{pods} pods on one node, through pycni.netlink in the benchmark's own process (no"
        " exec, no IPAM, no config): ADD = veth with its peer created in the pod, enslaved to"
        " the bridge, up; the pod's address, link up, default route. DEL = delete the veth."
        " For context: what no plugin exec can go below.",
        "",
        "| step | median ms | p90 ms |",
        "|---|---:|---:|",
        f"| ADD's kernel work | {median(adds):.1f} | {p90(adds):.1f} |",
        f"| DEL's kernel work | {median(dels):.1f} | {p90(dels):.1f} |",
    ]
    outcome.data = {"ADD": adds, "DEL": dels}
    return outcome


__all__: list[Any] = ["concurrency_suite", "floor_suite"]
