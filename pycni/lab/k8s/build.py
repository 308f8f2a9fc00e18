"""Build Kubernetes v1.20.2 from Debian's source package, once per machine, into a cache.

There is no container engine and no registry here, but Debian bookworm's source package
`kubernetes` is the whole upstream tree (vendor/ and staging/ included), and Debian's Go 1.19
builds it offline in GOPATH mode. `build()` does, in order (each step logged to
`<cache>/../build-<version>.log`):

1. `apt-get source` the exact Debian version (deb-src entries derived from the machine's apt
   sources, as packaging/cnitool.sh does), unpacked (Debian's patches applied) under the work
   directory `<cache root>/work/<version>/`;
2. replace the vendored github.com/modern-go/reflect2 v1.0.1 by Debian's v1.0.2: v1.0.1 makes
   the API server panic under Go >= 1.18 (nil pointer in `reflect2.(*frozenConfig).Type2`);
3. `make generated_files` (openapi and friends are not in the tarball);
4. `go build` the six commands, `go test -c ./test/e2e` and `go build ./test/images/agnhost`,
   static (CGO_ENABLED=0), with the version ldflags upstream's hack/lib/version.sh sets (e2e
   and kubectl read the server's version);
5. the agnhost and pause images (pycni.lab.k8s.images), as docker-archive tarballs;
6. `COMPLETE`, holding the inputs hash, written last.

A second call with the same inputs (Debian version, Go version, recipe) returns at once. The Go
build cache and the unpacked tree stay in the work directory, so a changed recipe rebuilds in
minutes, not from nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

VERSION = "1.20.5+really1.20.2-1.1+deb12u1"
UPSTREAM = "v1.20.2"
GIT_COMMIT = "faecb196815e248d3ecfb03c680a4507229c2a56"  # upstream v1.20.2 (no .git in the tarball)
CACHE_ROOT = Path("/var/cache/pycni/k8s")
# Bump when the recipe below changes in a way that changes the outputs.
RECIPE_REVISION = 1

COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
BINARIES = (*COMMANDS, "e2e.test", "agnhost")
IMAGES = ("agnhost-2.21", "pause-3.2")
APT_PACKAGES = (
    "golang-go",
    "rsync",
    "jq",
    "dpkg-dev",
    "golang-github-modern-go-reflect2-dev",
    "gcc",
    "libc6-dev",
    # what the agnhost image carries besides agnhost (see images.py)
    "dash",
    "curl",
    "wget",
    "netcat-openbsd",
    "bind9-dnsutils",
    # the node runtime (used by the cluster, installed here so one `build` prepares the machine)
    "etcd-server",
    "containerd",
    "runc",
)
REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
DEB_SRC_LIST = Path("/etc/apt/sources.list.d/pycni-deb-src.sources")


class BuildError(RuntimeError):
    """A build step failed; the message names the step and the log to read."""


def cache_root() -> Path:
    override = os.environ.get("PYCNI_K8S_CACHE")
    return Path(override).parent if override else CACHE_ROOT


def cache_dir() -> Path:
    """`/var/cache/pycni/k8s/<version>/`, or $PYCNI_K8S_CACHE."""
    override = os.environ.get("PYCNI_K8S_CACHE")
    return Path(override) if override else CACHE_ROOT / VERSION


def binary(name: str) -> Path:
    """The cached binary `name` (one of BINARIES); BuildError if the cache is not complete."""
    if name not in BINARIES:
        raise ValueError(f"unknown Kubernetes binary {name!r}; known: {', '.join(BINARIES)}")
    return _require_complete() / "bin" / name


def image(name: str) -> Path:
    """The cached image tarball, e.g. image("agnhost-2.21") -> .../images/agnhost-2.21.tar."""
    name = name.removesuffix(".tar")
    if name not in IMAGES:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    return _require_complete() / "images" / f"{name}.tar"


def images_index() -> Path:
    """images/images.json: tarball file name -> the image names (RepoTags) inside it."""
    return _require_complete() / "images" / "images.json"


def _require_complete() -> Path:
    directory = cache_dir()
    if not (directory / "COMPLETE").is_file():
        raise BuildError(
            f"no complete Kubernetes build in {directory}: run `packaging/k8s.sh build` first"
        )
    return directory


def work_dir() -> Path:
    return cache_root() / "work" / VERSION


def log_path() -> Path:
    return cache_root() / f"build-{VERSION}.log"


def go_version() -> str:
    try:
        return subprocess.run(
            ["go", "version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "go: not installed"


def inputs_hash(go: str | None = None) -> str:
    """What the cached outputs depend on: Debian version, Go version, recipe revision, contents."""
    from pycni.lab.k8s import images

    recipe = {
        "version": VERSION,
        "go": go if go is not None else go_version(),
        "recipe": RECIPE_REVISION,
        "binaries": BINARIES,
        "images": images.recipe(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def is_complete(expected_hash: str | None = None) -> bool:
    marker = cache_dir() / "COMPLETE"
    if not marker.is_file():
        return False
    return marker.read_text().strip() == (expected_hash or inputs_hash())


class _Log:
    """Timestamps to stdout and the log file; commands' output to the log file only."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.start = time.monotonic()

    def say(self, message: str) -> None:
        line = f"==> k8s build [{time.monotonic() - self.start:6.0f}s] {message}"
        print(line, flush=True)
        self.stream.write(line + "\n")
        self.stream.flush()

    def run(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 3600,
    ) -> None:
        self.stream.write(f"$ {' '.join(argv)}  (cwd={cwd})\n")
        self.stream.flush()
        started = time.monotonic()
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdout=self.stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        self.stream.write(f"# exit {result.returncode} after {time.monotonic() - started:.0f}s\n")
        self.stream.flush()
        if result.returncode != 0:
            raise BuildError(
                f"`{' '.join(argv[:4])}...` failed (exit {result.returncode}); "
                f"see the end of {self.stream.name}"
            )


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"==> k8s build: another build holds {lock}; waiting", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(*, install_packages: bool = True) -> Path:
    """Build everything into cache_dir() unless it is already complete; return cache_dir()."""
    if install_packages and not _packages_present():
        _install_packages()
    expected = inputs_hash()
    if is_complete(expected):
        print(f"==> k8s build: {cache_dir()} is complete (inputs unchanged); nothing to do")
        return cache_dir()
    with _exclusive(cache_root() / ".build.lock"):
        if is_complete(expected):
            return cache_dir()
        log_path().parent.mkdir(parents=True, exist_ok=True)
        with log_path().open("a") as stream:
            log = _Log(stream)
            log.say(f"building Kubernetes {VERSION} into {cache_dir()} (log: {log_path()})")
            _build(log, expected)
            log.say(f"done in {time.monotonic() - log.start:.0f}s")
    return cache_dir()


def _packages_present() -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\n", *APT_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    return len(lines) == len(APT_PACKAGES) and all(
        line.endswith("install ok installed") for line in lines
    )


def _install_packages() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"==> k8s build: apt-get install {' '.join(APT_PACKAGES)}", flush=True)
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=900)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
        env=env,
        check=True,
        timeout=1800,
    )


def _ensure_deb_src(log: _Log) -> None:
    sources = Path("/etc/apt/sources.list.d")
    has_src = any(
        "deb-src" in path.read_text(errors="replace")
        for path in sources.glob("*")
        if path.is_file()
    )
    debian = sources / "debian.sources"
    if not has_src and debian.is_file():
        log.say(f"adding deb-src entries ({DEB_SRC_LIST}) derived from {debian}")
        DEB_SRC_LIST.write_text(
            "\n".join(
                "Types: deb-src" if line.strip() == "Types: deb" else line
                for line in debian.read_text().splitlines()
            )
            + "\n"
        )
        log.run(["apt-get", "update", "-q"], timeout=900)


def source_tree() -> Path:
    return work_dir() / "gopath" / "src" / "k8s.io" / "kubernetes"


def _fetch_source(log: _Log) -> Path:
    tree = source_tree()
    if (tree / ".pycni-unpacked").is_file():
        log.say(f"source tree present: {tree}")
        return tree
    _ensure_deb_src(log)
    download = work_dir() / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    log.say(f"apt-get source kubernetes={VERSION}")
    log.run(
        ["apt-get", "source", "-q", "--download-only", f"kubernetes={VERSION}"],
        cwd=download,
        timeout=1800,
    )
    dsc = next(download.glob("kubernetes_*.dsc"))
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    log.say(f"unpacking {dsc.name}")
    log.run(["dpkg-source", "--no-check", "-x", str(dsc), str(tree)], cwd=download)
    shutil.rmtree(download, ignore_errors=True)
    for leftover in tree.parent.glob("kubernetes_*"):  # dpkg-source's copy of the orig tarball
        leftover.unlink()
    _swap_reflect2(log, tree)
    (tree / ".pycni-unpacked").write_text(VERSION + "\n")
    return tree


def _swap_reflect2(log: _Log, tree: Path) -> None:
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    if not (REFLECT2 / "reflect2.go").is_file():
        raise BuildError(
            f"{REFLECT2} missing: apt-get install golang-github-modern-go-reflect2-dev"
        )
    log.say(f"replacing vendored reflect2 v1.0.1 with Debian's v1.0.2 ({REFLECT2})")
    shutil.rmtree(vendored)
    shutil.copytree(REFLECT2, vendored, ignore=shutil.ignore_patterns("*_test.go", "go.mod"))
    modules = tree / "vendor" / "modules.txt"
    if modules.is_file():
        modules.write_text(
            modules.read_text().replace(
                "github.com/modern-go/reflect2 v1.0.1", "github.com/modern-go/reflect2 v1.0.2"
            )
        )


def go_env() -> dict[str, str]:
    work = work_dir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GO") and key not in {"CGO_ENABLED"}
    }
    env.update(
        GOPATH=str(work / "gopath"),
        GOCACHE=str(cache_root() / "gocache"),
        GO111MODULE="off",
        GOPROXY="off",
        GOFLAGS="",
        CGO_ENABLED="0",
        HOME=str(work),
    )
    return env


def ldflags() -> str:
    gitversion = UPSTREAM
    values = {
        "gitVersion": gitversion,
        "gitMajor": "1",
        "gitMinor": "20",
        "gitCommit": GIT_COMMIT,
        "gitTreeState": "clean",
        "buildDate": "2021-01-13T13:20:00Z",
    }
    packages = (
        "k8s.io/kubernetes/vendor/k8s.io/component-base/version",
        "k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version",
    )
    flags = ["-s", "-w"]
    flags += [f"-X '{pkg}.{key}={value}'" for pkg in packages for key, value in values.items()]
    return " ".join(flags)


def go_targets(staging: Path) -> list[tuple[str, list[str]]]:
    """(binary name, go command) for each binary, built into `staging`."""
    flags = ldflags()
    targets = [
        (name, ["go", "build", "-ldflags", flags, "-o", str(staging / name), f"./cmd/{name}"])
        for name in COMMANDS
    ]
    e2e_out = str(staging / "e2e.test")
    targets.append(
        ("e2e.test", ["go", "test", "-c", "-ldflags", flags, "-o", e2e_out, "./test/e2e"])
    )
    agnhost_out = str(staging / "agnhost")
    targets.append(
        (
            "agnhost",
            ["go", "build", "-ldflags", "-s -w", "-o", agnhost_out, "./test/images/agnhost"],
        )
    )
    return targets


def go_targets_hash(targets: list[tuple[str, list[str]]]) -> str:
    """What the Go binaries depend on besides the tree: stamped next to them once built."""
    return hashlib.sha256(json.dumps([go_version(), RECIPE_REVISION, targets]).encode()).hexdigest()


def _build(log: _Log, expected_hash: str) -> None:
    tree = _fetch_source(log)
    env = go_env()
    marker = tree / ".pycni-generated"
    if not marker.is_file():
        log.say("make generated_files (openapi etc. are not in the tarball)")
        log.run(["make", "generated_files"], cwd=tree, env=env, timeout=3600)
        marker.write_text("ok\n")
    staging = work_dir() / "bin"
    staging.mkdir(parents=True, exist_ok=True)
    targets = go_targets(staging)
    stamp = staging / ".inputs"
    binaries_hash = go_targets_hash(targets)
    if stamp.is_file() and stamp.read_text().strip() == binaries_hash:
        log.say(f"binaries in {staging} are up to date")
    else:
        stamp.unlink(missing_ok=True)
        for name, argv in targets:
            started = time.monotonic()
            log.say(f"go build {name}")
            log.run(argv, cwd=tree, env=env, timeout=5400)
            log.say(f"built {name} in {time.monotonic() - started:.0f}s")
        stamp.write_text(binaries_hash + "\n")

    from pycni.lab.k8s import images

    out = cache_dir()
    (out / "COMPLETE").unlink(missing_ok=True)
    (out / "bin").mkdir(parents=True, exist_ok=True)
    for name in BINARIES:
        _install(staging / name, out / "bin" / name)
    log.say("images: agnhost 2.21 and pause 3.2 (docker-archive tarballs)")
    images.build_images(
        tree=tree, agnhost=out / "bin" / "agnhost", out=out / "images", work=work_dir(), log=log.say
    )
    (out / "COMPLETE").write_text(expected_hash + "\n")


def _install(source: Path, target: Path) -> None:
    """Copy `source` over `target` by rename: a running kubelet or apiserver keeps its file
    (writing into a running executable fails with ETXTBSY); unchanged files are left alone."""
    if target.is_file() and _same_file_content(source, target):
        return
    partial = target.with_name(target.name + ".partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def _same_file_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            chunk = left.read(1 << 20)
            if chunk != right.read(1 << 20):
                return False
            if not chunk:
                return True


def main(argv: list[str] | None = None) -> int:
    del argv
    try:
        build()
    except (BuildError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        print(f"k8s build: {error}", file=sys.stderr)
        return 1
    return 0
