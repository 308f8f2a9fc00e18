"""The registry-free images: docker-archive structure, determinism, and a real import + run.

The last test imports both tarballs into a containerd of its own with `ctr -n k8s.io images
import` (as the cluster does) and runs the agnhost image with runc to exec what the e2e specs
exec inside it: a shell, `seq`, `curl`, `nc -u`. It runs inside `unshare --mount --net`: a tmpfs
on /run/containerd (ctr and the shim keep fifos and sockets there) and an empty network
namespace, so nothing of the host is touched and everything goes away with the namespace.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from pycni.lab.k8s import images

TREE_FILES = {"localhost.crt": b"crt\n", "localhost.key": b"key\n"}


def fake_tree(root: Path) -> Path:
    """The two parts of the Kubernetes tree the images take: pause.c and porter's certificate."""
    porter = root / "test" / "images" / "agnhost" / "porter"
    porter.mkdir(parents=True)
    for name, data in TREE_FILES.items():
        (porter / name).write_bytes(data)
    pause = root / "build" / "pause" / "linux"
    pause.mkdir(parents=True)
    (pause / "pause.c").write_text(
        "#include <stdio.h>\n#include <string.h>\n#include <unistd.h>\n"
        "#define TEXT(x) #x\n#define STRING(x) TEXT(x)\n"
        "int main(int c, char **v) {\n"
        '  if (c > 1 && !strcmp(v[1], "-v")) {\n'
        '    printf("pause %s\\n", STRING(VERSION));\n'
        "    return 0;\n"
        "  }\n"
        "  for (;;) pause();\n}\n"
    )
    return root


def read_archive(path: Path) -> tuple[list[dict[str, object]], dict[str, bytes]]:
    with tarfile.open(path) as tar:
        members = {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }
    return json.loads(members["manifest.json"]), members


def test_docker_archive_has_the_layout_ctr_and_docker_load_read(tmp_path: Path) -> None:
    layer = images.Layer()
    layer.add_file("/etc/hello", b"hi\n")
    layer.add_link("/bin", "usr/bin")
    layer.add_file("/usr/bin/tool", b"#!/bin/sh\n", 0o755)
    out = tmp_path / "img.tar"
    image_id = images.write_docker_archive(
        out, layer, tags=["example.org/a:1", "example.org/b:2"], entrypoint=["/usr/bin/tool"]
    )
    manifest, members = read_archive(out)
    assert len(manifest) == 1
    entry = manifest[0]
    assert entry["RepoTags"] == ["example.org/a:1", "example.org/b:2"]
    config_bytes = members[str(entry["Config"])]
    assert image_id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config = json.loads(config_bytes)
    layers = entry["Layers"]
    assert isinstance(layers, list) and len(layers) == 1
    layer_name = str(layers[0])
    layer_bytes = members[layer_name]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/usr/bin/tool"]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as tar:
        entries = {member.name: member for member in tar.getmembers()}
    assert entries["etc"].isdir() and entries["usr/bin"].isdir()
    assert entries["bin"].issym() and entries["bin"].linkname == "usr/bin"
    assert entries["usr/bin/tool"].mode == 0o755
    assert all(member.uid == 0 and member.gid == 0 for member in entries.values())


def test_same_inputs_give_the_same_image_id(tmp_path: Path) -> None:
    def write(name: str) -> str:
        layer = images.Layer()
        layer.add_file("/a", b"a")
        layer.add_file("/dir/b", b"b")
        return images.write_docker_archive(
            tmp_path / name, layer, tags=["x/y:1"], entrypoint=["/a"]
        )

    assert write("one.tar") == write("two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_a_file_below_a_link_is_refused() -> None:
    layer = images.Layer()
    layer.add_link("/bin", "usr/bin")
    with pytest.raises(ValueError, match="/bin is a link"):
        layer.add_file("/bin/sh", b"")


def test_shared_libraries_names_the_loader_and_libc() -> None:
    libraries = images.shared_libraries(Path(shutil.which("curl") or "/usr/bin/curl"))
    assert any("ld-linux" in lib for lib in libraries)
    assert any("/libc.so" in lib for lib in libraries)
    assert any("libcurl" in lib for lib in libraries)


def test_in_usr_maps_the_merged_usr_paths() -> None:
    assert images.in_usr("/lib/x86_64-linux-gnu/libc.so.6") == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert images.in_usr("/lib64/ld-linux-x86-64.so.2") == "/usr/lib64/ld-linux-x86-64.so.2"
    assert images.in_usr("/usr/bin/curl") == "/usr/bin/curl"
    assert images.in_usr("/libexec") == "/libexec"


def build_test_images(tmp_path: Path) -> dict[str, list[str]]:
    tree = fake_tree(tmp_path / "tree")
    # /usr/bin/true stands in for agnhost: dynamic, but libc is in the image for the tools
    return images.build_images(
        tree=tree, agnhost=Path("/usr/bin/true"), out=tmp_path / "out", work=tmp_path / "work"
    )


def test_build_images_writes_the_manifest_go_names(tmp_path: Path) -> None:
    index = build_test_images(tmp_path)
    assert index == {
        "agnhost-2.21.tar": ["k8s.gcr.io/e2e-test-images/agnhost:2.21"],
        "pause-3.2.tar": ["k8s.gcr.io/pause:3.2"],
    }
    assert json.loads((tmp_path / "out" / "images.json").read_text()) == index
    manifest, members = read_archive(tmp_path / "out" / "agnhost-2.21.tar")
    config = json.loads(members[str(manifest[0]["Config"])])
    assert config["config"]["Entrypoint"] == ["/agnhost"]
    assert config["config"]["Cmd"] == ["pause"]
    layers = manifest[0]["Layers"]
    assert isinstance(layers, list) and len(layers) == 1
    layer_name = str(layers[0])
    with tarfile.open(fileobj=io.BytesIO(members[layer_name])) as tar:
        names = set(tar.getnames())
    for needed in (
        "agnhost",
        "usr/bin/dash",
        "usr/bin/curl",
        "usr/bin/nc",
        "usr/bin/seq",
        "localhost.crt",
        "uploads",
        "tmp",
        "usr/lib64/ld-linux-x86-64.so.2",
    ):
        assert needed in names, needed


def _root_with_containerd() -> str | None:
    if os.geteuid() != 0:
        return "needs root (containerd, runc, mount namespace)"
    for tool in ("containerd", "ctr", "runc", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install containerd runc)"
    return None


IMPORT_AND_RUN = textwrap.dedent(
    """\
    set -eu
    # /run/containerd may not exist: a tmpfs on /run (private to this namespace) then holds it
    mount -t tmpfs tmpfs /run/containerd 2>/dev/null || mount -t tmpfs tmpfs /run
    ip link set lo up
    containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
    pid=$!
    trap 'kill $pid; wait $pid || true' EXIT
    for i in $(seq 1 100); do [ -S "$D/containerd.sock" ] && break; sleep 0.1; done
    ctr="ctr --address $D/containerd.sock -n k8s.io"
    $ctr images import "$OUT/agnhost-2.21.tar"
    $ctr images import "$OUT/pause-3.2.tar"
    $ctr images ls -q
    $ctr run --rm k8s.gcr.io/pause:3.2 p1 /pause -v
    $ctr run --rm k8s.gcr.io/e2e-test-images/agnhost:2.21 a1 /bin/sh -c '
        for i in $(seq 1 2); do echo "loop $i"; done
        curl --version | head -n 1
        nc -h 2>&1 | head -n 1
        nslookup -version 2>&1 | head -n 1
        echo hostName | nc -w 1 -u 127.0.0.1 9 && echo "nc -u ok"
        curl -g -q -s --connect-timeout 1 http://127.0.0.1:1/ || echo "curl exit $?"
        wget -q -T 1 -O - http://127.0.0.1:1/ || echo "wget exit $?"
    '
    """
)


@pytest.mark.slow
def test_ctr_imports_both_images_and_the_agnhost_image_runs_the_e2e_tools(tmp_path: Path) -> None:
    reason = _root_with_containerd()
    if reason:
        pytest.skip(f"cannot run containerd here: {reason}")
    build_test_images(tmp_path)
    state = tmp_path / "ctd"
    state.mkdir()
    (state / "config.toml").write_text(
        textwrap.dedent(
            f"""\
            version = 2
            root = "{state}/root"
            state = "{state}/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "{state}/containerd.sock"
            [ttrpc]
              address = "{state}/containerd.sock.ttrpc"
            """
        )
    )
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "bash", "-c", IMPORT_AND_RUN],
        env={**os.environ, "D": str(state), "OUT": str(tmp_path / "out")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    log = (state / "containerd.log").read_text() if (state / "containerd.log").exists() else ""
    assert result.returncode == 0, output + "\n--- containerd log tail ---\n" + log[-3000:]
    assert "k8s.gcr.io/e2e-test-images/agnhost:2.21" in output
    assert "k8s.gcr.io/pause:3.2" in output
    assert "pause v3.2-pycni" in output
    assert "loop 1\nloop 2" in output
    assert "curl 7." in output
    assert "OpenBSD netcat" in output
    assert "nslookup 9." in output
    assert "nc -u ok" in output
    assert "curl exit 7" in output
    assert (
        "wget exit 4" in output
    )  # GNU wget: network failure  # connection refused: curl ran and reached the network stack
