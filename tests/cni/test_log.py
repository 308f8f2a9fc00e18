"""The plugins' own diagnostics reach the call's log: stderr and, when configured, `logFile`
(pycni.cni.log). The boundary is driven with env and streams injected; the bridge step runs
against a real kernel, in a throwaway namespace."""

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
from pycni.datapath import bridge, node
from pycni.lab.netns import Netns
from pycni.netlink import Rtnl

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


def test_a_bridge_without_br_netfilter_says_so_in_the_log_file(
    netns: Netns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ensure_bridge, on a node where the bridge-nf-call sysctls do not exist (faked: they
    are the host's, and br_netfilter is global), makes the bridge and says what is missing."""
    monkeypatch.setattr(node, "ensure_sysctl", lambda path, value, *, required=True: False)
    log_file = tmp_path / "plugin.log"
    call_log = log.Log(io.StringIO(), "pycni-bridge")
    call_log.open_file(str(log_file))
    call_log.activate()
    conf = bridge.BridgeConf(
        bridge="cbr0",
        is_gateway=True,
        is_default_gateway=False,
        force_address=False,
        ip_masq=False,
        non_masquerade=[],
        mtu=1400,
        hairpin=False,
        promisc=False,
        prefer_ipv6=False,
        dns=None,
    )
    try:
        with Rtnl(netns=netns.path) as node_ns:
            made = bridge.ensure_bridge(node_ns, conf)
    finally:
        call_log.close()
    assert (made.name, made.kind, made.mtu) == ("cbr0", "bridge", 1400)
    assert "cbr0" in netns.link_names()
    text = log_file.read_text()
    assert text.count("br_netfilter is not loaded") == 2, text  # iptables and ip6tables
    assert "(modprobe br_netfilter)" in text
