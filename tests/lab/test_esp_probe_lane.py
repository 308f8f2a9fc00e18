"""The plugins' ESP probe (pycni.datapath.encryption.esp_problem) on a kernel whose ESP is a
module not loaded yet: a User-Mode Linux guest (pycni/lab/uml.py) booted WITHOUT xfrm_user,
esp4 or the AEAD's modules. The probe must answer "usable" and the kernel must have loaded them
on demand, as on a node where nothing has used IPsec since boot; and the guest's xfrm tables
stay empty. A boot of its own (about 10 s): the session's kernel lane loads ESP at boot."""

from __future__ import annotations

import sys
from pathlib import Path

from pycni.lab import uml
from tests.support.ci import unavailable
from tests.support.paths import REPO

ESP_MODULES = {"xfrm_user", "esp4", "gcm", "ghash-generic", "ctr", "seqiv"}

_GUEST = """
import pathlib, subprocess
from pycni.datapath import encryption
def loaded():
    names = ("xfrm_user", "esp4", "gcm")
    return sorted(m for m in names if pathlib.Path("/sys/module", m).exists())
print("before", loaded())
print("problem", encryption.esp_problem())
print("after", loaded())
ip = ["ip", "xfrm"]
print("tables", repr(subprocess.run(ip + ["state"], capture_output=True, text=True).stdout
      + subprocess.run(ip + ["policy"], capture_output=True, text=True).stdout))
"""


def test_the_probe_loads_esp_on_demand_and_answers_usable(tmp_path: Path) -> None:
    if (reason := uml.unavailable_reason()) is not None:
        unavailable(f"the kernel lane cannot run: {reason}")
    modules = [m for m in uml.DEFAULT_MODULES if m not in ESP_MODULES]
    outcome = uml.run_in_guest(
        [sys.executable, "-c", _GUEST],
        results=tmp_path,
        cwd=REPO,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
        timeout=300,
        modules=modules,
    )
    assert outcome.status == 0, f"{outcome.reason}\n{outcome.output[-3000:]}"
    lines = dict(line.split(" ", 1) for line in outcome.output.splitlines() if " " in line)
    assert lines.get("before") == "[]", outcome.output  # nothing of IPsec loaded at boot
    assert lines.get("problem") == "None", outcome.output
    assert lines.get("after") == "['esp4', 'gcm', 'xfrm_user']", outcome.output
    assert lines.get("tables") == "''", outcome.output
