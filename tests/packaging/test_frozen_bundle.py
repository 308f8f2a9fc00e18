"""dist/cni/bin as an operator installs it and a runtime runs it.

packaging/build.sh leaves there one executable per row of pycni/cni/registry.py, sharing
one frozen runtime (pycni-runtime/). A runtime execs a plugin with a bare environment, from
wherever its working directory happens to be, often through a symlink, on nodes where /tmp is
mounted noexec; operators copy the directory around. Each of those is tried here, with the
call that needs no setup (VERSION) and the error path that loads the most (a config that is
not JSON: pycni.cni.jsonio reaches for json.decoder, a hidden import of the build).
Protocol behaviour per plugin lives in the plugins' own frozen tests (tests/ipam/...).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import unavailable
from tests.support.paths import plugin_table

pytestmark = pytest.mark.frozen

RUNTIME_DIR = "pycni-runtime"
# Libraries a bundle should take from the node, not carry (no security update would reach them).
SYSTEM_LIBRARIES = ("libcrypto.", "libssl.", "liblzma.", "libbz2.")
VERSION_ANSWER = {
    "cniVersion": "1.1.0",
    "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
}
# What packaging/pycni.spec excludes and a plugin must never carry.
EXCLUDED = (
    *("pyroute2", "jsonschema", "asyncio", "multiprocessing", "tkinter", "unittest", "pydoc"),
    *("email", "http", "xml", "ssl", "_ssl", "_hashlib", "lzma", "_lzma", "bz2", "_bz2"),
)


PLUGINS = plugin_table().read()
EXECUTABLES = [entry.executable for entry in PLUGINS]


@pytest.fixture(autouse=True)
def _no_mei_left_in_tmp() -> Iterator[None]:
    """onedir never unpacks itself; a /tmp/_MEI* directory would mean onefile crept back."""
    before = set(glob.glob("/tmp/_MEI*"))
    yield
    left = set(glob.glob("/tmp/_MEI*")) - before
    assert not left, f"a frozen executable left {sorted(left)} in /tmp"


def needs_mount_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("needs root and unshare(1) for a private mount namespace")


def execute(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | str = "/",
    stdin: bytes = b"",
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv),
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def assert_version(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout!r} {done.stderr!r}"
    assert done.stdout.count(b"\n") == 1 and done.stdout.endswith(b"\n"), done.stdout
    assert json.loads(done.stdout) == VERSION_ANSWER
    assert done.stderr == b""


def assert_decode_error(done: subprocess.CompletedProcess[bytes]) -> None:
    assert done.returncode == 1, f"exit {done.returncode}: {done.stdout!r} {done.stderr!r}"
    error = json.loads(done.stdout)
    assert error["code"] == 6, error  # failed to decode the network config
    assert b"Traceback" not in done.stdout + done.stderr, done.stderr.decode()


# Truncated inside a string: the C scanner reports this through json.decoder.JSONDecodeError.
NOT_JSON = b'{"cniVersion": "1.0.0", "name'
ADD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_IFNAME": "eth0",
    "CNI_NETNS": "/proc/self/ns/net",
    "CNI_PATH": "/opt/cni/bin",
}


# --- what is in the bundle ----------------------------------------------------------------


def test_layout_is_executables_plus_one_runtime(bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == sorted([*EXECUTABLES, RUNTIME_DIR])
    for name in EXECUTABLES:
        exe = bundle / name
        assert exe.is_file() and not exe.is_symlink(), exe
        assert os.access(exe, os.X_OK), f"{exe} is not executable"
    runtime = bundle / RUNTIME_DIR
    assert runtime.is_dir() and not runtime.is_symlink()
    assert (runtime / "pycni" / "cni" / "entry.pyc").is_file()  # modules as .pyc files (noarchive)
    assert list(runtime.glob("libpython3*.so*")), f"no libpython in {runtime}"
    private_copies = [p.name for p in runtime.rglob("*") if p.name.startswith(SYSTEM_LIBRARIES)]
    assert not private_copies, f"the runtime ships copies of system libraries: {private_copies}"


@pytest.mark.parametrize("entry", PLUGINS, ids=lambda e: e.executable)
def test_executable_holds_its_entry_and_no_runtime_hooks(bundle: Path, entry: Any) -> None:
    try:
        from PyInstaller.archive import readers  # type: ignore[import-untyped]
    except ImportError:
        unavailable("PyInstaller missing: pip install -e '.[dev]' (packaging/setup.sh does)")
    archive = readers.CArchiveReader(str(bundle / entry.executable))
    names = set(archive.toc)
    assert not [n for n in names if n.startswith("pyi_rth_")], sorted(names)
    assert entry.executable in names
    assert not names & (set(EXECUTABLES) - {entry.executable}), sorted(names)
    # The spec freezes with noarchive: the modules are .pyc files in the shared runtime dir.
    runtime = bundle / RUNTIME_DIR
    assert _module_file(runtime, entry.module) is not None, entry.module
    # hidden import: _json raises json.decoder's error type
    assert _module_file(runtime, "json.decoder") is not None
    carried = sorted(
        str(p.relative_to(runtime)) for top in EXCLUDED for p in runtime.glob(f"{top}*")
    )
    assert not carried, f"the runtime carries excluded modules: {carried}"


def _module_file(runtime: Path, module: str) -> Path | None:
    base = runtime.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".pyc"), base / "__init__.pyc"):
        if candidate.is_file():
            return candidate
    return None


# --- exec'd as runtimes do ------------------------------------------------------------------


@pytest.mark.parametrize("name", EXECUTABLES)
def test_version_in_a_bare_environment(bundle: Path, name: str) -> None:
    assert_version(execute([str(bundle / name)], {"CNI_COMMAND": "VERSION"}))


@pytest.mark.parametrize("name", EXECUTABLES)
def test_config_that_is_not_json_is_a_decode_error(bundle: Path, name: str) -> None:
    assert_decode_error(execute([str(bundle / name)], ADD_ENV, stdin=NOT_JSON))


@pytest.mark.parametrize("name", EXECUTABLES)
def test_runs_from_any_working_directory(bundle: Path, name: str, tmp_path: Path) -> None:
    assert_version(execute([str(bundle / name)], {"CNI_COMMAND": "VERSION"}, cwd=tmp_path))
    assert_version(execute([f"./{name}"], {"CNI_COMMAND": "VERSION"}, cwd=bundle))
    assert_version(execute([f"./bin/{name}"], {"CNI_COMMAND": "VERSION"}, cwd=bundle.parent))


@pytest.mark.parametrize("entry", PLUGINS, ids=lambda e: e.executable)
def test_runs_through_a_symlink(bundle: Path, entry: Any, tmp_path: Path) -> None:
    """As when /opt/cni/bin/<type> links to pycni-<type> elsewhere."""
    link_dir = tmp_path / "opt-cni-bin"
    link_dir.mkdir()
    link = link_dir / entry.cni_type
    link.symlink_to(bundle / entry.executable)
    assert_version(execute([str(link)], {"CNI_COMMAND": "VERSION"}, cwd=tmp_path))
    # found on PATH by its bare name, as `exec.LookPath` in a runtime would
    done = execute([entry.cni_type], {"CNI_COMMAND": "VERSION", "PATH": str(link_dir)})
    assert_version(done)


def test_a_copy_runs_without_the_original(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bin"
    shutil.copytree(bundle, copy, symlinks=True)
    for name in EXECUTABLES:
        assert_version(execute([str(copy / name)], {"CNI_COMMAND": "VERSION"}, cwd=tmp_path))
        assert_decode_error(execute([str(copy / name)], ADD_ENV, stdin=NOT_JSON))
    # With the original hidden under an empty tmpfs, the copy must still be self-contained.
    needs_mount_namespace()
    script = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
    for name in EXECUTABLES:
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(bundle), str(copy / name)]
        assert_version(execute(argv, {"CNI_COMMAND": "VERSION", "PATH": os.environ["PATH"]}))


# Run inside a private mount namespace whose /tmp is a fresh noexec tmpfs: every executable
# answers VERSION and the decode error; host-local also leases and releases an address with
# its dataDir in that /tmp. Reports what happened, and what was left in /tmp, as JSON.
IN_NOEXEC_TMP = r"""
import json, os, subprocess, sys
not_json, bundle, names = sys.argv[1].encode(), sys.argv[2], sys.argv[3:]
report = {"mounts": [l.split() for l in open("/proc/self/mounts") if l.split()[1] == "/tmp"]}

def call(name, env, stdin=b""):
    done = subprocess.run([os.path.join(bundle, name)], env=env, input=stdin,
                          capture_output=True, cwd="/tmp", timeout=60)
    return [done.returncode, done.stdout.decode(), done.stderr.decode()]

attachment = {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/proc/self/ns/net",
              "CNI_PATH": bundle}
for name in names:
    report[name] = {
        "VERSION": call(name, {"CNI_COMMAND": "VERSION"}),
        "not-json": call(name, {"CNI_COMMAND": "ADD", **attachment}, not_json),
    }
if "pycni-host-local" in names:
    conf = {"cniVersion": "1.0.0", "name": "noexec", "ipam": {"type": "pycni-host-local",
            "ranges": [[{"subnet": "10.77.0.0/24"}]], "dataDir": "/tmp/leases"}}
    add = call("pycni-host-local", {"CNI_COMMAND": "ADD", **attachment}, json.dumps(conf).encode())
    report["host-local ADD"] = add
    if add[0] == 0:
        conf["prevResult"] = json.loads(add[1])
    for verb in ("CHECK", "DEL"):
        report[f"host-local {verb}"] = call(
            "pycni-host-local", {"CNI_COMMAND": verb, **attachment}, json.dumps(conf).encode())
    report["leases"] = sorted(os.listdir("/tmp/leases/noexec"))
    subprocess.run(["rm", "-rf", "/tmp/leases"], check=True)
report["left in /tmp"] = sorted(os.listdir("/tmp"))
print(json.dumps(report))
"""


def test_works_with_tmp_mounted_noexec(bundle: Path) -> None:
    needs_mount_namespace()
    # The fresh /tmp hides whatever lived under the old one, and CI may clone the repository
    # there: run a copy of the bundle, and the interpreter by its real path, from outside /tmp.
    staging = Path(tempfile.mkdtemp(prefix="pycni-noexec-", dir="/var/tmp"))
    try:
        shutil.copytree(bundle, staging / "bin", symlinks=True)
        python = os.path.realpath(sys.executable)
        assert not python.startswith("/tmp/"), f"the interpreter lives under /tmp: {python}"
        script = 'mount -t tmpfs -o noexec,nosuid,nodev tmpfs /tmp && exec "$@"'
        argv = ["unshare", "-m", "sh", "-c", script, "sh", python, "-I", "-c", IN_NOEXEC_TMP]
        done = execute(
            [*argv, NOT_JSON.decode(), str(staging / "bin"), *EXECUTABLES],
            {"PATH": os.environ["PATH"]},
        )
    finally:
        shutil.rmtree(staging)
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["mounts"] and "noexec" in report["mounts"][-1][3].split(","), report["mounts"]
    for name in EXECUTABLES:
        status, stdout, stderr = report[name]["VERSION"]
        assert (status, stderr) == (0, ""), f"{name} VERSION: exit {status}: {stdout} {stderr}"
        assert json.loads(stdout) == VERSION_ANSWER
        status, stdout, stderr = report[name]["not-json"]
        assert (status, json.loads(stdout)["code"]) == (1, 6), f"{name}: {stdout}\n{stderr}"
    if "pycni-host-local" in EXECUTABLES:
        for verb in ("ADD", "CHECK", "DEL"):
            status, stdout, stderr = report[f"host-local {verb}"]
            assert status == 0, f"{verb} failed with /tmp noexec: {stdout} {stderr}"
        assert not [n for n in report["leases"] if n[0].isdigit() or ":" in n], report["leases"]
    assert report["left in /tmp"] == [], "the executables wrote to /tmp (onefile unpacking?)"
