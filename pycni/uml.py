"""Run one command under a real Linux kernel with IPIP: Debian's User-Mode Linux (the kernel lane).

This machine's kernel (and many CI kernels) has no `ipip` module; Debian's `user-mode-linux`
package is a Linux 6.1 kernel that runs as an ordinary process and has IPIP, veth, bridge and
VXLAN as modules. `run_in_guest()` boots it with the host's own filesystem as root, so the host's
Python, .venv, iproute2 and the frozen bundle (dist/cni/bin) run inside it unchanged:

- root is hostfs (`/` of the host, read-only) under a RAM overlay: the guest may write anywhere,
  nothing reaches the host; the first init stage builds the overlay and `exec chroot`s into it
  (the kernel's PID 1 must be the process that keeps running, not a child);
- the guest mounts /proc, /sys, /dev and fresh RAM disks on /run, /tmp, /var/tmp and /dev/shm,
  links the UML kernel's modules into /lib/modules and loads `modules` with modprobe;
- the results directory is the one window back to the host: it is mounted read-write at the same
  path inside the guest; the command's output lands in `output.log`, its exit status in
  `exit-status`, the kernel console in `console.log`.

The host kernel is never touched: the guest has no network device but `lo`, and everything the
command does to networking happens inside the guest kernel.

Host quirk worked around here: on CPUs whose XSAVE area is larger than UML 6.1 expects (AVX-512,
AMX: this machine), UML dies at the first guest process ("ptrace set fp regs failed, errno = 14").
`_exec_kernel` makes UML's start-up probe of PTRACE_GETREGSET(NT_X86_XSTATE) fail (a seccomp
filter answers EIO), so UML falls back to the FXSAVE area (x87 + SSE). UML then does not preserve
AVX state across guest page faults, so every guest process is told not to use AVX:
GLIBC_TUNABLES (glibc's string functions) and OPENSSL_ia32cap (libcrypto), set on the kernel
command line so that init and everything below it inherit them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

COMMAND = "uml"
HELP = "run one command under a User-Mode Linux kernel that has IPIP (the kernel test lane)"

KERNEL = Path("/usr/bin/linux.uml")
MODULES = Path("/usr/lib/uml/modules")
# What the lane's tests need; bridge, veth, vxlan, ipip are modules in Debian's UML kernel.
DEFAULT_MODULES = ("ipip", "veth", "bridge", "vxlan", "sch_tbf", "sch_htb", "ifb", "act_mirred")
DEFAULT_MEMORY = "1024M"
DEFAULT_TIMEOUT = 600.0

# No AVX in the guest (see the module docstring): glibc's ifuncs and OpenSSL's dispatch.
GUEST_CPU_ENV = {
    "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,"
    "-AVX512CD,-AVX_Fast_Unaligned_Load,-RTM",
    "OPENSSL_ia32cap": "~0x1000000000000000:~0xffffffffffffffff",
}

OUTPUT = "output.log"
EXIT_STATUS = "exit-status"
CONSOLE = "console.log"
MODULES_LOG = "modules.log"
STARTED = "started"  # guest clock (= host clock) when the command started: boot time


@dataclass(frozen=True)
class Outcome:
    """What came back from one boot. `status` is None when the command did not finish; then
    `reason` says why (kernel missing, boot failure, timeout...)."""

    status: int | None
    output: str
    reason: str
    boot_seconds: float | None
    total_seconds: float
    results: Path

    @property
    def ok(self) -> bool:
        return self.status == 0


def unavailable_reason() -> str | None:
    """Why the lane cannot run on this machine, or None if it can."""
    if not KERNEL.exists():
        return f"{KERNEL} missing: apt-get install user-mode-linux (packaging/setup.sh does)"
    if shutil.which("modprobe", path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
        return "modprobe missing: apt-get install kmod (packaging/setup.sh does)"
    if not _modules_dir().is_dir():
        return f"no UML modules under {MODULES}"
    if os.geteuid() != 0:
        return "the kernel lane runs as root (it creates namespaces inside the guest)"
    return None


def run_in_guest(
    command: Sequence[str],
    *,
    results: Path,
    cwd: Path | str = "/",
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    modules: Sequence[str] = DEFAULT_MODULES,
    memory: str = DEFAULT_MEMORY,
) -> Outcome:
    """Boot the UML kernel, run `command` (argv, no shell) in `cwd` with exactly `env` (plus
    GUEST_CPU_ENV and a PATH if `env` has none), power off. Bounded by `timeout` seconds for the
    whole boot; every host process the kernel started is gone when this returns."""
    started = time.monotonic()
    results = Path(results).resolve()
    results.mkdir(parents=True, exist_ok=True)
    for name in (OUTPUT, EXIT_STATUS, CONSOLE, MODULES_LOG, STARTED):
        (results / name).unlink(missing_ok=True)

    def outcome(status: int | None, reason: str) -> Outcome:
        output = _read(results / OUTPUT)
        boot = _boot_seconds(results, wall_started)
        return Outcome(status, output, reason, boot, time.monotonic() - started, results)

    wall_started = time.time()
    if (reason := unavailable_reason()) is not None:
        return outcome(None, reason)
    for path in (str(results), str(cwd)):
        if any(c.isspace() for c in path) or not path.startswith("/"):
            return outcome(None, f"paths given to the guest must be absolute, no spaces: {path!r}")
    guest_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} | dict(env or {}) | GUEST_CPU_ENV
    init = results / "uml-init"
    init.write_text(_init_script(command, cwd, guest_env, results, modules))
    init.chmod(0o755)

    kernel_tmp = tempfile.mkdtemp(prefix="pycni-uml-", dir=_kernel_tmpdir())
    argv = [
        sys.executable,
        "-c",
        "import sys; from pycni.uml import _exec_kernel; _exec_kernel(sys.argv[1:])",
        str(KERNEL),
        f"mem={memory}",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={init}",
        "con=null",
        "con0=null,fd:1",
        "quiet",
        *(f"{key}={value}" for key, value in GUEST_CPU_ENV.items()),
    ]
    with open(results / CONSOLE, "wb") as console:
        kernel = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            # UML keeps its RAM file in TMPDIR and its "umid" directory under HOME.
            env={"TMPDIR": kernel_tmp, "HOME": kernel_tmp, "PATH": "/usr/bin:/bin"},
            start_new_session=True,  # its own process group: ended as a whole on timeout
        )
        try:
            kernel.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            leftovers = _end_group(kernel)
            shutil.rmtree(kernel_tmp, ignore_errors=True)

    status_text = _read(results / EXIT_STATUS).strip()
    if timed_out:
        return outcome(None, f"timed out after {timeout:.0f} s{_console_tail(results)}")
    if leftovers:
        return outcome(None, f"UML processes survived SIGKILL: {leftovers}")
    if not status_text.isdigit():
        why = f"the guest reported no exit status (kernel exit {kernel.returncode})"
        return outcome(None, why + _console_tail(results))
    return outcome(int(status_text), "")


def _exec_kernel(argv: list[str]) -> None:
    """exec the UML kernel with PTRACE_GETREGSET(NT_X86_XSTATE) failing with EIO (see the module
    docstring); everything else is allowed."""
    import ctypes  # only here: the rest of the `pycni` command does not need it

    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    audit_arch_x86_64, nr_ptrace = 0xC000003E, 101
    ptrace_getregset, nt_x86_xstate = 0x4204, 0x202
    allow, eio = 0x7FFF0000, 0x00050000 | 5

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    program = b"".join(
        (
            op(ld, 0, 0, 4),  # seccomp_data.arch
            op(jeq, 0, 6, audit_arch_x86_64),
            op(ld, 0, 0, 0),  # .nr
            op(jeq, 0, 4, nr_ptrace),
            op(ld, 0, 0, 16),  # .args[0]: request
            op(jeq, 0, 2, ptrace_getregset),
            op(ld, 0, 0, 32),  # .args[2]: regset type
            op(jeq, 1, 0, nt_x86_xstate),
            op(ret, 0, 0, allow),
            op(ret, 0, 0, eio),
        )
    )

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    buffer = ctypes.create_string_buffer(program)
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0 or (
        libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0
    ):
        raise OSError(ctypes.get_errno(), "failed to install the seccomp filter for UML")
    os.execv(argv[0], argv)


def _init_script(
    command: Sequence[str],
    cwd: Path | str,
    env: Mapping[str, str],
    results: Path,
    modules: Sequence[str],
) -> str:
    q = shlex.quote
    env_words = " ".join(q(f"{key}={value}") for key, value in env.items())
    return _INIT.format(
        results=q(str(results)),
        modules=" ".join(q(m) for m in modules),
        cwd=q(str(cwd)),
        env=env_words,
        command=" ".join(q(word) for word in command),
        output=OUTPUT,
        exit_status=EXIT_STATUS,
        modules_log=MODULES_LOG,
        started=STARTED,
    )


# Stage 1 runs as PID 1 on the read-only hostfs root; stage 2 is the same file run again by
# `exec chroot` inside the overlay. Any failure powers off at once: the host reads no exit status
# and reports the console.
_INIT = r"""#!/bin/bash
# pycni kernel lane: init of the User-Mode Linux guest (written by pycni/uml.py).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
results={results}
die() {{ echo "pycni-uml init: $*" >&2; echo o > /proc/sysrq-trigger; sleep 5; exit 1; }}

if [[ ${{1:-}} != stage2 ]]; then
    mount -t proc proc /proc || die "mount /proc"
    mount -t tmpfs -o mode=0755 tmpfs /tmp || die "mount tmpfs for the overlay"
    mkdir -p /tmp/overlay/upper /tmp/overlay/work /tmp/overlay/root
    insmod "/usr/lib/uml/modules/$(uname -r)/kernel/fs/overlayfs/overlay.ko" \
        || die "insmod overlay"
    mount -t overlay overlay -o lowerdir=/,upperdir=/tmp/overlay/upper,workdir=/tmp/overlay/work \
        /tmp/overlay/root || die "mount the overlay"
    exec chroot /tmp/overlay/root /bin/bash "$0" stage2
fi

mount -t proc proc /proc || die "mount /proc"
mount -t sysfs sysfs /sys || die "mount /sys"
mount -t devtmpfs devtmpfs /dev || die "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
for dir in /run /tmp /var/tmp /dev/shm; do
    mount -t tmpfs -o mode=1777 tmpfs "$dir" || die "mount tmpfs on $dir"
done
chmod 0755 /run
mkdir -p "$results" && mount -t hostfs -o "$results" hostfs "$results" || die "mount $results"
mkdir -p /lib/modules
ln -sfn "/usr/lib/uml/modules/$(uname -r)" "/lib/modules/$(uname -r)"
for module in {modules}; do
    modprobe "$module" >> "$results/{modules_log}" 2>&1 \
        || echo "failed: $module" >> "$results/{modules_log}"
done
hostname pycni-uml
ip link set lo up
date +%s.%N > "$results/{started}"
cd {cwd} || die "cd {cwd}"
env -i {env} {command} > "$results/{output}" 2>&1 < /dev/null
echo $? > "$results/{exit_status}"
sync
echo o > /proc/sysrq-trigger
sleep 30
"""


def _end_group(kernel: subprocess.Popen[bytes]) -> list[int]:
    """SIGKILL what is left of the kernel's process group (UML runs one host process per guest
    address space, plus helpers), reap the kernel, and return the PIDs still in the group."""
    pgid = kernel.pid  # start_new_session: the kernel leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        kernel.wait(10)
    deadline = time.monotonic() + 10
    while (left := _group_members(pgid)) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.1)
    return left


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _modules_dir() -> Path:
    found = sorted(MODULES.glob("*/modules.dep"))
    return found[-1].parent if found else MODULES / "none"


def _kernel_tmpdir() -> str:
    """UML maps its RAM from a file in TMPDIR: a tmpfs that allows exec (/dev/shm here)."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _boot_seconds(results: Path, wall_started: float) -> float | None:
    text = _read(results / STARTED).strip()
    try:
        return float(text) - wall_started
    except ValueError:
        return None


def _console_tail(results: Path, lines: int = 15) -> str:
    tail = _read(results / CONSOLE).splitlines()[-lines:]
    return "; console tail:\n" + "\n".join(tail) if tail else "; the console is empty"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, help="results directory (default: a new temp dir)")
    parser.add_argument("--cwd", default=os.getcwd(), help="working directory in the guest")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="guest environment"
    )
    parser.add_argument("command", nargs="+", help="the command (argv) to run in the guest")


def run(args: argparse.Namespace) -> int:
    results = args.results or Path(tempfile.mkdtemp(prefix="pycni-uml-results-"))
    env = dict(item.split("=", 1) for item in args.env)
    outcome = run_in_guest(
        args.command, results=results, cwd=args.cwd, env=env, timeout=args.timeout
    )
    sys.stdout.write(outcome.output)
    boot = f"{outcome.boot_seconds:.1f} s" if outcome.boot_seconds is not None else "-"
    print(
        f"pycni uml: exit status {outcome.status}, boot {boot},"
        f" total {outcome.total_seconds:.1f} s, results in {results}",
        file=sys.stderr,
    )
    if outcome.status is None:
        print(f"pycni uml: {outcome.reason}", file=sys.stderr)
        return 125
    return outcome.status
