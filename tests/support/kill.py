"""Plugin calls killed mid-way, as a node's OOM killer, a kubelet restart or a reboot kill them.

    for run in killed_calls(node, bundle / "pycni-bridge", "ADD", conf, runs=30,
                            rng=random.Random(1234), name="kill", cni_path=bundle):
        assert leftovers(node) == [], f"run {run}"

or, a step at a time:

    process = start_call(bundle / "pycni-bridge", "ADD", plugin_config(conf), container_id=cid,
                         netns=pod.path, cni_path=bundle, in_netns=node.ns.path)
    kill_after(process, rng.uniform(0.0, 0.04))
    runtime_recovers(runtime, conf, cid, pod.path)  # what a runtime does next

The plugin runs exactly as a runtime runs it (a bare environment of CNI_* variables, the
config on stdin, inside the node's namespace), but nobody waits for its answer.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pycni.lab import netns as netns_mod
from pycni.lab.runtime import Runtime
from pycni.lab.testbed import Node
from tests.support.calls import plugin_config


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


def killed_calls(
    node: Node,
    executable: Path,
    verb: str,
    conflist: dict[str, Any],
    *,
    runs: int,
    rng: random.Random,
    name: str,
    cni_path: Path,
) -> Iterator[int]:
    """`runs` times, in a fresh pod namespace: `executable` (the conflist's first plugin) called
    for `verb` (a DEL comes after a completed ADD) and SIGKILLed after 0 to 40 ms, then what
    a runtime does next (runtime_recovers). Yields each run's number once its pod is gone, for
    the caller to check the node; pods and containers are named after `name`."""
    runtime, config = node.runtime(), plugin_config(conflist)
    for run in range(runs):
        pod = netns_mod.create(name)
        cid = f"{name}{run}"
        try:
            if verb == "DEL":
                runtime.add(conflist, cid, pod.path, "eth0")
            process = start_call(
                executable,
                verb,
                config,
                container_id=cid,
                netns=pod.path,
                cni_path=cni_path,
                in_netns=node.ns.path,
            )
            kill_after(process, rng.uniform(0.0, 0.04))
            runtime_recovers(runtime, conflist, cid, pod.path)
        finally:
            pod.delete()
        yield run
