"""Run a CNI spec conformance suite against any CNI plugins, on this machine (root).

The suite drives the plugins as libcni-based runtimes do (version negotiation, chaining with
prevResult, reverse-order DEL with the cached result, GC with the valid attachments) and checks
what the spec asks of them: VERSION, environment errors and their codes, the ADD result and
whether the kernel agrees with it, duplicate ADD, CHECK, DEL in every awkward situation, silence
on DEL/CHECK/GC/STATUS, cleanup after a failed chain, GC, STATUS, parallel ADDs, and the
Kubernetes network model on one node with real packets.

Every plugin runs inside a throwaway node namespace; each check makes its own pod namespaces
and deletes them (and everything it added) when it ends. IPAM state (host-local's `dataDir`)
goes to a temporary directory. Exit status: 0 when no check failed, 1 when one did, 2 when
the suite could not run.

Example:
  pycni conformance --plugin-dir dist/cni/bin --plugin-dir /usr/lib/cni \\
      --conf conf/examples/10-pycni-bridge.conflist --junit conformance.xml
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

COMMAND = "conformance"
HELP = "run the CNI conformance suite against plugins and a network config (root)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin-dir",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="a directory of CNI plugins (CNI_PATH); give it several times, in search order",
    )
    parser.add_argument(
        "--conf", type=Path, metavar="FILE", help="a network config (.conflist or .conf)"
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="ID",
        help="run only this check, or a group such as 'del' (repeatable; default: all)",
    )
    parser.add_argument(
        "--capability-args",
        type=json.loads,
        default={},
        metavar="JSON",
        help="capability args for every pod, as cnitool's CAP_ARGS, e.g."
        " '{\"portMappings\": [...]}' (runtimeConfig for plugins declaring them)",
    )
    parser.add_argument(
        "--runtime-cni-version",
        default=None,
        metavar="V",
        help="act as a runtime whose libcni tops out at V: below 1.1.0 it ignores cniVersions,"
        " sends cniVersion and refuses results newer than V, as libcni 1.1 (containerd"
        " 1.6/1.7) does (default: 1.1.0, reading cniVersions)",
    )
    parser.add_argument("--ifname", default="eth0", help="CNI_IFNAME for the pods (default eth0)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds one plugin call may take (default 30)"
    )
    parser.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")


def run(args: argparse.Namespace) -> int:
    from pycni.conformance import checks

    if args.list:
        for check in checks.CHECKS:
            print(f"{check.id:<26} {check.title}  [{check.section}]")
        return 0
    problem = _usage_problem(args)
    if problem:
        print(f"pycni conformance: {problem}", file=sys.stderr)
        return 2
    netconf = json.loads(args.conf.read_text())
    # Tear down on `kill` as on Ctrl-C; and put the old handler back on the way out: a handler
    # that raises, left behind in a process that forks later (pyroute2's netns helper, say),
    # makes the child unwind the parent's `finally` blocks when it is sent SIGTERM.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, netconf)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, netconf: dict[str, object]) -> int:
    from pycni.conformance import runner

    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ

    def progress(result: runner.CheckResult) -> None:
        print(runner.format_line(result, colour), flush=True)

    plugin_dirs = [str(d.resolve()) for d in args.plugin_dir]
    header = runner.empty_report(plugin_dirs, netconf, _runtime_version(args))
    print(runner.render_header(header), flush=True)
    try:
        report = runner.run_suite(
            plugin_dirs,
            netconf,
            only=args.check,
            ifname=args.ifname,
            timeout=args.timeout,
            capability_args=args.capability_args,
            progress=progress,
            runtime_cni_version=_runtime_version(args),
        )
    except KeyboardInterrupt:
        print("\ninterrupted: namespaces removed", file=sys.stderr)
        return 130
    print()
    print(report.summary())
    failures = runner.render_failures(report)
    if failures:
        print("\nfailures in full:\n" + failures)
    if args.junit:
        runner.write_junit(report, args.junit)
    if args.json:
        runner.write_json(report, args.json)
    return 1 if report.failed else 0


def _runtime_version(args: argparse.Namespace) -> str:
    from pycni.cni import versions

    return args.runtime_cni_version or versions.CURRENT


def _usage_problem(args: argparse.Namespace) -> str:
    from pycni.cni import versions
    from pycni.conformance import checks
    from pycni.lab.runtime import NetconfError, load_network

    if not args.plugin_dir:
        return "give at least one --plugin-dir"
    if args.conf is None:
        return "give --conf FILE, a network config"
    missing = [str(d) for d in args.plugin_dir if not d.is_dir()]
    if missing:
        return f"no such plugin directory: {', '.join(missing)}"
    if args.runtime_cni_version is not None:
        try:
            versions.parse(args.runtime_cni_version)
        except ValueError as err:
            return f"--runtime-cni-version: {err}"
    try:
        checks.select(args.check)
        version = _runtime_version(args)
        load_network(
            json.loads(args.conf.read_text()), version, versions.at_least(version, "1.1.0")
        )
    except (OSError, ValueError, NetconfError) as err:
        return (
            f"cannot use {args.conf}: {err}"
            if not isinstance(err, ValueError) or "check" not in str(err)
            else str(err)
        )
    if os.geteuid() != 0:
        return "run as root: the suite creates network namespaces"
    return ""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
