"""Plugin calls killed mid-way, as a node's OOM killer, a kubelet restart or a reboot kill them.

    process = start_call(bundle / "pycni-bridge", "ADD", plugin_config(conf), container_id=cid,
                         netns=pod.path, cni_path=bundle, in_netns=node.ns.path)
    kill_after(process, rng.uniform(0.0, 0.04))
    runtime_recovers(runtime, conf, cid, pod.path)  # what a runtime does next

The plugin runs exactly as a runtime runs it (a bare environment of CNI_* variables, the
config on stdin, inside the node's namespace), but nobody waits for its answer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pycni.lab.runtime import Runtime


def start_call(
    executable: Path,
    verb: str,
    config: Mapping[str, Any] | bytes,
    *,
    container_id: str,
    netns: str,
    ifname: str = "eth0",
    cni_path: Path | None = None,
    in_netns: str | None = None,
) -> subprocess.Popen[bytes]:
    """`executable` started for `verb` (its output thrown away), `config` written to its stdin;
    inside the namespace `in_netns` (a node's) when given. Returns at once."""
    env = {
        "CNI_COMMAND": verb,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
    }
    if cni_path is not None:
        env["CNI_PATH"] = str(cni_path)
    argv = [str(executable)]
    if in_netns is not None:
        argv = ["nsenter", f"--net={in_netns}", *argv]
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert process.stdin is not None
    process.stdin.write(config if isinstance(config, bytes) else json.dumps(config).encode())
    process.stdin.close()
    return process


def kill_after(process: subprocess.Popen[bytes], seconds: float) -> int:
    """SIGKILL `process` after `seconds` (if it is still running) and reap it; its exit status
    (-SIGKILL when the kill landed while it ran)."""
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=30)


def runtime_recovers(
    runtime: Runtime, conflist: dict[str, Any], container_id: str, pod: str
) -> None:
    """What a runtime does after a call that never answered: DEL the attachment, which must
    succeed whatever was left; then the node must still work: a new attachment (eth1) in the
    same pod is added and deleted."""
    runtime.delete(conflist, container_id, pod, "eth0")
    runtime.add(conflist, f"{container_id}b", pod, "eth1")
    runtime.delete(conflist, f"{container_id}b", pod, "eth1")
