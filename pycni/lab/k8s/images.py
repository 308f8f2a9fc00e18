"""The two container images the e2e network tests need, made without docker or a registry.

test/utils/image/manifest.go in the v1.20.2 tree names every image e2e uses. The network,
Services and NetworkPolicy specs that can run here use only
`k8s.gcr.io/e2e-test-images/agnhost:2.21` and the sandbox image `k8s.gcr.io/pause:3.2` (the
kubelet's default --pod-infra-container-image). Both are built from the same tree:

- pause: build/pause/linux/pause.c compiled with `gcc -static` (as build/pause/Makefile does),
  `/pause` as the entrypoint;
- agnhost: test/images/agnhost (static Go) at `/agnhost` (+ the `agnhost-2` link its Dockerfile
  makes), entrypoint `/agnhost`, cmd `pause`. Upstream's image is Alpine with curl, nc, bash and
  iproute2, and the specs exec those inside it (`curl -g -q -s http://...`,
  `echo hostName | nc -w 1 -u HOST PORT`, `sh -c 'for i in $(seq 1 5); do ...'`). Busybox does
  not do (its `nc` has no `-u`, its `wget -T` crashes, its shell runs its own `nc`), so the image
  carries the host's Debian binaries instead - dash as /bin/sh, bash, curl, GNU wget,
  netcat-openbsd's nc, coreutils, grep, sed, iproute2's ip and ss, bind9-dnsutils' nslookup and
  dig - each with the shared libraries `ldd` names and the dynamic loader, in a merged-/usr layout.

Each image is written as a docker-archive tarball (manifest.json, an image config, one
layer.tar) that `ctr -n k8s.io images import` takes; `images.json` next to the tarballs maps each
tarball to its image names so the cluster can import them and check they are present.
The layer is deterministic (sorted entries, owner root, fixed mtime): same inputs, same digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

AGNHOST_TAG = "k8s.gcr.io/e2e-test-images/agnhost:2.21"
PAUSE_TAG = "k8s.gcr.io/pause:3.2"
MTIME = 1_600_000_000  # a fixed time for every entry, so the layer digest depends on content only
REVISION = 3

# Commands the e2e network specs exec inside agnhost pods: path in the image -> host command.
AGNHOST_TOOLS: dict[str, str] = {
    "/usr/bin/dash": "dash",
    "/usr/bin/bash": "bash",
    "/usr/bin/curl": "curl",
    # "should be able to up and down services" runs `wget -q -T 1 -O - URL` (GNU wget does)
    "/usr/bin/wget": "wget",
    "/usr/bin/nc": "nc.openbsd",
    "/usr/bin/ip": "ip",
    "/usr/bin/ss": "ss",
    "/usr/bin/grep": "grep",
    "/usr/bin/sed": "sed",
    "/usr/bin/hostname": "hostname",
    # the ExternalName specs run `nslookup NAME` (upstream's image has bind-tools)
    "/usr/bin/nslookup": "nslookup",
    "/usr/bin/dig": "dig",
    **{
        f"/usr/bin/{name}": name
        for name in (
            "cat",
            "cut",
            "date",
            "echo",
            "env",
            "false",
            "head",
            "id",
            "ls",
            "mkdir",
            "rm",
            "seq",
            "sleep",
            "sort",
            "tail",
            "test",
            "timeout",
            "touch",
            "tr",
            "true",
            "uname",
            "wc",
        )
    },
}
AGNHOST_LINKS = {"/usr/bin/sh": "dash", "/agnhost-2": "agnhost"}
# Merged /usr: what the binaries' interpreters and library paths name lands under /usr.
ROOT_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}
# glibc loads NSS modules with dlopen (ldd cannot see them): host names for curl and nc.
NSS_LIBRARIES = ("libnss_files.so.2", "libnss_dns.so.2")
ETC_FILES = {
    "/etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "/etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "/etc/nsswitch.conf": "hosts: files dns\nnetworks: files\n",
}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def recipe() -> dict[str, object]:
    """What the images depend on besides the tree (part of the build's inputs hash)."""
    return {
        "revision": REVISION,
        "tags": [AGNHOST_TAG, PAUSE_TAG],
        "tools": AGNHOST_TOOLS,
        "links": AGNHOST_LINKS,
    }


@dataclass
class Layer:
    """The files of a one-layer image: path in the image -> bytes, link target or directory."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(path)
        self.files[path] = (data, mode)

    def add_host_file(self, path: str, source: Path) -> None:
        resolved = source.resolve()
        mode = resolved.stat().st_mode & 0o7777
        self.add_file(path, resolved.read_bytes(), mode)

    def add_link(self, path: str, target: str) -> None:
        self._parents(path)
        self.links[path] = target

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self._parents(path)
        self.dirs[path] = mode

    def _parents(self, path: str) -> None:
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            if parent in self.links:
                raise ValueError(f"{path}: parent {parent} is a link in the image")
            self.dirs.setdefault(parent, 0o755)
            parent = os.path.dirname(parent)

    def tar_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            entries = sorted({*self.dirs, *self.links, *self.files})
            for path in entries:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.mtime = MTIME
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if path in self.dirs:
                    info.type = tarfile.DIRTYPE
                    info.mode = self.dirs[path]
                    tar.addfile(info)
                elif path in self.links:
                    info.type = tarfile.SYMTYPE
                    info.linkname = self.links[path]
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    data, mode = self.files[path]
                    info.size = len(data)
                    info.mode = mode
                    tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()


def write_docker_archive(
    out: Path,
    layer: Layer,
    *,
    tags: Iterable[str],
    entrypoint: list[str],
    cmd: list[str] | None = None,
    env: list[str] | None = None,
) -> str:
    """Write a one-layer docker-archive tarball; return the image config's digest (the image ID).

    The format `docker save` writes and `ctr images import` / `docker load` read:
    manifest.json ([{Config, RepoTags, Layers}]), the config as `<sha256>.json`, and the layer as
    `<layer sha256>/layer.tar` (uncompressed, so its digest is also its diff_id).
    """
    layer_tar = layer.tar_bytes()
    layer_digest = hashlib.sha256(layer_tar).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2020-09-13T12:26:40Z",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": env or [PATH_ENV],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "2020-09-13T12:26:40Z", "created_by": "pycni.lab.k8s.images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    tag_list = list(tags)
    manifest = [
        {
            "Config": f"{config_digest}.json",
            "RepoTags": tag_list,
            "Layers": [f"{layer_digest}/layer.tar"],
        }
    ]
    repositories: dict[str, dict[str, str]] = {}
    for tag in tag_list:
        repository, _, version = tag.rpartition(":")
        repositories.setdefault(repository, {})[version] = layer_digest
    members = [
        (f"{layer_digest}/", None),
        (f"{layer_digest}/VERSION", b"1.0"),
        (f"{layer_digest}/layer.tar", layer_tar),
        (f"{config_digest}.json", config_bytes),
        ("manifest.json", json.dumps(manifest).encode()),
        ("repositories", json.dumps(repositories).encode()),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = MTIME
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    partial.replace(out)
    return f"sha256:{config_digest}"


def in_usr(path: str) -> str:
    """/lib/x/libc.so.6 -> /usr/lib/x/libc.so.6 (the image is merged-/usr)."""
    for top in ROOT_LINKS:
        if path == top or path.startswith(top + "/"):
            return "/usr" + path
    return path


_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def shared_libraries(binary: Path) -> list[str]:
    """The absolute paths ldd names for `binary` (libraries and the loader); [] for static."""
    result = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        raise RuntimeError(f"ldd {binary}: {result.stderr.strip() or result.stdout.strip()}")
    missing = [line.strip() for line in result.stdout.splitlines() if "not found" in line]
    if missing:
        raise RuntimeError(f"ldd {binary}: missing libraries: {missing}")
    return [match.group(1) for match in _LDD_LINE.finditer(result.stdout)]


def host_command(name: str) -> Path:
    found = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(
            f"{name!r} is not installed on this machine; the agnhost image needs it "
            "(apt-get install dash bash curl wget netcat-openbsd coreutils grep sed iproute2 "
            "hostname bind9-dnsutils)"
        )
    return Path(found)


def agnhost_layer(agnhost: Path, porter_dir: Path) -> Layer:
    layer = Layer()
    for path, target in ROOT_LINKS.items():
        layer.add_link(path, target)
        layer.add_dir("/usr/" + target.removeprefix("usr/"))
    layer.add_host_file("/agnhost", agnhost)
    libraries: set[str] = set()
    for path, name in AGNHOST_TOOLS.items():
        source = host_command(name)
        layer.add_host_file(path, source)
        libraries.update(shared_libraries(source))
    loader_dirs = {os.path.dirname(lib) for lib in libraries if "/libc.so" in lib}
    for lib in NSS_LIBRARIES:
        for directory in loader_dirs:
            candidate = Path(directory) / lib
            if candidate.exists():
                libraries.add(str(candidate))
    for lib in sorted(libraries):
        layer.add_host_file(in_usr(lib), Path(lib))
    for path, target in AGNHOST_LINKS.items():
        layer.add_link(path, target)
    for path, text in ETC_FILES.items():
        layer.add_file(path, text.encode())
    for name in ("localhost.crt", "localhost.key"):
        layer.add_host_file(f"/{name}", porter_dir / name)
    layer.add_dir("/tmp", 0o1777)
    layer.add_dir("/uploads")
    layer.add_dir("/root", 0o700)
    for mount_point in ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf"):
        if mount_point.startswith("/etc/"):
            layer.add_file(mount_point, b"")
        else:
            layer.add_dir(mount_point)
    return layer


def compile_pause(tree: Path, work: Path) -> Path:
    source = tree / "build" / "pause" / "linux" / "pause.c"
    out = work / "pause"
    subprocess.run(
        [
            "gcc",
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            "-DVERSION=v3.2-pycni",
            "-o",
            str(out),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    return out


def pause_layer(pause: Path) -> Layer:
    layer = Layer()
    layer.add_host_file("/pause", pause)
    return layer


def build_images(
    *, tree: Path, agnhost: Path, out: Path, work: Path, log: Callable[[str], None] = print
) -> dict[str, list[str]]:
    """Write agnhost-2.21.tar, pause-3.2.tar and images.json into `out`; return the index."""
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    layer = agnhost_layer(agnhost, tree / "test" / "images" / "agnhost" / "porter")
    digest = write_docker_archive(
        out / "agnhost-2.21.tar",
        layer,
        tags=[AGNHOST_TAG],
        entrypoint=["/agnhost"],
        cmd=["pause"],
    )
    log(f"agnhost-2.21.tar: {AGNHOST_TAG} {digest} ({len(layer.files)} files)")
    pause = compile_pause(tree, work)
    digest = write_docker_archive(
        out / "pause-3.2.tar", pause_layer(pause), tags=[PAUSE_TAG], entrypoint=["/pause"]
    )
    log(f"pause-3.2.tar: {PAUSE_TAG} {digest}")
    index = {"agnhost-2.21.tar": [AGNHOST_TAG], "pause-3.2.tar": [PAUSE_TAG]}
    (out / "images.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index
