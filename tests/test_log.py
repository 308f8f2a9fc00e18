"""The plugins' own diagnostics reach the call's log: stderr and, when configured, `logFile`
(pycni.cni.log). The boundary is driven with env and streams injected."""

from __future__ import annotations

import io
import json
import os
import types
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import log, skel
from pycni.cni.errors import CniError, Code
from pycni.cni.ip import Prefix
from pycni.cni.result import IPConfig, Result
from pycni.cni.rollback import Rollback

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_IFNAME": "eth0",
    "CNI_NETNS": "/proc/self/ns/net",  # exists; the fake plugins never enter it
}


def serve(cmd_add: Any, config: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str]:
    """One ADD of a fake plugin through the boundary: status, the JSON printed, stderr."""
    plugin = types.SimpleNamespace(
        NAME="pycni-fake", parse_config=lambda call: None, cmd_add=cmd_add
    )
    out, err = io.BytesIO(), io.StringIO()
    status = skel.run(
        plugin,
        env=ENV,
        stdin=io.BytesIO(json.dumps({"cniVersion": "1.0.0", "name": "net", **config}).encode()),
        stdout=out,
        stderr=err,
    )
    printed = json.loads(out.getvalue()) if out.getvalue() else None
    return status, printed, err.getvalue()


def test_a_plugin_diagnostic_reaches_stderr_and_the_log_file(tmp_path: Path) -> None:
    def add(call: skel.Call, conf: None) -> Result:
        log.write("br_netfilter is not loaded")
        return Result(ips=[IPConfig(Prefix.parse("10.1.0.5/24"))])

    log_file = tmp_path / "plugin.log"
    status, printed, err = serve(add, {"logFile": str(log_file)})
    assert status == 0 and printed is not None and printed["ips"]
    expected = f"pycni-fake[{os.getpid()}] ADD c1/eth0: br_netfilter is not loaded"
    assert expected in err
    assert expected in log_file.read_text()


def test_a_failed_undo_step_reaches_the_log_file_and_the_first_error_the_runtime(
    tmp_path: Path,
) -> None:
    def refuse_undo(name: str) -> None:
        raise OSError(f"cannot delete {name}")

    def add(call: skel.Call, conf: None) -> Result:
        with Rollback() as undo:
            undo.push(refuse_undo, "veth0")
            raise CniError(Code.KERNEL, "failed to add route: the kernel said no")

    log_file = tmp_path / "plugin.log"
    status, printed, err = serve(add, {"logFile": str(log_file)})
    assert status == 1 and printed is not None
    assert (printed["code"], printed["msg"]) == (
        Code.KERNEL,
        "failed to add route: the kernel said no",
    )
    line = "rollback: refuse_undo('veth0',) failed: cannot delete veth0"
    assert line in err
    assert line in log_file.read_text()


def test_after_the_call_diagnostics_go_to_stderr_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_file = tmp_path / "plugin.log"
    serve(lambda call, conf: Result(), {"logFile": str(log_file)})
    written = log_file.read_text()
    log.write("no call is being served")
    assert capsys.readouterr().err == "no call is being served\n"
    assert log_file.read_text() == written
