"""`python -m bench --only SUITE --update`: one suite's section and target rows replaced in, or
added to, a BENCHMARKS.md of an earlier run, in the order of SUITES, marked with the run it
comes from; everything else of the earlier document as it was. No benchmark runs here: the
outcomes are made up, the document logic is what is checked."""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import Outcome, Target
from bench.run import SUITES, Suite, render, write

NAMES = [s.name for s in SUITES]
assert {"dataplane-vxlan", "dataplane-ipip", "dataplane-ipsec", "netpol"} <= set(NAMES)


def outcome(title: str, figure: str) -> Outcome:
    return Outcome(
        title,
        lines=[f"a table of {title}", "", "| a | b |"],
        targets=[Target(f"target of {title}", "limit", figure, None)],
        data={"figure": figure},
    )


def suites(*names: str) -> list[tuple[Suite, Outcome, float]]:
    by_name = {s.name: s for s in SUITES}
    return [(by_name[name], outcome(f"Title {name}", "old"), 1.0) for name in names]


def test_a_new_suite_goes_between_its_neighbours_and_an_old_one_is_replaced(
    tmp_path: Path,
) -> None:
    (tmp_path / "benchmarks").mkdir()
    earlier = suites("dataplane-vxlan", "dataplane-ipip", "netpol")
    info = {"date": "2026-11-22", "pycni": "0.1.0 (git aaa)"}
    write(tmp_path, earlier, info, update_earlier=False)
    before = (tmp_path / "BENCHMARKS.md").read_text()
    assert before == render(earlier, info, tmp_path)

    by_name = {s.name: s for s in SUITES}
    now = {"date": "2026-12-02", "pycni": "0.1.0 (git bbb)", "load average at start": "1.0"}
    new = [(by_name["dataplane-ipsec"], outcome("Title dataplane-ipsec", "new"), 2.0)]
    write(tmp_path, new, now, update_earlier=True)
    after = (tmp_path / "BENCHMARKS.md").read_text()
    headings = [line for line in after.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Targets",
        "## Machine and run",
        "## Title dataplane-vxlan",
        "## Title dataplane-ipip",
        "## Title dataplane-ipsec",
        "## Title netpol",
    ]
    assert "| target of Title dataplane-ipsec | limit | new | context |" in after
    assert "(From a separate run, `python -m bench --only ... --update`: 2026-12-02" in after
    assert "- date: 2026-11-22" in after  # the earlier run's machine section stays
    for name in ("dataplane-vxlan", "dataplane-ipip", "netpol"):  # untouched
        assert f"a table of Title {name}" in after
    results = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    assert list(results["suites"]) == [
        "dataplane-vxlan",
        "dataplane-ipip",
        "dataplane-ipsec",
        "netpol",
    ]
    assert results["machine"]["date"] == "2026-11-22"
    assert results["updates"][0]["suites"] == ["dataplane-ipsec"]

    again = [(by_name["dataplane-ipsec"], outcome("Title dataplane-ipsec", "newer"), 2.0)]
    write(tmp_path, again, now, update_earlier=True)
    last = (tmp_path / "BENCHMARKS.md").read_text()
    assert last.count("## Title dataplane-ipsec") == 1
    assert last.count("target of Title dataplane-ipsec") == 1
    assert "| target of Title dataplane-ipsec | limit | newer | context |" in last
    assert last.replace("newer", "new") == after  # nothing else moved
