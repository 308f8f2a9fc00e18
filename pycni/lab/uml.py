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
  `exit-status`, the kernel console in `console.log`;
- a working directory under one of the fresh RAM disks (a checkout in /tmp, as CI may clone it)
  is mounted from the host read-write at the same path, or the guest would not see it.

The host kernel is never touched: the guest has no network device but `lo`, and everything the
command does to networking happens inside the guest kernel.

Host quirk worked around here: UML 6.1 saves and restores its processes' FPU state with
PTRACE_GETREGSET/SETREGSET(NT_X86_XSTATE) on a 2696-byte buffer (x87 to AVX-512 and PKRU). Hosts
with AMX (this machine) have a larger XSAVE area and the host kernel refuses a SETREGSET of any
other size (EFAULT): UML dies at its first process ("ptrace set fp regs failed, errno = 14").
A small LD_PRELOAD shim (`_XSTATE_SHIM`, compiled with gcc at each boot) gives the host the full
size: GET into a big buffer and hand UML its 2696 bytes; SET from a copy padded to the host's
size, with the components beyond UML's buffer (AMX, which no guest process can enable) marked
as in their initial state. Every register UML knows about is then saved and restored exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
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
# Loaded at boot: what the lane's tests use (all modules in Debian's UML kernel); the kernel
# loads others on demand as usual.
DEFAULT_MODULES = (
    "ipip",
    "veth",
    "bridge",
    "vxlan",
    "dummy",
    "sch_tbf",
    "sch_htb",
    "sch_ingress",
    "cls_u32",
    "act_mirred",
    "ifb",
    "iptable_nat",
    "iptable_filter",
    "xt_MASQUERADE",
    "xt_comment",
    # IPsec ESP (pycni's encryption of tunnel packets): the xfrm netlink interface, ESP and
    # the AEAD rfc4106(gcm(aes)) with what it is built from
    "xfrm_user",
    "esp4",
    "gcm",
    "ghash-generic",
    "ctr",
    "seqiv",
)
DEFAULT_MEMORY = "1024M"
DEFAULT_TIMEOUT = 600.0

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
    if shutil.which("gcc") is None:
        return "gcc missing (it compiles the lane's ptrace shim): apt-get install gcc libc6-dev"
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
    """Boot the UML kernel, run `command` (argv, no shell) in `cwd` with exactly `env` (plus a
    PATH if `env` has none), power off. Bounded by `timeout` seconds for the
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
    guest_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} | dict(env or {})
    init = results / "uml-init"
    init.write_text(_init_script(command, cwd, guest_env, results, modules))
    init.chmod(0o755)

    kernel_tmp = tempfile.mkdtemp(prefix="pycni-uml-", dir=_kernel_tmpdir())
    try:
        shim = _build_shim(Path(kernel_tmp))
    except (OSError, subprocess.CalledProcessError) as err:
        shutil.rmtree(kernel_tmp, ignore_errors=True)
        return outcome(None, f"failed to compile the ptrace shim: {err}")
    argv = [
        str(KERNEL),
        f"mem={memory}",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={init}",
        "con=null",
        "con0=null,fd:1",
        "quiet",
    ]
    with open(results / CONSOLE, "wb") as console:
        kernel = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            # UML keeps its RAM file in TMPDIR and its "umid" directory under HOME.
            env={
                "TMPDIR": kernel_tmp,
                "HOME": kernel_tmp,
                "PATH": "/usr/bin:/bin",
                "LD_PRELOAD": str(shim),
            },
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


def _build_shim(directory: Path) -> Path:
    source, shim = directory / "xstate-shim.c", directory / "xstate-shim.so"
    source.write_text(_XSTATE_SHIM)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return shim


# LD_PRELOADed into the UML kernel process (see the module docstring).
_XSTATE_SHIM = r"""
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

static unsigned char host_state[65536] __attribute__((aligned(64)));
static size_t host_size;

/* XSAVE components (standard format) that lie wholly inside the first `len` bytes; computed
   once (CPUID is slow under a hypervisor, and this runs at every guest system call). */
static uint64_t features_within(size_t len)
{
    static size_t known_len;
    static uint64_t known_mask;
    if (len == known_len)
        return known_mask;
    uint64_t mask = 3; /* x87 and SSE: the legacy area */
    for (unsigned int i = 2; i < 64; i++) {
        unsigned int size, offset, ecx, edx;
        __cpuid_count(0xd, i, size, offset, ecx, edx);
        if (size != 0 && offset + size <= len)
            mask |= 1ULL << i;
    }
    known_len = len;
    known_mask = mask;
    return mask;
}

long ptrace(enum __ptrace_request request, ...)
{
    static ptrace_fn real;
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if (!real)
        real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    if ((request != PTRACE_GETREGSET && request != PTRACE_SETREGSET)
        || (uintptr_t)addr != NT_X86_XSTATE)
        return real(request, pid, addr, data);

    struct iovec *theirs = data;
    if (host_size == 0) { /* the regset's size: what a GET with room to spare fills */
        struct iovec probe = {host_state, sizeof host_state};
        if (real(PTRACE_GETREGSET, pid, addr, &probe) != 0)
            return real(request, pid, addr, data);
        host_size = probe.iov_len;
    }
    if (theirs->iov_len >= host_size)
        return real(request, pid, addr, data);
    struct iovec ours = {host_state, host_size};
    if (request == PTRACE_GETREGSET) {
        long done = real(request, pid, addr, &ours);
        if (done == 0)
            memcpy(theirs->iov_base, host_state, theirs->iov_len);
        return done;
    }
    memset(host_state, 0, host_size);
    memcpy(host_state, theirs->iov_base, theirs->iov_len);
    uint64_t xfeatures; /* XSAVE header, offset 512: the components present */
    memcpy(&xfeatures, host_state + 512, sizeof xfeatures);
    xfeatures &= features_within(theirs->iov_len);
    memcpy(host_state + 512, &xfeatures, sizeof xfeatures);
    return real(request, pid, addr, &ours);
}
"""


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
# pycni kernel lane: init of the User-Mode Linux guest (written by pycni/lab/uml.py).
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
case {cwd} in  # a checkout under a directory the guest gets fresh: the host's, read-write
    /run/*|/tmp/*|/var/tmp/*|/dev/shm/*)
        mkdir -p {cwd} && mount -t hostfs -o {cwd} hostfs {cwd} || die "mount {cwd}" ;;
esac
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
