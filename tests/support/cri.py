"""containerd's CRI, as the kubelet drives it, for tests: a containerd of our own inside a node
namespace, a pause image built here, and a small CRI client.

- `Containerd.start(node, state_dir, bin_dir, conf_dir)` runs Debian's containerd (1.6.20, built
  against libcni 1.1.2) with its own socket, root and state under `state_dir`, inside the node's
  network namespace (`nsenter --net`, not `ip netns exec`, which remounts /sys and hides the
  cgroups runc needs) and in a private mount namespace of its own (`unshare -m`): the rootfs,
  /dev/shm and netns mounts it makes go away with it. Its CNI section reads one conflist from
  `conf_dir` and runs plugins from `bin_dir` (containerd 1.6 takes one directory, and calls
  `loopback` itself). `restrict_oom_score_adj`: this VM denies root CAP_SYS_RESOURCE.
- The sandbox image is a static `pause` compiled here (gcc; no registry is reachable), packed
  as a docker-archive and imported with `ctr`.
- `RuntimeService` speaks CRI `runtime.v1` over gRPC (grpcio) with the few messages a sandbox's
  life needs, encoded by hand: field numbers from k8s.io/cri-api's api.proto (as vendored by
  containerd 1.6.20), so the test needs no protoc.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.lab import netns as netns_mod

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
PAUSE_IMAGE = "pycni.test/pause:1"
CRI_NAMESPACE = "k8s.io"
CONTAINERD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_CALL_TIMEOUT = 180.0

_PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void stop(int signum) { (void)signum; _exit(0); }
int main(void) {
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    for (;;) pause();
}
"""

_CONFIG = """version = 2
root = "{state}/root"
state = "{state}/run"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{state}/containerd.sock"

[ttrpc]
  address = "{state}/containerd.sock.ttrpc"

[debug]
  address = "{state}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{state}/runc"
"""


def unavailable_reason() -> str | None:
    """Why containerd's CRI cannot run here (None: it can)."""
    for tool, package in ((CONTAINERD, "containerd"), (CTR, "containerd"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} missing: apt-get install {package} (packaging/setup.sh does)"
    if shutil.which("gcc") is None or not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return "gcc and libc6-dev are needed to build the pause image"
    try:
        import grpc  # noqa: F401
    except ImportError:
        return "grpcio missing: pip install -e '.[dev]'"
    return None


def containerd_version() -> str:
    done = subprocess.run([CONTAINERD, "--version"], capture_output=True, text=True, check=True)
    return done.stdout.strip()


# --- the pause image ---------------------------------------------------------------------------


def pause_image(work: Path) -> Path:
    """A docker-archive of a one-layer image whose entrypoint is a static /pause."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(_PAUSE_C)
    subprocess.run(
        ["gcc", "-static", "-Os", "-s", "-o", str(work / "pause"), str(work / "pause.c")],
        check=True,
        capture_output=True,
    )
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tar.gettarinfo(str(work / "pause"), arcname="pause")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with open(work / "pause", "rb") as binary:
            tar.addfile(info, binary)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"]}]
    ).encode()
    archive = work / "pause.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


# --- containerd --------------------------------------------------------------------------------


@dataclass
class Containerd:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path

    @property
    def socket(self) -> Path:
        return self.state_dir / "containerd.sock"

    @classmethod
    def start(
        cls, node: netns_mod.Netns, state_dir: Path, bin_dir: Path, conf_dir: Path, image: Path
    ) -> Containerd:
        """containerd in `node`, serving CRI; the pause image imported. Stop it with stop()."""
        config = state_dir / "config.toml"
        config.write_text(
            _CONFIG.format(state=state_dir, image=PAUSE_IMAGE, bin_dir=bin_dir, conf_dir=conf_dir)
        )
        log_path = state_dir / "containerd.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["nsenter", f"--net={node.path}", "unshare", "--mount", "--propagation",
                 "private", CONTAINERD, "--config", str(config), "--log-level", "debug"],
                stdout=log, stderr=subprocess.STDOUT, env={"PATH": CONTAINERD_PATH},
                start_new_session=True,
            )  # fmt: skip
        daemon = cls(process, state_dir, log_path)
        try:
            daemon._wait_ready()
            daemon.ctr("images", "import", str(image))
        except BaseException:
            daemon.stop()
            raise
        return daemon

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"containerd exited {self.process.returncode}: {self.log()}")
            if self.socket.is_socket():
                done = subprocess.run(
                    [CTR, "--address", str(self.socket), "version"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=30,
                )
                if done.returncode == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"containerd did not serve within {_START_TIMEOUT:.0f}s: {self.log()}")

    def ctr(self, *args: str) -> str:
        done = subprocess.run(
            [CTR, "--address", str(self.socket), "--namespace", CRI_NAMESPACE, *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def log(self, limit: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-limit:]

    def stop(self) -> None:
        """SIGTERM to the process we started (nsenter execs unshare execs containerd: one
        PID), SIGKILL if it has not gone within the timeout."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=_STOP_TIMEOUT)


# --- protobuf, by hand -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _str(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode()) if text else b""


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _msg(number: int, *parts: bytes) -> bytes:
    return _bytes_field(number, b"".join(parts))


def decode(data: bytes) -> dict[int, list[Any]]:
    """A message's fields: number -> values (int for varints, bytes for length-delimited)."""
    fields: dict[int, list[Any]] = {}
    position = 0

    def varint() -> int:
        nonlocal position
        shift = result = 0
        while True:
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while position < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value = varint()
        elif wire == 2:
            length = varint()
            value = data[position : position + length]
            position += length
        elif wire == 1:
            value, position = data[position : position + 8], position + 8
        elif wire == 5:
            value, position = data[position : position + 4], position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _text(fields: dict[int, list[Any]], number: int) -> str:
    values = fields.get(number)
    return bytes(values[-1]).decode() if values else ""


# --- the CRI client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int
    protocol: int = 0  # TCP


@dataclass(frozen=True)
class SandboxStatus:
    id: str
    ready: bool
    ip: str
    additional_ips: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # containerd's verbose "info" JSON


class RuntimeService:
    """The CRI RuntimeService calls of a pod sandbox's life (runtime.v1)."""

    def __init__(self, socket: Path) -> None:
        import grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(f"unix://{socket}")

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: bytes) -> dict[int, list[Any]]:
        call = self._channel.unary_unary(f"/runtime.v1.RuntimeService/{method}")
        response: bytes = call(request, timeout=_CALL_TIMEOUT)
        return decode(response)

    def version(self) -> tuple[str, str, str]:
        """(runtime name, runtime version, CRI API version)."""
        fields = self._call("Version", _str(1, "v1"))
        return _text(fields, 2), _text(fields, 3), _text(fields, 4)

    def run_pod_sandbox(
        self, name: str, uid: str, namespace: str, ports: Sequence[PortMapping] = ()
    ) -> str:
        """RunPodSandbox as the kubelet sends it for a pod (metadata, hostname, ports)."""
        metadata = _msg(1, _str(1, name), _str(2, uid), _str(3, namespace), _int(4, 0))
        mappings = b"".join(
            _msg(5, _int(1, p.protocol), _int(2, p.container_port), _int(3, p.host_port))
            for p in ports
        )
        config = _msg(1, metadata, _str(2, name), mappings)
        return _text(self._call("RunPodSandbox", config), 1)

    def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        fields = self._call("PodSandboxStatus", _str(1, sandbox_id) + _int(2, 1))
        status = decode(bytes(fields[1][0]))
        network = decode(bytes(status[5][0])) if 5 in status else {}
        info: dict[str, Any] = {}
        for entry in fields.get(2, []):
            pair = decode(bytes(entry))
            if _text(pair, 1) == "info":
                info = json.loads(_text(pair, 2))
        return SandboxStatus(
            id=_text(status, 1),
            ready=status.get(3, [0])[-1] == 0,  # SANDBOX_READY
            ip=_text(network, 1),
            additional_ips=[_text(decode(bytes(x)), 1) for x in network.get(2, [])],
            info=info,
        )

    def list_pod_sandboxes(self) -> list[str]:
        """The IDs of every sandbox the runtime holds (ready or not)."""
        return [
            _text(decode(bytes(item)), 1) for item in self._call("ListPodSandbox", b"").get(1, [])
        ]

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("StopPodSandbox", _str(1, sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call("RemovePodSandbox", _str(1, sandbox_id))

    def is_not_found(self, error: BaseException) -> bool:
        return (
            isinstance(error, self._grpc.RpcError)
            and error.code() == self._grpc.StatusCode.NOT_FOUND
        )


def remove_every_sandbox(client: RuntimeService) -> None:
    """What the kubelet does with sandboxes it no longer wants, a failed one included: stop and
    remove each (containerd then runs the DELs it still owes and removes the netns)."""
    for sandbox_id in client.list_pod_sandboxes():
        for step in (client.stop_pod_sandbox, client.remove_pod_sandbox):
            try:
                step(sandbox_id)
            except Exception:
                pass
