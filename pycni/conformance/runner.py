"""Run the checks and report them: a table for people, JUnit XML and JSON for CI.

`run_suite` creates a node namespace (every plugin runs inside it, never in the host's; like a
real node it has an address and a default route, `uplink0` in NODE_UPLINK), a work
directory (results caches, IPAM state, the harness's own failing plugin), runs each selected
check in a `Scope` of its own and removes all of it at the end, also on Ctrl-C. A check may
ask for a node of its own (`new_node` makes it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pycni.cni import versions
from pycni.conformance.checks import (
    FAIL_PLUGIN,
    FAIL_PLUGIN_SOURCE,
    Check,
    CheckFailed,
    NotApplicable,
    Scope,
    Suite,
    Verdict,
    select,
)
from pycni.lab import netns as netns_mod
from pycni.lab.runtime import JSONObject, PluginError, load_network

NODE_NETNS_PREFIX = "pycniconfnode"
# The node's own address and default route (TEST-NET-1: never a real network). A routed plugin
# needs them as on any node: the source of node-to-pod packets, and proxy ARP answers only for
# addresses the node routes elsewhere.
NODE_UPLINK = ("uplink0", "192.0.2.2/24", "192.0.2.1")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class CheckResult:
    id: str
    section: str
    title: str
    verdict: Verdict
    detail: str
    seconds: float


@dataclass
class Report:
    network: str
    cni_version: str
    plugins: list[str]
    plugin_dirs: list[str]
    runtime_cni_version: str = versions.CURRENT
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, verdict: Verdict) -> int:
        return sum(r.verdict == verdict for r in self.results)

    @property
    def failed(self) -> bool:
        return self.count(Verdict.FAIL) > 0

    def verdict(self, check_id: str) -> CheckResult:
        return next(r for r in self.results if r.id == check_id)

    def summary(self) -> str:
        return (
            f"{'FAILED' if self.failed else 'OK'}: {self.count(Verdict.PASS)} passed,"
            f" {self.count(Verdict.FAIL)} failed, {self.count(Verdict.NOT_APPLICABLE)} not"
            f" applicable ({len(self.results)} checks, {self.seconds:.1f}s)"
        )


def run_suite(
    plugin_dirs: Sequence[str],
    netconf: Mapping[str, Any],
    *,
    only: Sequence[str] = (),
    ifname: str = "eth0",
    timeout: float = 30.0,
    extra_env: Mapping[str, str] | None = None,
    capability_args: Mapping[str, Any] | None = None,
    progress: Callable[[CheckResult], None] | None = None,
    runtime_cni_version: str = versions.CURRENT,
) -> Report:
    """Run the selected checks (all by default) against the plugins in `plugin_dirs` with
    `netconf`. Plugins get CNI_* and `extra_env` (default: PATH, as a runtime passes its own
    environment; Go plugins that run iptables need it); every ADD, CHECK and DEL gets
    `capability_args` (runtimeConfig for the plugins that declare those capabilities) and
    containerd's CNI_ARGS (IgnoreUnknown=1, K8S_POD_NAMESPACE, K8S_POD_NAME, ...).

    `runtime_cni_version` is the newest version the runtime's libcni knows: below 1.1.0 the
    suite acts as libcni before 1.2 (containerd 1.6/1.7, CRI-O before 1.31) -- it ignores
    `cniVersions`, sends `cniVersion` and fails an ADD whose result is newer than that
    version; from 1.1.0 it selects from `cniVersions` as libcni 1.2+ does."""
    checks = select(only)
    env = (
        dict(extra_env) if extra_env is not None else {"PATH": os.environ.get("PATH", DEFAULT_PATH)}
    )
    report = empty_report(plugin_dirs, netconf, runtime_cni_version)
    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="pycni-conformance-"))
    node = new_node()
    try:
        _install_fail_plugin(work_dir / "bin")
        suite = Suite(
            list(plugin_dirs),
            dict(netconf),
            node,
            work_dir,
            ifname,
            timeout,
            env,
            dict(capability_args or {}),
            max_version=runtime_cni_version,
            reads_cni_versions=reads_cni_versions(runtime_cni_version),
            new_node=new_node,
        )
        for check in checks:
            result = _run_one(suite, check)
            report.results.append(result)
            if progress is not None:
                progress(result)
    finally:
        node.delete()
        shutil.rmtree(work_dir, ignore_errors=True)
        report.seconds = time.monotonic() - started
    return report


def empty_report(
    plugin_dirs: Sequence[str],
    netconf: Mapping[str, Any],
    runtime_cni_version: str = versions.CURRENT,
) -> Report:
    """The report of a run not started yet (NetconfError for a config libcni would refuse)."""
    network = load_network(netconf, runtime_cni_version, reads_cni_versions(runtime_cni_version))
    plugins = [str(p["type"]) for p in network.plugins]
    return Report(
        network.name, network.cni_version, plugins, list(plugin_dirs), runtime_cni_version
    )


def reads_cni_versions(runtime_cni_version: str) -> bool:
    """libcni learnt `cniVersions` in 1.2, its first release at spec 1.1.0."""
    return versions.at_least(runtime_cni_version, "1.1.0")


def _run_one(suite: Suite, check: Check) -> CheckResult:
    started = time.monotonic()
    scope = Scope(suite, check.id)
    try:
        try:
            verdict, detail = Verdict.PASS, check.run(scope)
        except CheckFailed as err:
            verdict, detail = Verdict.FAIL, str(err)
        except NotApplicable as err:
            verdict, detail = Verdict.NOT_APPLICABLE, str(err)
        except PluginError as err:  # a plugin failed where it must succeed
            verdict, detail = Verdict.FAIL, str(err)
        except Exception as err:  # the runtime refused something, or the harness broke
            verdict, detail = Verdict.FAIL, f"{type(err).__name__}: {err}"
    finally:
        leftovers = scope.cleanup()
    if leftovers and verdict == Verdict.PASS:
        detail += f" (cleanup: {'; '.join(leftovers)})"
    return CheckResult(
        check.id, check.section, check.title, verdict, detail, time.monotonic() - started
    )


def new_node() -> netns_mod.Netns:
    """A node namespace: loopback up, and an uplink with the node's address and default route.
    The caller deletes it."""
    node = netns_mod.create(NODE_NETNS_PREFIX)
    try:
        node.ip("link", "set", "lo", "up")
        _add_uplink(node)
    except BaseException:
        node.delete()
        raise
    return node


def _add_uplink(node: netns_mod.Netns) -> None:
    """A veth pair inside the node (nothing outside is reachable): `uplink0` with the node's
    address and the default route through it."""
    name, address, gateway = NODE_UPLINK
    node.ip("link", "add", name, "type", "veth", "peer", "name", "uplink1")
    node.ip("addr", "add", address, "dev", name)
    node.ip("link", "set", "uplink1", "up")
    node.ip("link", "set", name, "up")
    node.ip("route", "add", "default", "via", gateway, "dev", name)


def _install_fail_plugin(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FAIL_PLUGIN
    path.write_text(FAIL_PLUGIN_SOURCE.replace("@PYTHON@", os.path.realpath(sys.executable)))
    path.chmod(0o755)


# --- reporting --------------------------------------------------------------------------------

_COLOURS = {
    Verdict.PASS: "\033[32m",
    Verdict.FAIL: "\033[1;31m",
    Verdict.NOT_APPLICABLE: "\033[33m",
}
_RESET = "\033[0m"
_DETAIL_WIDTH = 90


def verdict_label(verdict: Verdict, colour: bool) -> str:
    label = f"{verdict.value.upper():<4}"
    return f"{_COLOURS[verdict]}{label}{_RESET}" if colour else label


def format_line(result: CheckResult, colour: bool = False) -> str:
    detail = (
        result.detail
        if len(result.detail) <= _DETAIL_WIDTH
        else result.detail[: _DETAIL_WIDTH - 3] + "..."
    )
    return f"{verdict_label(result.verdict, colour)}  {result.id:<26} {detail}"


def render_header(report: Report) -> str:
    return "\n".join(
        [
            f"network '{report.network}', cniVersion {report.cni_version}, plugins"
            f" {' -> '.join(report.plugins)} (from {':'.join(report.plugin_dirs)})"
            + _runtime_note(report),
            "",
            f"{'':<4}  {'check':<26} {'what was seen'}",
        ]
    )


def _runtime_note(report: Report) -> str:
    if report.runtime_cni_version == versions.CURRENT:
        return ""
    reads = "reads" if reads_cni_versions(report.runtime_cni_version) else "ignores"
    return f"; as a runtime at {report.runtime_cni_version} ({reads} cniVersions)"


def render_table(report: Report, colour: bool = False) -> str:
    rows = [format_line(r, colour) for r in report.results]
    return "\n".join([render_header(report), *rows, "", report.summary()])


def render_failures(report: Report) -> str:
    """Every failure in full, with its spec section (the table clips long details)."""
    return "\n".join(
        f"{r.id} ({r.section}): {r.detail}" for r in report.results if r.verdict == Verdict.FAIL
    )


def as_json(report: Report) -> JSONObject:
    return {
        "network": report.network,
        "cniVersion": report.cni_version,
        "plugins": report.plugins,
        "pluginDirs": report.plugin_dirs,
        "runtimeCniVersion": report.runtime_cni_version,
        "seconds": round(report.seconds, 3),
        "summary": {v.value: report.count(v) for v in Verdict},
        "checks": [
            {**asdict(r), "verdict": r.verdict.value, "seconds": round(r.seconds, 3)}
            for r in report.results
        ],
    }


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(as_json(report), indent=2) + "\n")


def write_junit(report: Report, path: Path) -> None:
    """JUnit XML: one testcase per check; fail -> <failure>, n/a -> <skipped>."""
    suite = ET.Element(
        "testsuite",
        name=f"cni-conformance.{report.network}",
        tests=str(len(report.results)),
        failures=str(report.count(Verdict.FAIL)),
        errors="0",
        skipped=str(report.count(Verdict.NOT_APPLICABLE)),
        time=f"{report.seconds:.3f}",
    )
    for r in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"cni-conformance.{report.network}",
            name=r.id,
            time=f"{r.seconds:.3f}",
        )
        if r.verdict == Verdict.FAIL:
            ET.SubElement(
                case, "failure", message=r.detail
            ).text = f"{r.section}: {r.title}\n{r.detail}"
        elif r.verdict == Verdict.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=r.detail)
        ET.SubElement(case, "system-out").text = f"{r.section}: {r.title}\n{r.detail}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
