"""Per-call cost of the frozen pycni-host-local against the Go reference host-local.

A benchmark, not a test: it prints numbers and never fails on them. Every CNI call is a fresh
process, so what is measured is one exec each, the way a runtime execs a plugin (bare
environment, config on stdin), from spawn to reap. The two plugins are interleaved call by
call -- VERSION, ADD, CHECK, DEL for one container with pycni, then with Go (the order flips
every round) -- so that drift in the machine's speed hits both alike; the paired ratio is the
median over rounds of pycni's time divided by Go's in the same round.

Both run cniVersion 1.0.0 (Debian's Go plugins, 1.1.1, stop there), each with its own dataDir,
a unique container ID per round, and a network namespace made for the run (host-local never
enters it; CNI_NETNS just has to exist). Peak RSS per call comes from wait4(2).

Needs root (ip netns add). Usage, from the repository root after packaging/build.sh:

    .venv/bin/python bench/startup.py [--rounds 100] [--output bench/results.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "dist" / "cni" / "bin"
GO_DIR = Path("/usr/lib/cni")
VERBS = ("VERSION", "ADD", "CHECK", "DEL")
CNI_VERSION = "1.0.0"
VERSION_TARGET = 6.0  # the goal: VERSION within 6x of Go


class Plugin:
    """One implementation under test: its executable, its dataDir, its samples."""

    def __init__(self, label: str, executable: Path, ipam_type: str, data_dir: Path) -> None:
        self.label = label
        self.executable = executable
        self.ipam_type = ipam_type
        self.data_dir = data_dir
        self.ms: dict[str, list[float]] = {verb: [] for verb in VERBS}
        self.rss_kib: dict[str, list[int]] = {verb: [] for verb in VERBS}
        self.stderr_path = data_dir.parent / f"{label}.stderr"

    def config(self) -> dict[str, Any]:
        """A bridge network's config, as the bridge plugin hands it to its IPAM plugin."""
        return {
            "cniVersion": CNI_VERSION,
            "name": "bench",
            "type": "bridge",
            "bridge": "cni-bench0",
            "isGateway": True,
            "ipam": {
                "type": self.ipam_type,
                "ranges": [[{"subnet": "10.99.0.0/16"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(self.data_dir),
            },
        }


class CallError(Exception):
    pass


# Peak RSS cannot come from the timed calls: a process's ru_maxrss keeps the high-water mark of
# the memory it had before execve(2), and a child spawned from this (Python) process starts
# with this process's memory. So RSS is sampled in separate calls, each plugin started by a
# short-lived /bin/sh that forks it and exits at once: the plugin then begins with the shell's
# few hundred KiB, is re-parented to us (we are a child subreaper) and wait4(2) gives its own
# peak. (GNU time's %M agrees.)
PR_SET_CHILD_SUBREAPER = 36
_FORK_AND_LEAVE = '"$@" <&3 3<&- & exit 0'


def become_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def spawn(
    executable: Path,
    env: Mapping[str, str],
    stdin: bytes,
    stderr_path: Path,
    *,
    rss: bool,
    args: Sequence[str] = (),
) -> tuple[float, int, int, bytes, str]:
    """Exec once, as a runtime does; returns (ms, exit status, peak RSS KiB, stdout, stderr).
    With `rss`, the plugin is started through /bin/sh (see above) and the time means little.
    `args` follow the executable's name in argv (a runtime passes none; bench floors do)."""
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    with open(stderr_path, "w+b") as err:
        if rss:
            argv = ["/bin/sh", "-c", _FORK_AND_LEAVE, "sh", str(executable)]
            stdin_fd = 3
        else:
            argv = [str(executable), *args]
            stdin_fd = 0
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin_r, stdin_fd),
            (os.POSIX_SPAWN_DUP2, stdout_w, 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        started = time.perf_counter_ns()
        pid = os.posix_spawn(argv[0], argv, dict(env), file_actions=actions)
        os.close(stdin_r)
        os.close(stdout_w)
        os.write(stdin_w, stdin)  # a few hundred bytes: well within the pipe's buffer
        os.close(stdin_w)
        chunks = []
        while chunk := os.read(stdout_r, 65536):
            chunks.append(chunk)
        os.close(stdout_r)
        _, wait_status, usage = os.wait4(pid, 0)
        if rss:  # that was the shell; now the plugin, re-parented to us
            _, wait_status, usage = os.wait4(-1, 0)
        elapsed = (time.perf_counter_ns() - started) / 1e6
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    status = os.waitstatus_to_exitcode(wait_status)
    return elapsed, status, usage.ru_maxrss, b"".join(chunks), stderr


def call(
    plugin: Plugin,
    verb: str,
    container_id: str,
    netns: str,
    config: Mapping[str, Any] | None,
    *,
    record: str,
) -> bytes:
    """One call; `record` is "time", "rss" or "" (warm-up)."""
    env = {"CNI_COMMAND": verb}
    if verb != "VERSION":
        env |= {
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(plugin.executable.parent),
        }
    stdin = json.dumps(config).encode() if config is not None else b""
    ms, status, rss_kib, stdout, stderr = spawn(
        plugin.executable, env, stdin, plugin.stderr_path, rss=record == "rss"
    )
    if status != 0:
        raise CallError(
            f"{plugin.label} {verb} {container_id} exited {status}\n"
            f"stdout: {stdout.decode(errors='replace')}\nstderr: {stderr}"
        )
    if record == "time":
        plugin.ms[verb].append(ms)
    elif record == "rss":
        plugin.rss_kib[verb].append(rss_kib)
    return stdout


def run_rounds(pycni: Plugin, go: Plugin, rounds: int, warmup: int, netns: str) -> None:
    """VERSION, ADD, CHECK, DEL of one container per round, the two plugins interleaved call
    by call; who goes first flips every round."""
    for n in range(-warmup, rounds):
        pair = (pycni, go) if n % 2 == 0 else (go, pycni)
        container_id = f"bench-{os.getpid()}-{n + warmup}"
        config = {p.label: p.config() for p in pair}
        results: dict[str, Any] = {}
        record = "time" if n >= 0 else ""
        for verb in VERBS:
            for p in pair:
                conf: dict[str, Any] | None = None
                if verb == "ADD":
                    conf = config[p.label]
                elif verb in ("CHECK", "DEL"):
                    conf = {**config[p.label], "prevResult": results[p.label]}
                out = call(p, verb, container_id, netns, conf, record=record)
                if verb == "ADD":
                    results[p.label] = json.loads(out)
                    if not results[p.label].get("ips"):
                        raise CallError(f"{p.label} ADD returned no address: {out!r}")


def sample_rss(plugins: tuple[Plugin, ...], rounds: int, netns: str) -> None:
    for n in range(rounds):
        for p in plugins:
            container_id = f"bench-rss-{os.getpid()}-{n}"
            config = p.config()
            call(p, "VERSION", container_id, netns, None, record="rss")
            result = json.loads(call(p, "ADD", container_id, netns, config, record="rss"))
            with_prev = {**config, "prevResult": result}
            call(p, "CHECK", container_id, netns, with_prev, record="rss")
            call(p, "DEL", container_id, netns, with_prev, record="rss")


# --- the environment ----------------------------------------------------------------------


@contextmanager
def network_namespace() -> Iterator[str]:
    name = f"pycni-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _sigterm_exits(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: namespace, temp dirs


def machine() -> dict[str, str]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split("=" if "=" in line else ":", 1)[1].strip().strip('"')
        except OSError:
            pass
        return "unknown"

    def output(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    try:
        from importlib.metadata import version

        pyinstaller = version("pyinstaller")
    except Exception:
        pyinstaller = "unknown"
    runtime = BUNDLE / "pycni-runtime"
    libpython = sorted(p.name for p in runtime.glob("libpython3*.so*")) if runtime.is_dir() else []
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": f"{len(os.sched_getaffinity(0))} (nproc), {first('/proc/cpuinfo', 'model name')}",
        "kernel": platform.release(),
        "os": first("/etc/os-release", "PRETTY_NAME"),
        "python": f"{platform.python_version()} ({sys.executable}); bundle runtime:"
        f" {', '.join(libpython) or 'unknown'}",
        "pyinstaller": pyinstaller,
        "go plugins": f"containernetworking-plugins "
        f"{output('dpkg-query', '-W', '-f=${Version}', 'containernetworking-plugins')}"
        f" ({GO_DIR})",
    }


# --- the report ---------------------------------------------------------------------------


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def report(pycni: Plugin, go: Plugin, rounds: int, rss_rounds: int, info: Mapping[str, str]) -> str:
    lines = [
        f"# pycni-host-local vs Go host-local: per-call cost ({rounds} rounds, interleaved)",
        "",
        "| verb | pycni median ms | pycni p90 ms | Go median ms | Go p90 ms "
        "| paired ratio pycni/Go (median) | pycni peak RSS MiB | Go peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios: dict[str, float] = {}
    for verb in VERBS:
        a, b = pycni.ms[verb], go.ms[verb]
        ratios[verb] = statistics.median(x / y for x, y in zip(a, b, strict=True))
        lines.append(
            f"| {verb} | {statistics.median(a):.1f} | {p90(a):.1f} | {statistics.median(b):.1f}"
            f" | {p90(b):.1f} | {ratios[verb]:.1f}x"
            f" | {statistics.median(pycni.rss_kib[verb]) / 1024:.1f}"
            f" | {statistics.median(go.rss_kib[verb]) / 1024:.1f} |"
        )
    met = "met" if ratios["VERSION"] <= VERSION_TARGET else "NOT met"
    exe = pycni.executable
    runtime = exe.parent / "pycni-runtime"
    runtime_bytes = sum(p.stat().st_size for p in runtime.rglob("*") if p.is_file())
    lines += [
        "",
        f"Target: VERSION <= {VERSION_TARGET:g}x Go: **{met}** ({ratios['VERSION']:.1f}x).",
        "",
        f"- pycni: `{exe}` ({exe.stat().st_size / 1e6:.1f} MB, plus the shared"
        f" `pycni-runtime/`, {runtime_bytes / 1e6:.1f} MB)",
        f"- Go: `{go.executable}` ({go.executable.stat().st_size / 1e6:.1f} MB)",
        f"- cniVersion {CNI_VERSION}; per round: VERSION, ADD, CHECK, DEL of one container,"
        " the two plugins alternating call by call (who goes first flips every round);"
        " time is spawn to reap; the ratio is the median over rounds of pycni's time over Go's"
        " in the same round.",
        f"- Peak RSS: median of {rss_rounds} separate rounds, each plugin forked by a"
        " short-lived /bin/sh and reaped by the benchmark as subreaper (ru_maxrss from"
        " wait4(2)); a direct child would inherit the benchmark's own high-water mark.",
    ]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=100, help="measured rounds (default 100)")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded rounds first (3)")
    parser.add_argument(
        "--rss-rounds", type=int, default=5, help="separate rounds that sample peak RSS (5)"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown report here")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="dist/cni/bin to measure")
    parser.add_argument("--go", type=Path, default=GO_DIR, help="Go plugins directory")
    args = parser.parse_args(argv)

    pycni_exe = args.bundle / "pycni-host-local"
    go_exe = args.go / "host-local"
    problems = []
    if not pycni_exe.is_file():
        problems.append(f"{pycni_exe} missing: run packaging/build.sh")
    if not go_exe.is_file():
        problems.append(f"{go_exe} missing: apt-get install containernetworking-plugins")
    if os.geteuid() != 0:
        problems.append("needs root (it creates a network namespace with `ip netns add`)")
    if shutil.which("ip") is None:
        problems.append("needs `ip` (iproute2)")
    if args.rounds < 2 or args.rss_rounds < 1:
        problems.append("--rounds must be at least 2 and --rss-rounds at least 1")
    if problems:
        print("bench/startup.py: " + "; ".join(problems), file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _sigterm_exits)
    become_subreaper()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="pycni-bench-") as tmp, network_namespace() as ns:
        (Path(tmp) / "pycni").mkdir()
        (Path(tmp) / "go").mkdir()
        pycni = Plugin("pycni", pycni_exe, "pycni-host-local", Path(tmp) / "pycni" / "leases")
        go = Plugin("go", go_exe, "host-local", Path(tmp) / "go" / "leases")
        started = time.monotonic()
        try:
            run_rounds(pycni, go, args.rounds, args.warmup, ns)
            elapsed = time.monotonic() - started
            sample_rss((pycni, go), args.rss_rounds, ns)
        except CallError as failure:
            print(f"bench/startup.py: a call failed: {failure}", file=sys.stderr)
            return 1
    info["wall time"] = f"{elapsed:.1f} s for the timed rounds"
    text = report(pycni, go, args.rounds, args.rss_rounds, info)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
        print(f"(written to {args.output})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
