"""A Kubernetes node without a container: namespaces held by a small init process.

A kind node is a container: its own network, mount, PID and UTS namespaces, its own /run,
/var/lib/{containerd,kubelet} and /var/log, systemd as PID 1. A lane node is the same without
the container engine:

- `unshare` makes the four namespaces; PID 1 in them first shapes the node's file system
  (below), then becomes a small reaper (`_INIT`) that holds the namespaces for as long as the
  node lives. Killing it ends the node: the kernel kills every process of its PID namespace
  (containerd, the kubelet, every pod), and the mount and network namespaces with everything in
  them (pod network namespaces, veths, tunnels, nftables and iptables rules) go with the last
  process;
- the node's file system is the host's with private layers, all made inside its mount
  namespace, so the host's own tree never changes: a tmpfs on /run; /etc, /opt and /var/lib
  as overlays whose upper layers are the node's directory; /etc/kubernetes, /etc/cni,
  /opt/cni/bin, /var/lib/cni, /var/lib/containerd, /var/lib/kubelet, /var/log and /tmp bound
  to plain directories of the node (nothing of the machine's shows through there, and
  overlayfs cannot be the upper layer of containerd's overlay snapshots); a sysfs of the
  node's network namespace, with the host's cgroup hierarchies moved back under
  /sys/fs/cgroup; its own /proc, and on it the few kernel tunables the kubelet insists on
  (`_KUBELET_SYSCTLS`) shown with the values it wants, so that it never writes the host's
  (with protectKernelDefaults it would only refuse);
- processes enter the node with `nsenter` (`start` for daemons, `run` for commands).

Operator and test path (the Kubernetes lane), never a plugin's.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# In the init's command line, with the node's directory: how `down` finds a node's PID 1 even
# when `up` was killed before it could record it.
INIT_MARKER = "pycni-k8s-node-init"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# What the kubelet (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables) wants to
# read; on this host these are global, not per namespace, and panic_on_oops=1 on a shared
# machine is not the lane's to set.
_KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

# PID 1 of the node: reap orphans (a PID namespace's init must), hold the namespaces.
_INIT = """
import os, signal, sys
def reap(*_):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
reap()
print("ready", flush=True)
os.close(1)
os.open("/dev/null", os.O_WRONLY)
while True:
    signal.pause()
"""


class NodeError(RuntimeError):
    """A node could not be made or entered; the message says which step and why."""


@dataclass(frozen=True)
class Proc:
    """A process the lane started: its host PID and start time (so a recycled PID is never
    killed), with a name for the logs."""

    name: str
    pid: int
    start_time: int

    @classmethod
    def of(cls, name: str, pid: int) -> Proc:
        return cls(name, pid, start_time(pid))

    def alive(self) -> bool:
        """Running (not a zombie) and still the process that was started."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == self.start_time

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proc:
        return cls(str(data["name"]), int(data["pid"]), int(data["start_time"]))


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks after boot); OSError when there is no PID."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def wait_gone(procs: Sequence[Proc], timeout: float) -> list[Proc]:
    """Wait until none of `procs` is alive; the ones still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [proc for proc in procs if proc.alive()]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@dataclass(frozen=True)
class NodeLayout:
    """Where a node's own files live on the host (all under `root`)."""

    root: Path

    @property
    def overlays(self) -> Path:
        return self.root / "overlay"

    def bind_sources(self) -> dict[str, Path]:
        """Node path -> host directory bound there."""
        return {
            "/etc/kubernetes": self.root / "kubernetes",
            "/etc/cni": self.root / "cni",
            "/opt/cni/bin": self.root / "cni-bin",
            # host-local's leases and libcni's cache: the machine's own must not show through
            "/var/lib/cni": self.root / "cni-state",
            "/var/lib/containerd": self.root / "containerd",
            "/var/lib/kubelet": self.root / "kubelet",
            "/var/log": self.root / "log",
            "/tmp": self.root / "tmp",
        }

    def host_path(self, node_path: str) -> Path:
        """Where a file the node sees at `node_path` is on the host (for /etc, /opt and
        /var/lib files: in the overlay's upper layer, i.e. only what the node wrote)."""
        for target, source in self.bind_sources().items():
            if node_path == target or node_path.startswith(target + "/"):
                return source / node_path[len(target) :].lstrip("/")
        for lower in ("/etc", "/opt", "/var/lib"):
            if node_path.startswith(lower + "/"):
                upper = self.overlays / lower.strip("/").replace("/", "-") / "upper"
                return upper / node_path[len(lower) :].lstrip("/")
        raise ValueError(f"{node_path} is not a path of the node's own")


def _under_tmp() -> list[Path]:
    """The checkout and the lane's cache, where they are under the machine's /tmp."""
    from pycni.lab.k8s import build

    repo = Path(__file__).resolve().parents[3]
    found: list[Path] = []
    for path in (repo, build.cache_dir().resolve()):
        if path.is_relative_to("/tmp") and path != Path("/tmp") and path not in found:
            found.append(path)
    return found


def _setup_script(name: str, layout: NodeLayout, hosts: str, machine_id: str) -> str:
    q = shlex.quote
    lines = [
        "set -eu",
        f"hostname {q(name)}",
        "mount -t tmpfs -o mode=0755 tmpfs /run",
        # a sysfs of this network namespace (/sys/class/net), the cgroup trees kept
        "mkdir /run/.cgroup",
        "mount --rbind /sys/fs/cgroup /run/.cgroup",
        "mount -t sysfs sysfs /sys",
        "mount --move /run/.cgroup /sys/fs/cgroup",
        "rmdir /run/.cgroup",
    ]
    for lower in ("/etc", "/opt", "/var/lib"):
        base = layout.overlays / lower.strip("/").replace("/", "-")
        lines += [
            f"mkdir -p {q(str(base / 'upper'))} {q(str(base / 'work'))}",
            f"mount -t overlay overlay -o lowerdir={lower},upperdir={base / 'upper'},"
            f"workdir={base / 'work'} {lower}",
        ]
    # The node's /tmp is its own; a checkout or cache under the machine's /tmp (where CI may
    # clone) is bound back at its own path, or the node could not see the bundle it installs.
    keep = _under_tmp()
    if keep:
        lines += ["mkdir /run/.host-tmp", "mount --bind /tmp /run/.host-tmp"]
    for target, source in layout.bind_sources().items():
        lines += [f"mkdir -p {q(str(source))} {target}", f"mount --bind {q(str(source))} {target}"]
    for path in keep:
        inside = Path("/run/.host-tmp") / path.relative_to("/tmp")
        lines += [f"mkdir -p {q(str(path))}", f"mount --bind {q(str(inside))} {q(str(path))}"]
    if keep:
        lines += ["umount /run/.host-tmp", "rmdir /run/.host-tmp"]
    lines.append("chmod 1777 /tmp")
    sysctls = layout.root / "sysctl"
    lines.append(f"mkdir -p {q(str(sysctls))}")
    for key, value in _KUBELET_SYSCTLS.items():
        fake = sysctls / key.replace("/", ".")
        lines += [
            f"printf '%s\\n' {value} > {q(str(fake))}",
            f"mount --bind -o ro {q(str(fake))} /proc/sys/{key}",
        ]
    lines += [
        f"printf '%s\\n' {machine_id} > /etc/machine-id",
        f"printf '%s' {q(hosts)} > /etc/hosts",
        "ip link set lo up",
        f"exec python3 -c {q(_INIT)} {INIT_MARKER} {q(str(layout.root))}",
    ]
    return "\n".join(lines) + "\n"


def create_node(name: str, layout: NodeLayout, hosts: str, log: Path) -> tuple[Proc, Proc]:
    """Start the node `name`: returns (the unshare process on the host, the node's PID 1)
    once the node's file system is in place. NodeError (with the setup log) otherwise."""
    layout.root.mkdir(parents=True, exist_ok=True)
    machine_id = os.urandom(16).hex()
    script = _setup_script(name, layout, hosts, machine_id)
    with log.open("ab") as log_file:
        unshare = subprocess.Popen(
            [
                "unshare", "--pid", "--fork", "--mount-proc", "--mount", "--uts", "--net",
                "--propagation", "private", "--", "/bin/sh", "-c", script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
            env={"PATH": PATH, "HOME": "/root"},
        )  # fmt: skip
    assert unshare.stdout is not None
    holder = Proc.of(f"{name}/unshare", unshare.pid)
    line = unshare.stdout.readline()  # "ready" from the init, or EOF when setup failed
    unshare.stdout.close()
    if line.strip() != b"ready":
        unshare.kill()
        unshare.wait()
        raise NodeError(f"failed to create node '{name}': setup failed; {tail(log)}")
    kids = children(unshare.pid)
    if len(kids) != 1:
        raise NodeError(f"failed to create node '{name}': unshare has children {kids}")
    return holder, Proc.of(f"{name}/init", kids[0])


def enter_command(init_pid: int, argv: Sequence[str]) -> list[str]:
    """`argv` run inside the node whose PID 1 is `init_pid` (host PID)."""
    return [
        "nsenter", f"--target={init_pid}", "--mount", "--uts", "--net", "--pid",
        "--wd=/", "--", *argv,
    ]  # fmt: skip


def start_daemon(name: str, init_pid: int, argv: Sequence[str], log: Path) -> list[Proc]:
    """Start a long-lived process in the node, its output appended to `log`; it outlives the
    caller. Returns the nsenter on the host and the process itself (its host PID)."""
    with log.open("ab") as log_file:
        log_file.write(f"\n==> {time.strftime('%H:%M:%S')} {shlex.join(argv)}\n".encode())
        log_file.flush()
        launcher = subprocess.Popen(
            enter_command(init_pid, argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": PATH, "HOME": "/root"},
        )
    procs = [Proc.of(f"{name}/nsenter", launcher.pid)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = children(launcher.pid)
        if kids:
            try:
                procs.append(Proc.of(name, kids[0]))
            except OSError:
                pass
            break
        if launcher.poll() is not None:
            raise NodeError(
                f"failed to start {name}: exited with {launcher.returncode}; {tail(log)}"
            )
        time.sleep(0.01)
    return procs


def run(
    init_pid: int,
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the node; text output captured."""
    done = subprocess.run(
        enter_command(init_pid, argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else {"PATH": PATH, "HOME": "/root"},
    )
    if check and done.returncode != 0:
        raise NodeError(
            f"failed to run `{shlex.join(argv)}` in the node: exit {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done


def tail(log: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log, introduced by its path (for error messages)."""
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError as err:
        return f"(no log {log}: {err.strerror})"
    return f"last {len(text)} lines of {log}:\n" + "\n".join("    " + line for line in text)
