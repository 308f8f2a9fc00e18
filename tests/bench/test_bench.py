"""`python -m bench` at tiny sizes: the command works end to end and writes its document, its
plots and its raw numbers, and leaves no namespace behind. Not a judgement of the figures: the
benchmark never fails on a target (the full run is packaging/bench.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import SUITES
from tests.support.ci import unavailable
from tests.support.leftovers import namespaces_of
from tests.support.paths import REPO

pytestmark = [pytest.mark.frozen, pytest.mark.netns, pytest.mark.reference, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_writes_the_document_and_plots(
    bundle: Path, reference: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        unavailable("the benchmark creates network namespaces: needs root")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        unavailable("matplotlib missing: pip install -e '.[bench]' (packaging/setup.sh does)")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--out",
            str(tmp_path),
            "--bundle",
            str(bundle),
            "--go",
            str(reference),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    assert namespaces_of(process.pid) == []

    document = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Targets" in document and "## Machine and run" in document
    assert "load average at start" in document and "load average at end" in document
    raw = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    assert list(raw["suites"]) == [suite.name for suite in SUITES]
    for name, suite in raw["suites"].items():
        assert f"## {suite['title']}" in document, name
        if suite["not_measured"] is None:
            assert suite["data"], name  # measured something
        else:
            assert f"Not measured: {suite['not_measured']}" in document
    # every target row carries a figure and a verdict
    rows = [line for line in document.split("## Machine")[0].splitlines() if line.startswith("| ")]
    for row in rows[1:]:
        assert row.endswith(("| met |", "| **missed** |", "| context |", "| |")), row
    plots = sorted((tmp_path / "benchmarks").glob("*.png"))
    expected = {
        "latency-hostlocal",
        "latency-plain",
        "latency-masq",
        "scale-plain",
        "scale-masq",
        "dataplane-bridge",
        "dataplane-vxlan",
    }
    assert expected <= {p.stem for p in plots}
    for plot in plots:
        assert plot.read_bytes().startswith(PNG_MAGIC), plot
        assert f"](benchmarks/{plot.name})" in document
    # the DEL-without-mappings figure comes with the floors under it, measured, not assumed
    floors = raw["suites"]["portmap"]["data"]["del_without_mappings"]["floors"]
    assert set(floors) == {"pycni_version", "interpreter"}
    for floor in floors.values():
        assert floor["median_ms"] > 0 and floor["paired_ratio"] > 0, floor
    assert "What a DEL without mappings cannot go below" in document
