"""The e2e runner's JUnit parsing, classification and summary table (no cluster needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pycni.lab.k8s import e2e

FIXTURES = Path(__file__).parent / "fixtures"
NODEPORT = "[sig-network] Services should be able to create a functioning NodePort service"
TYPE_CHANGE = (
    "[sig-network] Services should be able to change the type and ports of a service [Slow] "
    "[DisabledForLargeClusters]"
)


def specs() -> list[e2e.Spec]:
    return e2e.parse_junit([FIXTURES / "junit_01.xml"])


def test_parse_junit_reads_every_outcome() -> None:
    parsed = {spec.name: spec for spec in specs()}
    assert len(parsed) == 6
    assert parsed[NODEPORT + " [Conformance]"].status == "failed"
    assert "service is not reachable within 2m0s" in parsed[NODEPORT + " [Conformance]"].message
    assert parsed[TYPE_CHANGE].status == "skipped"
    assert parsed[TYPE_CHANGE].seconds == 1.204
    passed = [spec for spec in parsed.values() if spec.status == "passed"]
    assert [spec.name for spec in passed] == [
        "[sig-network] Networking Granular Checks: Pods should function for intra-pod "
        "communication: http [NodeConformance] [Conformance]"
    ]


def test_runtime_skip_reason_from_the_ginkgo_log() -> None:
    reasons = e2e.runtime_skip_reasons((FIXTURES / "e2e-skip.log").read_text())
    assert reasons == {TYPE_CHANGE: "Only supported for providers [gce gke aws] (not local)"}


def test_classify_gives_every_selected_skip_its_reason() -> None:
    skips = e2e.active_skips(e2e.DEFAULT_FOCUS)
    rows, not_selected = e2e.classify(
        specs(),
        focus=e2e.DEFAULT_FOCUS,
        skips=skips,
        user_skip="serve a basic endpoint",
        runtime_reasons=e2e.runtime_skip_reasons((FIXTURES / "e2e-skip.log").read_text()),
    )
    by_name = {row.name: row for row in rows}
    assert not_selected == 1  # the [sig-storage] spec: counted, not listed
    assert by_name[NODEPORT + " [Conformance]"].status == "failed"
    assert by_name[NODEPORT + " [Conformance]"].detail == (
        "service is not reachable within 2m0s timeout on endpoint nodeport-test:80 over TCP "
        "protocol (service.go:1240)"
    )
    disruptive = by_name[
        "[sig-network] Services should work after restarting apiserver [Disruptive]"
    ]
    assert disruptive.status == "skipped (lane)"
    assert "SSH" in disruptive.detail
    assert by_name[TYPE_CHANGE].status == "skipped (spec)"
    assert by_name[TYPE_CHANGE].detail.startswith("Only supported for providers")
    basic = by_name["[sig-network] Services should serve a basic endpoint from pods  [Conformance]"]
    assert basic.status == "skipped (--skip)"


def test_render_lists_failures_first_and_states_the_default_skips() -> None:
    skips = e2e.active_skips(e2e.DEFAULT_FOCUS)
    rows, not_selected = e2e.classify(specs(), focus=e2e.DEFAULT_FOCUS, skips=skips, user_skip=None)
    table = e2e.render(rows, not_selected, skips)
    lines = table.splitlines()
    assert lines[0].startswith("failed") and NODEPORT in lines[0]
    assert "service is not reachable" in lines[1] and "(service.go:1240)" in lines[1]
    # the fixture's unexplained skip with no time (not run) still counts as the spec's own
    assert (
        "e2e summary: 1 failed, 1 passed, 2 skipped (spec), 1 skipped (lane), "
        "0 skipped (--skip); 1 outside the focus" in table
    )
    for skip in skips:
        assert skip.reason in table
    markdown = e2e.summary_markdown(rows)
    assert markdown.count("\n") == len(rows) + 2


def test_a_focus_naming_a_default_skip_lifts_it() -> None:
    patterns = [skip.pattern for skip in e2e.active_skips("NetworkPolicy")]
    assert "NetworkPolicy" not in patterns
    assert any("Disruptive" in pattern for pattern in patterns)
    assert e2e.active_skips(e2e.DEFAULT_FOCUS, use_defaults=False) == []


def test_combined_skip_is_one_alternation() -> None:
    skips = [e2e.DefaultSkip("a|b", "r", "x"), e2e.DefaultSkip("c", "r", "y")]
    assert e2e.combined_skip(skips, "d") == "(?:a|b)|(?:c)|(?:d)"
    assert e2e.combined_skip([], None) == ""


def test_e2e_command_carries_the_lane_flags(tmp_path: Path) -> None:
    argv = e2e.e2e_command(
        e2e_test=tmp_path / "e2e.test",
        kubectl=tmp_path / "kubectl",
        kubeconfig=tmp_path / "kubeconfig",
        report_dir=tmp_path / "e2e",
        focus="Granular",
        skip="",
    )
    assert argv[0] == str(tmp_path / "e2e.test")
    assert "--provider=local" in argv
    assert f"--report-dir={tmp_path / 'e2e'}" in argv
    assert "--ginkgo.focus=Granular" in argv
    assert not any(arg.startswith("--ginkgo.skip") for arg in argv)


def test_without_cluster_dns_the_specs_that_need_it_are_skipped_with_the_reason() -> None:
    with_dns = e2e.active_skips(e2e.DEFAULT_FOCUS, cluster_dns=True)
    without = e2e.active_skips(e2e.DEFAULT_FOCUS, cluster_dns=False)
    assert e2e.NO_DNS_SKIP not in with_dns and e2e.NO_DNS_SKIP in without
    import re

    pattern = re.compile(e2e.NO_DNS_SKIP.pattern)
    for name in (
        "[sig-network] Services should have session affinity work for service with type "
        "clusterIP [LinuxOnly] [Conformance]",
        "[sig-network] Services should have session affinity timeout work for NodePort service "
        "[LinuxOnly] [Conformance]",
        "[sig-network] Services should have session affinity timeout work for service with type "
        "clusterIP [LinuxOnly] [Conformance]",
        "[sig-network] Services should be able to switch session affinity for NodePort service "
        "[LinuxOnly] [Conformance]",
        "[sig-network] Services should allow pods to hairpin back to themselves through services",
        "[sig-network] Services should be able to create a functioning NodePort service "
        "[Conformance]",
        "[sig-network] Services should be able to change the type from ExternalName to "
        "ClusterIP [Conformance]",
    ):
        assert pattern.search(name), name
    assert not pattern.search(
        "[sig-network] Services should serve a basic endpoint from pods  [Conformance]"
    )


def test_progress_line_shows_the_spec_verdicts_only() -> None:
    assert (
        e2e.progress_line('•{"msg":"PASSED [sig-network] X","total":68,"completed":2}\n')
        == "PASSED [sig-network] X"
    )
    assert e2e.progress_line("S [SKIPPING] [0.028 seconds]\n") == "S [SKIPPING] [0.028 seconds]"
    assert e2e.progress_line("Dec  2 14:19:36.108: INFO: POD  NODE  PHASE\n") is None


STANDIN_CHILD = """
import json, subprocess, sys, urllib.request
from pathlib import Path
from pycni.lab.k8s import e2e
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
class Cluster:
    @staticmethod
    def underlay_command(argv):
        return list(argv)
standin = e2e.start_internet_standin(Cluster, Path(sys.argv[1]))
env = standin.env()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": env["HTTP_PROXY"]}))
with opener.open("http://google.com", timeout=10) as response:
    out = {"status": response.status, "body": response.read().decode(), "env": env}
standin.stop()
out["answered"] = standin.answered()
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace (unshare --net)")
def test_the_internet_standin_answers_the_runners_check_and_logs_it(tmp_path: Path) -> None:
    run = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", STANDIN_CHILD, str(tmp_path / "standin.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == 200
    assert "stand-in for the e2e runner's Internet check" in out["body"]
    assert "172.18.0.0/16" in out["env"]["NO_PROXY"] and "10.0.0.0/8" in out["env"]["NO_PROXY"]
    assert len(out["answered"]) == 1 and "GET http://google.com" in out["answered"][0]


def test_first_line_without_an_error_string_takes_the_first_message_line() -> None:
    message = "/x/test/e2e/network/service.go:1025\nExpected\n    <bool>: false\nto be true"
    assert e2e.first_line(message) == "Expected (service.go:1025)"
    assert e2e.first_line("") == "(no failure message)"
