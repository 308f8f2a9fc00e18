"""dataplane-ipsec: TCP throughput between pods on two nodes with and without IPsec ESP, in the
kernel lane (docs/encryption.md).

The CI VM's kernel has no ESP, so the suite boots the kernel lane's User-Mode Linux guest
(pycni.lab.uml, ESP and AES-GCM as modules) and runs `python -m bench.ipsec --guest` there. In
the guest, for pycni-vxlan and for pycni-ipip (Always): one 2-node cluster in the clear and one
with `"encryption": "ipsec"`, its node pair keyed by pycni.lab.ipsec; a pod on each node; the
four paths measured with iperf3 in the same run, interleaved (bench.dataplane.compare), so the
guest's speed drifts alike for all. Reported per datapath: each configuration's pod MTU, median
Gbit/s and runs, and encrypted over clear. The guest is a UML kernel: everything runs on one
emulated CPU, far slower than a real kernel; the absolute figures mean little, the ratio is the
point: AES-GCM runs in software there (aes, gcm and ghash-generic: UML builds no x86 crypto
drivers such as aesni-intel), so the ratio is a worst case for nodes without AES-NI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.common import REPO, Context, Outcome, Target, median

TITLE = "Across nodes, encrypted: pycni-vxlan and pycni-ipip with and without IPsec ESP"
DATAPATHS = ("vxlan", "ipip")
CLEAR, IPSEC = "clear", "ipsec"
GUEST_TIMEOUT = 1200.0  # seconds for the whole boot: setup is slow in the guest


def suite(ctx: Context) -> Outcome:
    from pycni.lab import uml

    reason = uml.unavailable_reason()
    if reason is not None:
        return Outcome(TITLE, not_measured=f"the kernel lane cannot run: {reason}")
    seconds, repeats = ctx.sizes.iperf_seconds, ctx.sizes.iperf_repeats
    with tempfile.TemporaryDirectory(prefix="pycni-bench-ipsec-") as tmp:
        results = Path(tmp)
        report = results / "ipsec.json"
        command = [sys.executable, "-m", "bench.ipsec", "--guest", str(report)]
        command += ["--bundle", str(ctx.bundle), "--seconds", str(seconds)]
        command += ["--repeats", str(repeats)]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
        outcome = uml.run_in_guest(
            command, results=results, cwd=REPO, env=env, timeout=GUEST_TIMEOUT
        )
        if outcome.status != 0 or not report.exists():
            why = outcome.reason or f"exit {outcome.status}"
            tail = outcome.output.strip().splitlines()[-3:]
            return Outcome(TITLE, not_measured=f"the guest run failed ({why}): {' / '.join(tail)}")
        found = json.loads(report.read_text())
    return render(ctx, found, seconds, repeats)


def render(ctx: Context, found: dict[str, Any], seconds: int, repeats: int) -> Outcome:
    """The guest's numbers as the report's section: one table row per datapath."""
    from bench import plots  # matplotlib: on the host only

    outcome = Outcome(TITLE, samples=repeats)
    outcome.lines += [
        "In the kernel lane's User-Mode Linux guest (Linux 6.1, one emulated CPU, AES-GCM in"
        " software): two emulated nodes per configuration, iperf3 TCP from a pod on node2 to a"
        f" pod on node1, one stream, {seconds} s a run, {repeats} runs per configuration, the"
        " four configurations interleaved in one run. Gbit/s received; the pods' MTU as the"
        " plugins set it on a 1500-byte underlay (ESP's room: docs/encryption.md).",
        "",
        "| datapath | pod MTU clear | pod MTU ipsec | clear, median Gbit/s | ipsec, median Gbit/s"
        " | runs clear | runs ipsec | ipsec / clear |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    bars: dict[str, list[float]] = {}
    for datapath in DATAPATHS:
        clear = found["gbps"][f"{datapath} {CLEAR}"]
        encrypted = found["gbps"][f"{datapath} {IPSEC}"]
        mtu_clear = found["mtu"][f"{datapath} {CLEAR}"]
        mtu_ipsec = found["mtu"][f"{datapath} {IPSEC}"]
        ratio = median(encrypted) / median(clear)
        outcome.lines.append(
            f"| pycni-{datapath} | {mtu_clear} | {mtu_ipsec} | {median(clear):.3f}"
            f" | {median(encrypted):.3f} | {', '.join(f'{r:.3f}' for r in clear)}"
            f" | {', '.join(f'{r:.3f}' for r in encrypted)} | {ratio:.2f}x |"
        )
        outcome.targets.append(
            Target(
                f"pycni-{datapath} throughput with IPsec ESP (kernel lane)",
                "for context",
                f"{ratio:.2f}x of clear ({median(encrypted):.3f} vs {median(clear):.3f} Gbit/s;"
                f" pod MTU {mtu_ipsec} vs {mtu_clear})",
                None,
            )
        )
        bars[f"{datapath} clear\n(MTU {mtu_clear})"] = clear
        bars[f"{datapath} ipsec\n(MTU {mtu_ipsec})"] = encrypted
    outcome.lines += ["", f"Guest kernel: {found.get('kernel', '?')}."]
    outcome.plots.append(
        plots.bars(
            ctx.plots / "dataplane-ipsec.png",
            "Across nodes in the kernel lane: clear vs IPsec ESP",
            "Gbit/s (iperf3, TCP, median of runs)",
            bars,
        )
    )
    outcome.data = found
    return outcome


# --- in the guest -----------------------------------------------------------------------------


def guest(report: Path, bundle: Path, seconds: int, repeats: int) -> None:
    """Build the four paths, measure them interleaved, write the numbers to `report`."""
    import os

    from bench import dataplane
    from pycni.lab import ipsec
    from pycni.lab.cluster import Cluster

    with ExitStack() as stack:
        paths: dict[str, dataplane.Path2] = {}
        encrypted: list[Cluster] = []
        for datapath in DATAPATHS:
            for label in (CLEAR, IPSEC):
                settings = {"encryption": "ipsec"} if label == IPSEC else {}
                cluster = Cluster.create(
                    2,
                    bundle,
                    datapath=datapath,
                    vxlan=settings if datapath == "vxlan" else None,
                    ipip=settings if datapath == "ipip" else None,
                )
                stack.callback(cluster.destroy)
                if label == IPSEC:
                    ipsec.key_cluster(cluster)
                    encrypted.append(cluster)
                one, two = cluster.nodes["node1"], cluster.nodes["node2"]
                server = one.node.add_pod("server", cluster.conflist(one))
                client = two.node.add_pod("client", cluster.conflist(two))
                paths[f"{datapath} {label}"] = dataplane.Path2(
                    client.ns, server.ns, server.addresses(4)[0], dataplane.pod_mtu(server.ns)
                )
        samples = dataplane.compare(paths, seconds, repeats)
        for cluster in encrypted:
            _check_encrypted(cluster)
        found = {
            "gbps": samples,
            "mtu": {name: path.mtu for name, path in paths.items()},
            "kernel": os.uname().release,
        }
        report.write_text(json.dumps(found, indent=1))


def _check_encrypted(cluster: Any) -> None:
    """The encrypted cluster's iperf3 traffic went through its SAs (else the figures would be
    of clear text): both nodes sent and received ESP, thousands of packets."""
    from pycni.lab import ipsec

    for name, (sent, received) in ipsec.esp_counters(cluster).items():
        if sent < 100 or received < 100:
            raise RuntimeError(f"{name}: only {sent} packets sent, {received} received as ESP")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ipsec", description=__doc__)
    parser.add_argument("--guest", type=Path, required=True, help="where to write the numbers")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    guest(args.guest, args.bundle, args.seconds, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
