"""Run Kubernetes' own e2e network specs (e2e.test from the v1.20.2 tree) against the lane.

`packaging/k8s.sh e2e [--focus RE] [--skip RE]` runs the cached e2e.test inside the lane's
underlay network namespace (the API server listens only there) against build/k8s/kubeconfig,
with `--provider=local`, JUnit into build/k8s/e2e/ and the full output in build/k8s/e2e/e2e.log,
then prints one table: every spec that passed, failed (with its failure's first line) or was
skipped - by the lane's default skips (each with its reason, below), by the spec itself at run
time (with the message it gave), or by the user's --skip. Specs outside the focus are counted,
not listed. Exit status 1 when any spec failed, when e2e.test failed without a report, or when
nothing ran at all (a focus that matches nothing is a mistake, not a pass).

The default focus is `[sig-network]` and the HostPort specs (`[sig-scheduling]
SchedulerPredicates ... hostPort`). The default skips name what this lane does not have; a
default skip is lifted when the user's --focus names its keyword (`--focus NetworkPolicy` runs the
NetworkPolicy specs), or with --no-default-skips.
"""

from __future__ import annotations

import argparse
import html
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the network specs, and the two HostPort Conformance specs (they live under sig-scheduling)
DEFAULT_FOCUS = r"\[sig-network\]|SchedulerPredicates .*hostPort"
REPORT_DIR = Path("build/k8s/e2e")


@dataclass(frozen=True)
class DefaultSkip:
    """Specs the lane cannot run: `pattern` (a Go/Python regex over the spec's full name)."""

    pattern: str
    reason: str
    lifted_by: str  # a --focus containing this text runs these specs after all


DEFAULT_SKIPS: tuple[DefaultSkip, ...] = (
    DefaultSkip(
        r"\[Disruptive\]",
        "reboots, partitions or restarts nodes over SSH; the lane's nodes have no SSH",
        "Disruptive",
    ),
    DefaultSkip(
        r"\[Feature:(Ingress|IngressScale|NEG|kubemci|Example)\]",
        "needs a cloud ingress controller / load balancer or is an example",
        "Ingress",
    ),
    DefaultSkip(
        r"LoadBalancer|[Ll]oad ?balancer|ESIPP|Firewall rule",
        "needs a cloud load balancer: the lane has no LoadBalancer controller, and the specs that "
        "do not skip themselves wait up to 20 minutes for an ingress address that never comes",
        "LoadBalancer",
    ),
    DefaultSkip(
        r"\[Feature:(SCTP|SCTPConnectivity)\]",
        "SCTP: pycni's plugins and this lane carry TCP and UDP only",
        "SCTP",
    ),
    DefaultSkip(
        r"\[Feature:IPv6DualStack",
        "dual-stack: the lane's cluster is IPv4-only",
        "DualStack",
    ),
    DefaultSkip(
        r"\[Feature:NoSNAT\]",
        "needs the NoSNAT feature set up by a cloud provider",
        "NoSNAT",
    ),
    DefaultSkip(
        r"\[sig-network\] DNS|\[Feature:.*DNS",
        "the DNS specs' querier pods run image jessie-dnsutils (test/e2e/network/dns_common.go), "
        "which the lane does not build",
        "DNS",
    ),
    DefaultSkip(
        r"\[Feature:Networking-IPv[46]\]",
        "needs Internet access from pods; the lane has none by design",
        "Networking-IPv",
    ),
    DefaultSkip(
        r"should set TCP CLOSE_WAIT timeout|should resolve connection reset issue #74839",
        "runs image debian-iptables / regression-issue-74839, which the lane does not build",
        "CLOSE_WAIT",
    ),
    DefaultSkip(
        r"\[sig-network\] (Networking IPerf|Network Performance)|iperf",
        "throughput benchmark, not a conformance check; needs more nodes and time than the lane",
        "IPerf",
    ),
    DefaultSkip(
        r"NetworkPolicy",
        "long (about 30 specs, minutes each); run with --focus NetworkPolicy on a cluster whose "
        "pycni agent enforces NetworkPolicy",
        "NetworkPolicy",
    ),
)


@dataclass(frozen=True)
class Spec:
    name: str
    status: str  # "passed" | "failed" | "skipped"
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class Row:
    status: str  # "passed" | "failed" | "skipped (lane)" | "skipped (spec)" | "skipped (--skip)"
    name: str
    seconds: float
    detail: str


# Added when the cluster has no DNS (no Service kube-system/kube-dns): these specs reach a
# Service by name first (e2eservice.TestJig.CheckServiceReachability, `nc SERVICE PORT`).
NO_DNS_SKIP = DefaultSkip(
    r"session affinity (timeout )?work for (service with type|NodePort)|"
    r"should be able to switch session affinity for (service with type|NodePort)|"
    r"hairpin back to themselves through services|"
    r"create a functioning NodePort service|update service type to NodePort listening on same "
    r"port number but different protocols|change the type from (ExternalName|ClusterIP|NodePort)"
    r" to",
    "reaches the Service by its DNS name (CheckServiceReachability) and this cluster has no "
    "Service kube-system/kube-dns",
    "ServiceName",
)


def active_skips(
    focus: str, use_defaults: bool = True, cluster_dns: bool = True
) -> list[DefaultSkip]:
    if not use_defaults:
        return []
    candidates = [*DEFAULT_SKIPS, *(() if cluster_dns else (NO_DNS_SKIP,))]
    return [skip for skip in candidates if skip.lifted_by.lower() not in focus.lower()]


def combined_skip(skips: Sequence[DefaultSkip], user_skip: str | None) -> str:
    parts = [skip.pattern for skip in skips]
    if user_skip:
        parts.append(user_skip)
    return "|".join(f"(?:{part})" for part in parts)


def parse_junit(paths: Iterable[Path]) -> list[Spec]:
    """The specs in ginkgo v1 JUnit files (`<testcase>` with `<failure>` or `<skipped/>`)."""
    specs: list[Spec] = []
    for path in paths:
        root = ET.parse(path).getroot()
        for case in root.iter("testcase"):
            name = case.get("name", "")
            seconds = float(case.get("time", "0") or 0)
            failure = case.find("failure")
            if failure is None:
                failure = case.find("error")
            if failure is not None:
                message = (failure.text or failure.get("message") or "").strip()
                specs.append(Spec(name, "failed", seconds, message))
            elif case.find("skipped") is not None:
                skipped = case.find("skipped")
                message = skipped.get("message", "") if skipped is not None else ""
                specs.append(Spec(name, "skipped", seconds, message))
            else:
                specs.append(Spec(name, "passed", seconds))
    return specs


_LOCATION = re.compile(r"^\s*\S+\.go:\d+\s*$")
_SEPARATOR = "------------------------------"
_MARKER = re.compile(r" \[(It|BeforeEach|JustBeforeEach|AfterEach|Measurement)\]$")


def runtime_skip_reasons(log_text: str) -> dict[str, str]:
    """Map each runtime-skipped spec's full name to the message it skipped with.

    Ginkgo v1 prints, for a spec that called Skip(): `S [SKIPPING] ... [n seconds]`, each
    component text on a line followed by its code location (the skipping component marked
    `[It]`, `[BeforeEach]`...), a blank line, the message (maybe several lines), a blank line
    and the message's location.
    """
    reasons: dict[str, str] = {}
    for block in log_text.split(_SEPARATOR):
        lines = block.strip("\n").splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("S [SKIPPING]")]
        if not starts:
            continue
        rest = lines[starts[0] + 1 :]
        texts: list[str] = []
        index = 0
        while index + 1 < len(rest) and rest[index].strip() and _LOCATION.match(rest[index + 1]):
            texts.append(_MARKER.sub("", rest[index].strip()))
            index += 2
        message = [line.strip() for line in rest[index:] if line.strip()]
        if message and _LOCATION.match(message[-1]):
            message.pop()
        if texts and message:
            reasons[" ".join(texts)] = " ".join(message)
    return reasons


def classify(
    specs: Sequence[Spec],
    *,
    focus: str,
    skips: Sequence[DefaultSkip],
    user_skip: str | None,
    runtime_reasons: dict[str, str] | None = None,
) -> tuple[list[Row], int]:
    """Rows for the table and the number of specs outside the focus (counted, not listed)."""
    focus_re = re.compile(focus)
    user_re = re.compile(user_skip) if user_skip else None
    reasons = runtime_reasons or {}
    rows: list[Row] = []
    not_selected = 0
    for spec in specs:
        if spec.status == "passed":
            rows.append(Row("passed", spec.name, spec.seconds, ""))
            continue
        if spec.status == "failed":
            rows.append(Row("failed", spec.name, spec.seconds, first_line(spec.message)))
            continue
        if not focus_re.search(spec.name):
            not_selected += 1
            continue
        lane = next((skip for skip in skips if re.search(skip.pattern, spec.name)), None)
        if lane is not None:
            rows.append(Row("skipped (lane)", spec.name, spec.seconds, lane.reason))
        elif user_re is not None and user_re.search(spec.name):
            rows.append(Row("skipped (--skip)", spec.name, spec.seconds, f"--skip {user_skip}"))
        else:
            reason = (
                spec.message
                or reasons.get(spec.name)
                or "skipped by the spec at run time (see e2e.log)"
            )
            rows.append(Row("skipped (spec)", spec.name, spec.seconds, reason))
    return rows, not_selected


_ERROR_STRING = re.compile(r'^\s*s: "(.*)",?\s*$')


def first_line(message: str) -> str:
    """The gist of a ginkgo failure: the wrapped error's text when gomega printed one
    (`s: "..."`), else the first line that is not a code location; then the location."""
    lines = [html.unescape(line.strip()) for line in message.splitlines() if line.strip()]
    location = next((line for line in lines if _LOCATION.match(line)), "")
    gist = next(
        (match.group(1) for line in lines if (match := _ERROR_STRING.match(line))),
        next((line for line in lines if not _LOCATION.match(line)), ""),
    )
    where = f" ({location.rsplit('/', 1)[-1]})" if location else ""
    return (gist[:200] + where) if gist else (location or "(no failure message)")


ORDER = ("failed", "passed", "skipped (spec)", "skipped (lane)", "skipped (--skip)")


def render(rows: Sequence[Row], not_selected: int, skips: Sequence[DefaultSkip]) -> str:
    """The summary: one line per spec, grouped by outcome, then counts and the lane's skips."""
    out: list[str] = []
    ordered = sorted(rows, key=lambda row: (ORDER.index(row.status), row.name))
    width = max((len(row.status) for row in ordered), default=6)
    for row in ordered:
        out.append(f"{row.status:<{width}}  {row.seconds:6.1f}s  {row.name}")
        if row.detail:
            out.append(f"{'':<{width}}           -> {row.detail}")
    counts = {status: sum(1 for row in rows if row.status == status) for status in ORDER}
    out.append("")
    out.append(
        "e2e summary: "
        + ", ".join(f"{counts[status]} {status}" for status in ORDER)
        + f"; {not_selected} outside the focus"
    )
    if skips:
        out.append("default skips of this lane (lift one with a --focus naming its keyword):")
        for skip in skips:
            out.append(f"  {skip.pattern}  [{skip.lifted_by}]: {skip.reason}")
    return "\n".join(out)


def summary_markdown(rows: Sequence[Row]) -> str:
    """The same table as Markdown, for the README and docs (build/k8s/e2e/summary.md)."""
    lines = ["| outcome | spec | detail |", "|---|---|---|"]
    for row in sorted(rows, key=lambda row: (ORDER.index(row.status), row.name)):
        name, detail = (text.replace("|", "\\|") for text in (row.name, row.detail))
        lines.append(f"| {row.status} | {name} | {detail} |")
    return "\n".join(lines) + "\n"


def e2e_command(
    *,
    e2e_test: Path,
    kubectl: Path,
    kubeconfig: Path,
    report_dir: Path,
    focus: str,
    skip: str,
    nodes: int | None = None,
    repo_root: Path | None = None,
) -> list[str]:
    argv = [
        str(e2e_test),
        f"--kubeconfig={kubeconfig}",
        "--provider=local",
        f"--kubectl-path={kubectl}",
        f"--report-dir={report_dir}",
        f"--ginkgo.focus={focus}",
        "--ginkgo.noColor",
        "--disable-log-dump",
        "--minStartupPods=0",
        "--node-os-distro=debian",
    ]
    if skip:
        argv.append(f"--ginkgo.skip={skip}")
    if nodes is not None:
        argv.append(f"--num-nodes={nodes}")
    if repo_root is not None:
        argv.append(f"--repo-root={repo_root}")
    return argv


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="packaging/k8s.sh e2e", description="Kubernetes' e2e network specs against the lane"
    )
    parser.add_argument("--focus", default=DEFAULT_FOCUS, help="ginkgo focus regex")
    parser.add_argument("--skip", default=None, help="ginkgo skip regex (added to the defaults)")
    parser.add_argument(
        "--no-default-skips", action="store_true", help="run also what the lane cannot do"
    )
    parser.add_argument(
        "--timeout", type=float, default=3 * 3600, help="seconds before e2e.test is stopped"
    )
    parser.add_argument(
        "--no-internet-standin",
        action="store_true",
        help="no stand-in for e2e.test's own Internet pre-check (the Networking specs then fail)",
    )
    parser.add_argument(
        "--report-dir", type=Path, default=REPORT_DIR, help=f"default: {REPORT_DIR}"
    )
    parser.add_argument(
        "--kubeconfig", type=Path, default=None, help="default: the lane's build/k8s/kubeconfig"
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    from pycni.lab.k8s import build

    args = parse_args(argv)
    try:
        cluster = importlib.import_module("pycni.lab.k8s.cluster")
    except ImportError as error:
        print(f"k8s e2e: the cluster module is not available ({error})", file=sys.stderr)
        return 2
    kubeconfig = (args.kubeconfig or Path(cluster.KUBECONFIG)).resolve()
    if not kubeconfig.is_file():
        print(f"k8s e2e: no {kubeconfig}: run `packaging/k8s.sh up` first", file=sys.stderr)
        return 2
    cluster_dns = has_cluster_dns(cluster, build.binary("kubectl"), kubeconfig)
    if not cluster_dns:
        print("==> k8s e2e: no Service kube-system/kube-dns: specs that need DNS are skipped")
    skips = active_skips(
        args.focus, use_defaults=not args.no_default_skips, cluster_dns=cluster_dns
    )
    skip = combined_skip(skips, args.skip)
    report_dir = args.report_dir.resolve()
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    tree = build.source_tree()
    command = e2e_command(
        e2e_test=build.binary("e2e.test"),
        kubectl=build.binary("kubectl"),
        kubeconfig=kubeconfig,
        report_dir=report_dir,
        focus=args.focus,
        skip=skip,
        repo_root=tree if tree.is_dir() else None,
    )
    full = cluster.underlay_command(command)
    log = report_dir / "e2e.log"
    standin = None
    env: dict[str, str] = {}
    if not args.no_internet_standin:
        standin = start_internet_standin(cluster, report_dir / "internet-standin.log")
        env = standin.env()
        print(
            f"==> k8s e2e: e2e.test's Internet pre-check goes to the lane's stand-in "
            f"(HTTP_PROXY=http://127.0.0.1:{standin.port} in the underlay namespace)"
        )
    print(f"==> k8s e2e: focus {args.focus}; output in {log}", flush=True)
    started = time.monotonic()
    try:
        returncode = _run_logged(full, log, args.timeout, env)
    finally:
        if standin is not None:
            standin.stop()
    elapsed = time.monotonic() - started
    timed_out = elapsed >= args.timeout
    if timed_out:
        print(
            f"k8s e2e: TIMEOUT: e2e.test was stopped after {args.timeout:.0f}s; the specs it had "
            "not reached are missing from the table below (the run counts as failed)",
            file=sys.stderr,
        )
    status = report(
        report_dir,
        returncode=returncode,
        elapsed=elapsed,
        focus=args.focus,
        skips=skips,
        user_skip=args.skip,
        standin=standin,
    )
    return 1 if timed_out else status


def report(
    report_dir: Path,
    *,
    returncode: int,
    elapsed: float,
    focus: str,
    skips: Sequence[DefaultSkip],
    user_skip: str | None,
    standin: InternetStandin | None,
) -> int:
    """Print the table of one run from its JUnit and log; the exit status of `e2e`."""
    log = report_dir / "e2e.log"
    junit = sorted(report_dir.glob("junit_*.xml"))
    if not junit:
        print(
            f"k8s e2e: e2e.test exited {returncode} after {elapsed:.0f}s without a JUnit report; "
            f"see {log}",
            file=sys.stderr,
        )
        return 1
    specs = parse_junit(junit)
    reasons = runtime_skip_reasons(log.read_text(errors="replace"))
    rows, not_selected = classify(
        specs, focus=focus, skips=skips, user_skip=user_skip, runtime_reasons=reasons
    )
    print(render(rows, not_selected, skips))
    if standin is not None:
        print(
            f"lane stand-in for the runner's Internet check answered {len(standin.answered())} "
            f"request(s) (e2e.test's own http.Get; pods have no Internet): {standin.log}"
        )
    (report_dir / "summary.md").write_text(summary_markdown(rows))
    print(f"e2e.test exit {returncode} after {elapsed:.0f}s; JUnit: {', '.join(map(str, junit))}")
    failed = sum(1 for row in rows if row.status == "failed")
    ran = sum(1 for row in rows if row.status in ("passed", "failed"))
    if failed or ran == 0:
        if ran == 0:
            print("k8s e2e: no spec ran (the focus matched nothing runnable)", file=sys.stderr)
        return 1
    return 0 if returncode == 0 else 1


# e2e.test's "[sig-network] Networking" specs (network/networking.go:81) start with a pre-test
# assertion about the test runner, not the cluster: `http.Get("http://google.com")` from the
# e2e.test process must answer 200. The lane has no Internet by design, so e2e.test gets
# HTTP_PROXY pointing at this stand-in inside the underlay namespace; NO_PROXY keeps every
# cluster address (nodes, pods, Services) direct, and HTTPS (the API server) never uses
# HTTP_PROXY. Each request it answers is logged to internet-standin.log and counted in the
# summary. Pods get no Internet from it: the specs that need that stay skipped.
STANDIN_SCRIPT = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"pycni lane: stand-in for the e2e runner's Internet check\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        sys.stderr.write("ANSWERED " + (fmt % args) + "\\n")
        sys.stderr.flush()
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""
NO_PROXY = "127.0.0.1,localhost,172.18.0.0/16,10.0.0.0/8,.svc,.cluster.local"


@dataclass
class InternetStandin:
    process: subprocess.Popen[str]
    port: int
    log: Path

    def env(self) -> dict[str, str]:
        return {"HTTP_PROXY": f"http://127.0.0.1:{self.port}", "NO_PROXY": NO_PROXY}

    def answered(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if line.startswith("ANSWERED ")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_internet_standin(cluster: Any, log: Path) -> InternetStandin:
    stream = log.open("w")
    process = subprocess.Popen(
        cluster.underlay_command([sys.executable, "-c", STANDIN_SCRIPT]),
        stdout=subprocess.PIPE,
        stderr=stream,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    stream.close()
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        process.wait()
        raise RuntimeError(f"the Internet stand-in did not start: {log.read_text()[-500:]}")
    return InternetStandin(process, int(line), log)


def has_cluster_dns(cluster: Any, kubectl: Path, kubeconfig: Path) -> bool:
    """Whether the cluster has the Service kube-system/kube-dns (the lane's dns.py or any)."""
    argv = [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", "kube-system"]
    argv += ["get", "service", "kube-dns", "-o", "name"]
    result = subprocess.run(
        cluster.underlay_command(argv), capture_output=True, text=True, timeout=60, check=False
    )
    return result.returncode == 0 and "kube-dns" in result.stdout


def progress_line(line: str) -> str | None:
    """What the console shows of one line of e2e.test's output (None: nothing)."""
    start = line.find('{"msg":')
    if start >= 0:
        try:
            return str(json.loads(line[start:]).get("msg", ""))
        except ValueError:
            return None
    if line.startswith(("S [SKIPPING]", "• Failure", "Ran ", "FAIL", "SUCCESS")):
        return line.rstrip()
    return None


def _run_logged(
    argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> int:
    """Run argv with its output to the terminal and `log`; stop it (by PID) after `timeout`."""
    with log.open("w") as stream:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env={**os.environ, "HOME": os.environ.get("HOME", "/root"), **(env or {})},
        )
        timer = threading.Timer(timeout, _stop, (process, timeout))
        timer.start()
        assert process.stdout is not None
        try:
            for line in process.stdout:
                stream.write(line)
                shown = progress_line(line)
                if shown:
                    print(shown, flush=True)
        finally:
            timer.cancel()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode


def _stop(process: subprocess.Popen[str], timeout: float) -> None:
    print(f"k8s e2e: timeout after {timeout:.0f}s; stopping e2e.test", flush=True)
    process.terminate()
