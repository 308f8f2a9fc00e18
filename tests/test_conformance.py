"""pycni conformance: the harness, proved right against plugins whose verdicts we know.

- The Go reference plugins (bridge and ptp, with host-local) pass every check they can take;
  GC and STATUS are not applicable to them (their VERSION stops at 1.0.0) and never pass.
- Broken plugins -- small wrappers around a working plugin that break one rule each -- are
  each caught by the check that owns that rule (and not by the ones that do not).
- pycni's own frozen plugins pass every check.

Plus the parts that need no root: check selection, result validation, tiny ranges, reports.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pycni import cli
from pycni.conformance import checks, runner
from pycni.conformance.checks import Verdict
from pycni.conformance.runner import CheckResult, Report, run_suite
from tests.conftest import REPO, unavailable

REFERENCE_ONLY_TO_1_0 = {"gc.unlisted", "gc.empty-list", "status.ready"}
CORE = [
    "add.result-shape",
    "add.result-matches-netns",
    "add.duplicate",
    "check.after-add",
    "check.removed-address",
    "del.twice",
    "del.netns-gone",
    "del.empty-netns",
    "del.no-prev-result",
    "del.releases",
]


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        unavailable("the conformance suite creates network namespaces: needs root")


def reference_conf(plugin: str, subnet: str) -> dict[str, Any]:
    main: dict[str, Any] = {"type": plugin, "ipMasq": True}
    if plugin == "bridge":
        main.update(bridge="cni0", isGateway=True)
    main["ipam"] = {
        "type": "host-local",
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    return {"cniVersion": "1.0.0", "name": f"ref-{plugin}", "plugins": [main]}


def verdicts(report: Report) -> dict[str, Verdict]:
    return {r.id: r.verdict for r in report.results}


def assert_no_leftover_namespaces() -> None:
    """None of the namespaces this process made for the suite is left."""
    ours = tuple(
        f"{prefix}-{os.getpid()}-" for prefix in (runner.NODE_NETNS_PREFIX, checks.POD_NETNS_PREFIX)
    )
    left = [name for name in os.listdir("/run/netns") if name.startswith(ours)]
    assert not left, f"namespaces left behind: {left}"


# --- the Go reference plugins --------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize(
    ("plugin", "subnet"), [("bridge", "10.88.0.0/24"), ("ptp", "10.89.0.0/24")]
)
def test_reference_plugins_pass_what_they_implement(
    root: None, reference: Path, plugin: str, subnet: str
) -> None:
    report = run_suite([str(reference)], reference_conf(plugin, subnet))
    print(runner.render_table(report))
    found = verdicts(report)
    assert set(found) == {c.id for c in checks.CHECKS}
    failed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert set(failed) == REFERENCE_ONLY_TO_1_0, failed
    for check_id in REFERENCE_ONLY_TO_1_0:  # host-local has no GC: never a pass
        assert found[check_id] == Verdict.NOT_APPLICABLE
        assert "1.1.0" in report.verdict(check_id).detail
    assert not report.failed
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.reference
def test_gc_is_not_applicable_when_the_plugins_stop_before_1_1_0(
    root: None, reference: Path
) -> None:
    """A 1.1.0 config: the runtime selects 1.1.0, the reference plugins do not list it."""
    conf = {**reference_conf("bridge", "10.88.0.0/24"), "cniVersion": "1.1.0"}
    report = run_suite([str(reference)], conf, only=["version.negotiation", "gc", "status"])
    found = verdicts(report)
    assert found["version.negotiation"] == Verdict.FAIL
    assert "not supported by bridge" in report.verdict("version.negotiation").detail
    for check_id in REFERENCE_ONLY_TO_1_0:
        assert found[check_id] == Verdict.NOT_APPLICABLE
        assert "VERSION lists" in report.verdict(check_id).detail


@pytest.mark.netns
@pytest.mark.reference
def test_a_single_plugin_conf_is_a_one_plugin_chain(root: None, reference: Path) -> None:
    """A `.conf` (no `plugins`), with the harness's failing plugin chained after it."""
    conflist = reference_conf("ptp", "10.92.0.0/24")
    conf = {"cniVersion": "0.4.0", "name": "single", **conflist["plugins"][0]}
    report = run_suite([str(reference)], conf, only=["add.result-shape", "chain", "check"])
    assert {r.id: r.verdict for r in report.results} == {
        "add.result-shape": Verdict.PASS,
        "chain.failed-add-cleanup": Verdict.PASS,
        "check.after-add": Verdict.PASS,
        "check.removed-address": Verdict.PASS,
    }
    assert report.verdict("add.result-shape").detail.startswith("cniVersion 0.4.0")


# --- broken plugins: each caught by the right check --------------------------------------------

# A wrapper execs the real plugin with the same environment and stdin, then breaks one rule.
BROKEN_PLUGIN = r"""#!@PYTHON@ -I
import json, os, subprocess, sys
KIND, REAL, STATE = "@KIND@", "@REAL@", "@STATE@"
command = os.environ.get("CNI_COMMAND", "")
stdin = sys.stdin.buffer.read()
attachment = os.environ.get("CNI_CONTAINERID", "") + "-" + os.environ.get("CNI_IFNAME", "")
key = os.path.join(STATE, attachment)

def real(data=stdin):
    done = subprocess.run([REAL], input=data, capture_output=True)
    sys.stderr.buffer.write(done.stderr)
    return done.returncode, done.stdout

def finish(status, out):
    sys.stdout.buffer.write(out)
    sys.exit(status)

if KIND == "prints-on-del" and command == "DEL":
    status, out = real()
    finish(status, out or b'{"deleted": true}\n')
if KIND == "fails-second-del" and command in ("ADD", "DEL"):
    if command == "DEL" and not os.path.exists(key):
        finish(1, b'{"cniVersion": "1.0.0", "code": 11, "msg": "no such attachment"}')
    status, out = real()
    if status == 0:
        open(key, "w").close() if command == "ADD" else os.unlink(key)
    finish(status, out)
if KIND == "phantom-address" and command == "ADD":
    status, out = real()
    if status == 0:
        result = json.loads(out)
        index = next(i for i, itf in enumerate(result["interfaces"]) if itf.get("sandbox"))
        result["ips"].append({"address": "192.0.2.77/32", "interface": index})
        out = json.dumps(result).encode()
    finish(status, out)
if KIND == "leaks-on-del" and command == "DEL":
    finish(0, b"")
if KIND == "error-exit-0":
    finish(0, real()[1])
if KIND == "accepts-duplicate" and command == "ADD":
    status, out = real()
    if status != 0 and os.path.exists(key):
        finish(0, open(key, "rb").read())
    if status == 0:
        open(key, "wb").write(out)
    finish(status, out)
if KIND == "check-always-ok" and command == "CHECK":
    finish(0, b"")
if KIND == "bad-version" and command == "VERSION":
    finish(0, b'{"cniVersion": "1.0.0", "supportedVersions": ["1.0"]}')
if KIND == "gc-noop" and command == "GC":
    finish(0, b"")
if KIND == "gc-ignores-valid-list" and command == "GC":
    config = json.loads(stdin)
    config["cni.dev/valid-attachments"] = config["cni.dev/attachments"] = []
    finish(*real(json.dumps(config).encode()))
finish(*real())
"""


def install_broken(directory: Path, kind: str, real: Path) -> str:
    """A plugin named `broken-<kind>` in `directory` that wraps `real`."""
    state = directory / f"state-{kind}"
    state.mkdir(parents=True, exist_ok=True)
    name = f"broken-{kind}"
    script = (
        BROKEN_PLUGIN.replace("@PYTHON@", os.path.realpath(sys.executable))
        .replace("@KIND@", kind)
        .replace("@REAL@", str(real))
        .replace("@STATE@", str(state))
    )
    path = directory / name
    path.write_text(script)
    path.chmod(0o755)
    return name


# kind -> (the check that must fail, checks of the same run that must still pass)
BROKEN_MAIN_PLUGINS = {
    "prints-on-del": ("output.silent", ["del.twice"]),
    "fails-second-del": ("del.twice", ["check.after-add"]),
    "phantom-address": ("add.result-matches-netns", ["add.result-shape"]),
    "leaks-on-del": ("del.releases", ["add.result-shape"]),
    "error-exit-0": ("error.object", ["add.result-shape"]),
    "accepts-duplicate": ("add.duplicate", ["del.twice"]),
    "check-always-ok": ("check.removed-address", ["check.after-add"]),
    "bad-version": ("version.output", ["add.result-shape"]),
}


@pytest.mark.netns
@pytest.mark.reference
@pytest.mark.parametrize("kind", sorted(BROKEN_MAIN_PLUGINS))
def test_a_broken_plugin_is_caught_by_the_right_check(
    root: None, reference: Path, tmp_path: Path, kind: str
) -> None:
    caught_by, still_passing = BROKEN_MAIN_PLUGINS[kind]
    name = install_broken(tmp_path, kind, reference / "ptp")
    conf = reference_conf("ptp", "10.90.0.0/24")
    conf["plugins"][0]["type"] = name
    report = run_suite([str(tmp_path), str(reference)], conf, only=[caught_by, *still_passing])
    found = verdicts(report)
    assert found[caught_by] == Verdict.FAIL, report.verdict(caught_by)
    for check_id in still_passing:
        assert found[check_id] == Verdict.PASS, report.verdict(check_id)
    assert report.failed
    assert_no_leftover_namespaces()


def pycni_conf(tmp_path: Path, ipam_type: str = "pycni-host-local") -> dict[str, Any]:
    """conf/examples/10-pycni-bridge.conflist with its lease store in tmp_path."""
    conf: dict[str, Any] = json.loads(
        (REPO / "conf" / "examples" / "10-pycni-bridge.conflist").read_text()
    )
    conf["plugins"][0]["ipam"].update(type=ipam_type, dataDir=str(tmp_path / "ipam"))
    return conf


@pytest.mark.netns
@pytest.mark.frozen
@pytest.mark.parametrize("kind", ["gc-noop", "gc-ignores-valid-list"])
def test_a_broken_gc_is_caught(root: None, bundle: Path, tmp_path: Path, kind: str) -> None:
    """IPAM wrappers around pycni-host-local (which implements GC), reached by pycni-bridge."""
    name = install_broken(tmp_path, kind, bundle / "pycni-host-local")
    report = run_suite(
        [str(bundle), str(tmp_path)], pycni_conf(tmp_path, name), only=["gc", "del.releases"]
    )
    found = verdicts(report)
    assert found["gc.unlisted"] == Verdict.FAIL, report.verdict("gc.unlisted")
    expected_empty = Verdict.FAIL if kind == "gc-noop" else Verdict.PASS
    assert found["gc.empty-list"] == expected_empty, report.verdict("gc.empty-list")
    assert found["del.releases"] == Verdict.PASS


# --- pycni's own plugins ----------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.frozen
def test_pycni_plugins_pass_every_check(root: None, bundle: Path, tmp_path: Path) -> None:
    report = run_suite([str(bundle)], pycni_conf(tmp_path))
    print(runner.render_table(report))
    not_passed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert not not_passed
    assert len(report.results) == len(checks.CHECKS)
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_a_config_at_1_1_0_fails_for_older_runtimes(
    root: None, bundle: Path, tmp_path: Path
) -> None:
    """What the shipped conflists said before: cniVersion 1.1.0, lower versions only listed."""
    old = {**pycni_conf(tmp_path), "cniVersion": "1.1.0"}
    report = run_suite([str(bundle)], old, only=["config.older-runtimes", "add.result-shape"])
    assert verdicts(report) == {
        "config.older-runtimes": Verdict.FAIL,
        "add.result-shape": Verdict.PASS,  # the default runtime reads cniVersions (1.1.0)
    }
    detail = report.verdict("config.older-runtimes").detail
    assert 'unsupported CNI result version "1.1.0"' in detail, detail
    assert "containerd 1.6/1.7" in detail and "set cniVersion 1.0.0 and list 1.1.0" in detail
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_the_suite_as_a_runtime_at_1_0_0(root: None, bundle: Path, tmp_path: Path) -> None:
    """--runtime-cni-version 1.0.0: cniVersions ignored, results above 1.0.0 refused."""
    shipped = pycni_conf(tmp_path)  # 1.0.0, with 1.1.0 in cniVersions
    report = run_suite([str(bundle)], shipped, runtime_cni_version="1.0.0")
    print(runner.render_table(report))
    assert report.cni_version == "1.0.0"
    assert "as a runtime at 1.0.0 (ignores cniVersions)" in runner.render_table(report)
    not_passed = {r.id for r in report.results if r.verdict != Verdict.PASS}
    assert not_passed == REFERENCE_ONLY_TO_1_0  # GC and STATUS: not at 1.0.0
    assert "cniVersion 1.0.0" in report.verdict("add.result-shape").detail

    old = {**shipped, "cniVersion": "1.1.0"}
    report = run_suite([str(bundle)], old, only=["add.result-shape"], runtime_cni_version="1.0.0")
    assert verdicts(report) == {"add.result-shape": Verdict.FAIL}
    assert 'unsupported CNI result version "1.1.0"' in report.verdict("add.result-shape").detail
    assert_no_leftover_namespaces()


@pytest.mark.netns
@pytest.mark.frozen
def test_pycni_ipip_in_never_mode_passes_every_check(
    root: None, bundle: Path, tmp_path: Path
) -> None:
    """conf/examples/10-pycni-ipip-never.conflist with no peers (a one-node cluster): the
    routed model -- /32 pods, proxy-ARP gateway, host routes -- on the harness's node."""
    conf: dict[str, Any] = json.loads(
        (REPO / "conf" / "examples" / "10-pycni-ipip-never.conflist").read_text()
    )
    plugin = conf["plugins"][0]
    plugin.pop("peersFile")
    plugin["peers"] = []
    plugin["ipam"]["dataDir"] = str(tmp_path / "ipam")
    report = run_suite([str(bundle)], conf)
    print(runner.render_table(report))
    not_passed = {r.id: r.detail for r in report.results if r.verdict != Verdict.PASS}
    assert not not_passed
    assert len(report.results) == len(checks.CHECKS)
    assert report.verdict("add.result-shape").detail.endswith(
        "ips 10.244.1.2/32, fd00:10:244:1::2/128"
    )
    assert_no_leftover_namespaces()


# --- the command ------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.reference
def test_the_command_writes_junit_and_json_and_exits_by_verdict(
    root: None, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_file = tmp_path / "ref.conflist"
    conf_file.write_text(json.dumps(reference_conf("ptp", "10.91.0.0/24")))
    junit, report_json = tmp_path / "report.xml", tmp_path / "report.json"
    argv = ["conformance", "--plugin-dir", str(reference), "--conf", str(conf_file)]
    status = cli.main(
        [
            *argv,
            "--check",
            "del",
            "--check",
            "gc.unlisted",
            "--junit",
            str(junit),
            "--json",
            str(report_json),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "\033[" not in out  # no colour when stdout is not a terminal
    assert "PASS  del.twice" in out and "N/A   gc.unlisted" in out
    data = json.loads(report_json.read_text())
    assert data["summary"] == {"pass": 5, "fail": 0, "n/a": 1}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "6" and suite.get("skipped") == "1"

    name = install_broken(tmp_path, "prints-on-del", reference / "ptp")
    conf = reference_conf("ptp", "10.91.0.0/24")
    conf["plugins"][0]["type"] = name
    conf_file.write_text(json.dumps(conf))
    argv = ["conformance", "--plugin-dir", str(tmp_path), "--plugin-dir", str(reference)]
    assert cli.main([*argv, "--conf", str(conf_file), "--check", "output.silent"]) == 1
    assert "FAILED: 0 passed, 1 failed" in capsys.readouterr().out


def test_the_command_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf_file = tmp_path / "x.conflist"
    conf_file.write_text(json.dumps(reference_conf("ptp", "10.91.0.0/24")))
    assert cli.main(["conformance", "--conf", str(conf_file)]) == 2
    assert "--plugin-dir" in capsys.readouterr().err
    argv = ["conformance", "--plugin-dir", str(tmp_path), "--conf", str(conf_file)]
    assert cli.main([*argv, "--check", "no.such"]) == 2
    assert "no such check: no.such" in capsys.readouterr().err
    assert cli.main([*argv, "--runtime-cni-version", "1.0"]) == 2
    assert "--runtime-cni-version: '1.0' is not a version" in capsys.readouterr().err
    assert cli.main(["conformance", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(check.id in listed for check in checks.CHECKS)


# --- without root ---------------------------------------------------------------------------


def test_checks_have_unique_ids_and_a_spec_section() -> None:
    ids = [c.id for c in checks.CHECKS]
    assert len(ids) == len(set(ids))
    assert all(c.section and c.title for c in checks.CHECKS)


def test_selection_by_id_or_group() -> None:
    assert [c.id for c in checks.select(["del.twice"])] == ["del.twice"]
    assert {c.id for c in checks.select(["gc"])} == {"gc.unlisted", "gc.empty-list"}
    assert checks.select([]) == checks.CHECKS
    with pytest.raises(ValueError, match=r"no such check: del\.tw"):
        checks.select(["del.tw"])


@pytest.mark.parametrize(
    ("result", "version", "problem"),
    [
        ({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}]}, "0.4.0", "version is None"),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "version": "4"}]},
            "1.0.0",
            "removed in 1.0.0",
        ),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}, "1.0.0", "no prefix length"),
        (
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 0}]},
            "1.0.0",
            "not an index",
        ),
        ({"cniVersion": "0.4.0"}, "1.0.0", "the request's is 1.0.0"),
        ({"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mac": "zz"}]}, "1.0.0", "not a MAC"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "nowhere"}]}, "1.0.0", "not a network"),
    ],
)
def test_result_problems(result: dict[str, Any], version: str, problem: str) -> None:
    assert any(problem in p for p in checks.result_problems(result, version))


def test_a_good_result_has_no_problems() -> None:
    result = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
        "dns": {},
    }
    assert checks.result_problems(result, "1.0.0") == []


def test_tiny_ranges_keep_the_subnet_and_skip_the_gateway() -> None:
    ipam: dict[str, Any] = {"ranges": [[{"subnet": "fd00::/64"}], [{"subnet": "10.1.0.0/16"}]]}
    assert checks._shrink_range(ipam, 2)
    assert ipam["ranges"] == [
        [
            {
                "subnet": "10.1.0.0/16",
                "gateway": "10.1.0.1",
                "rangeStart": "10.1.0.2",
                "rangeEnd": "10.1.0.3",
            }
        ]
    ]
    legacy: dict[str, Any] = {"subnet": "10.2.0.0/24", "gateway": "10.2.0.2"}
    assert checks._shrink_range(legacy, 1)
    assert (legacy["rangeStart"], legacy["rangeEnd"]) == ("10.2.0.1", "10.2.0.1")
    assert not checks._shrink_range({"type": "dhcp"}, 1)


def test_reports_for_people_and_for_ci(tmp_path: Path) -> None:
    report = Report("net", "1.0.0", ["bridge"], ["/usr/lib/cni"], seconds=1.5)
    report.results = [
        CheckResult("a.one", "SPEC §2", "one", Verdict.PASS, "fine", 0.1),
        CheckResult("a.two", "SPEC §2", "two", Verdict.FAIL, "x" * 200, 0.2),
        CheckResult("a.three", "SPEC §2", "three", Verdict.NOT_APPLICABLE, "why", 0.0),
    ]
    table = runner.render_table(report)
    assert "FAIL  a.two" in table and "..." in table
    assert table.endswith("FAILED: 1 passed, 1 failed, 1 not applicable (3 checks, 1.5s)")
    assert "\033[" in runner.render_table(report, colour=True)
    runner.write_junit(report, tmp_path / "j.xml")
    case = ET.parse(tmp_path / "j.xml").getroot().findall("testsuite/testcase")
    assert [c.get("name") for c in case] == ["a.one", "a.two", "a.three"]
    assert case[1].find("failure") is not None and case[2].find("skipped") is not None
    runner.write_json(report, tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"] == {"pass": 1, "fail": 1, "n/a": 1}
    assert data["checks"][1]["detail"] == "x" * 200
