"""The kernel lane: tests/kernel/ (tests that need a kernel with IPIP) run inside a User-Mode
Linux guest (pycni/lab/uml.py), booted once per session; each guest test is reported here as a host
test of its own, with the guest's outcome and failure text.

The guest test ids are collected on the host (`pytest --collect-only` with
PYCNI_KERNEL_LANE=collect); the guest runs `pytest tests/kernel` with PYCNI_KERNEL_LANE=guest and
writes JUnit XML to the results directory. When the lane cannot run (no UML, boot failure,
timeout), every test here fails in CI and skips loudly elsewhere, with the reason.

PYCNI_UML_TIMEOUT (seconds, default 900) bounds the whole boot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycni.lab import uml
from tests.support.ci import IN_CI, unavailable
from tests.support.paths import REPO

GUEST_TESTS = "tests/kernel"
TIMEOUT = float(os.environ.get("PYCNI_UML_TIMEOUT", "900"))
_COLLECTION_FAILED = "<collecting tests/kernel failed>"


def _collect_guest_tests() -> tuple[list[str], str]:
    """The node ids of tests/kernel, and the collection's output if it failed."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, GUEST_TESTS],
        cwd=REPO,
        env=os.environ | {"PYCNI_KERNEL_LANE": "collect"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    ids = [line for line in done.stdout.splitlines() if line.startswith(f"{GUEST_TESTS}/")]
    if done.returncode != 0 or not ids:
        return [_COLLECTION_FAILED], (done.stdout + done.stderr)[-3000:]
    return ids, ""


GUEST_IDS, COLLECTION_ERROR = _collect_guest_tests()


@dataclass
class Lane:
    """One boot's results: guest test id -> (outcome, text); or why the lane did not run."""

    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)
    unavailable: str = ""
    summary: str = ""


@pytest.fixture(scope="session")
def kernel_lane(tmp_path_factory: pytest.TempPathFactory) -> Lane:
    if (reason := uml.unavailable_reason()) is not None:
        return Lane(unavailable=f"the kernel lane cannot run: {reason}")
    results = tmp_path_factory.mktemp("kernel-lane")
    junit = results / "junit.xml"
    env = {
        "PYCNI_KERNEL_LANE": "guest",
        "HOME": "/root",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        **({"CI": "true"} if IN_CI else {}),
    }
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"]
    command += [f"--junitxml={junit}", GUEST_TESTS]
    outcome = uml.run_in_guest(command, results=results, cwd=REPO, env=env, timeout=TIMEOUT)
    boot = "-" if outcome.boot_seconds is None else f"{outcome.boot_seconds:.1f} s"
    summary = (
        f"kernel lane: guest pytest exit {outcome.status}, boot {boot},"
        f" total {outcome.total_seconds:.1f} s, results in {results}"
    )
    if outcome.status is None:
        return Lane(unavailable=f"the kernel lane did not run: {outcome.reason}", summary=summary)
    if not junit.exists():
        tail = outcome.output[-3000:]
        why = f"the guest's pytest wrote no JUnit report (exit {outcome.status}):\n{tail}"
        return Lane(unavailable=why, summary=summary)
    return Lane(outcomes=_read_junit(junit), summary=summary)


def _read_junit(path: Path) -> dict[str, tuple[str, str]]:
    """(classname, name) of each testcase -> outcome and text, keyed by the matching node id."""
    by_case: dict[tuple[str, str], tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = "skipped" if kind == "skipped" else "failed"
                text = (found.get("message") or "") + "\n" + (found.text or "")
                break
        by_case[(case.get("classname", ""), case.get("name", ""))] = (outcome, text.strip())
    return {
        nodeid: by_case[_case_key(nodeid)] for nodeid in GUEST_IDS if _case_key(nodeid) in by_case
    }


def _case_key(nodeid: str) -> tuple[str, str]:
    """tests/kernel/test_x.py::Class::test_y[p] -> ("tests.kernel.test_x.Class", "test_y[p]")."""
    path, *parts = nodeid.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[:-1]]), parts[-1] if parts else ""


@pytest.mark.parametrize("guest_test", GUEST_IDS)
def test_in_kernel_lane(kernel_lane: Lane, guest_test: str) -> None:
    if guest_test == _COLLECTION_FAILED:
        pytest.fail(f"could not list the guest tests:\n{COLLECTION_ERROR}", pytrace=False)
    if kernel_lane.unavailable:
        unavailable(f"{kernel_lane.unavailable}\n{kernel_lane.summary}")
    found = kernel_lane.outcomes.get(guest_test)
    if found is None:
        pytest.fail(f"{guest_test} did not run in the guest ({kernel_lane.summary})", pytrace=False)
    outcome, text = found
    if outcome == "failed":
        pytest.fail(f"in the kernel lane's guest:\n{text}", pytrace=False)
    if outcome == "skipped":
        pytest.skip(f"skipped in the kernel lane's guest: {text}")
