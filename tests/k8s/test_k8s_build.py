"""The Kubernetes build's cache contract: paths, the inputs hash, a second call is a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycni.lab.k8s import build


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "k8s" / build.VERSION
    monkeypatch.setenv("PYCNI_K8S_CACHE", str(directory))
    return directory


def test_cache_paths_follow_the_override(cache: Path) -> None:
    assert build.cache_dir() == cache
    assert build.cache_root() == cache.parent
    assert build.work_dir() == cache.parent / "work" / build.VERSION


def test_default_cache_is_keyed_by_the_debian_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYCNI_K8S_CACHE", raising=False)
    assert build.cache_dir() == Path("/var/cache/pycni/k8s/1.20.5+really1.20.2-1.1+deb12u1")


def test_an_incomplete_cache_names_the_command_to_run(cache: Path) -> None:
    (cache / "bin").mkdir(parents=True)
    (cache / "bin" / "kubelet").write_bytes(b"")  # present, but COMPLETE is not
    with pytest.raises(build.BuildError, match=r"packaging/k8s\.sh build"):
        build.binary("kubelet")
    with pytest.raises(build.BuildError, match=r"packaging/k8s\.sh build"):
        build.image("pause-3.2")


def test_paths_of_a_complete_cache(cache: Path) -> None:
    cache.mkdir(parents=True)
    (cache / "COMPLETE").write_text("x\n")
    assert build.binary("e2e.test") == cache / "bin" / "e2e.test"
    assert build.image("agnhost-2.21") == cache / "images" / "agnhost-2.21.tar"
    assert build.image("pause-3.2.tar") == cache / "images" / "pause-3.2.tar"
    assert build.images_index() == cache / "images" / "images.json"
    with pytest.raises(ValueError, match="unknown Kubernetes binary"):
        build.binary("kube-dns")
    with pytest.raises(ValueError, match="unknown image"):
        build.image("busybox-1.29")


def test_inputs_hash_depends_on_go_and_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    first = build.inputs_hash(go="go version go1.19.8 linux/amd64")
    assert first == build.inputs_hash(go="go version go1.19.8 linux/amd64")
    assert first != build.inputs_hash(go="go version go1.21.0 linux/amd64")
    monkeypatch.setattr(build, "RECIPE_REVISION", build.RECIPE_REVISION + 1)
    assert first != build.inputs_hash(go="go version go1.19.8 linux/amd64")


def test_second_build_with_the_same_inputs_does_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir(parents=True)
    (cache / "COMPLETE").write_text(build.inputs_hash() + "\n")

    def must_not_build(*args: object) -> None:
        raise AssertionError("build() rebuilt a complete cache")

    monkeypatch.setattr(build, "_build", must_not_build)
    assert build.build(install_packages=False) == cache


def test_changed_inputs_rebuild_and_complete_is_written_last(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir(parents=True)
    (cache / "COMPLETE").write_text("an older recipe\n")
    seen: list[bool] = []

    def fake_build(log: object, expected: str) -> None:
        seen.append((cache / "COMPLETE").exists())
        (cache / "COMPLETE").unlink()  # as _build does before copying the outputs
        (cache / "COMPLETE").write_text(expected + "\n")

    monkeypatch.setattr(build, "_build", fake_build)
    build.build(install_packages=False)
    assert seen == [True]
    assert build.is_complete()
    assert build.log_path().is_file()


def test_ldflags_set_the_upstream_version() -> None:
    flags = build.ldflags()
    assert "-X 'k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v1.20.2'" in flags
    assert "-X 'k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitMinor=20'" in flags


def test_go_env_is_gopath_mode_static_and_offline(cache: Path) -> None:
    env = build.go_env()
    assert env["GO111MODULE"] == "off"
    assert env["CGO_ENABLED"] == "0"
    assert env["GOPROXY"] == "off"
    assert env["GOPATH"] == str(cache.parent / "work" / build.VERSION / "gopath")


def test_go_targets_build_every_binary_into_staging(tmp_path: Path) -> None:
    targets = build.go_targets(tmp_path)
    assert [name for name, _ in targets] == list(build.BINARIES)
    for name, argv in targets:
        assert argv[argv.index("-o") + 1] == str(tmp_path / name)
    e2e_argv = dict(targets)["e2e.test"]
    assert e2e_argv[:3] == ["go", "test", "-c"] and e2e_argv[-1] == "./test/e2e"
    assert build.go_targets_hash(targets) == build.go_targets_hash(build.go_targets(tmp_path))
    assert build.go_targets_hash(targets) != build.go_targets_hash(targets[:-1])


def test_install_renames_over_a_binary_in_use_and_keeps_an_unchanged_one(tmp_path: Path) -> None:
    source, target = tmp_path / "new", tmp_path / "kubelet"
    source.write_bytes(b"v2")
    target.write_bytes(b"v1")
    running = target.open("rb")  # stands for the executable a node still runs
    try:
        inode = target.stat().st_ino
        build._install(source, target)
        assert target.read_bytes() == b"v2" and target.stat().st_ino != inode
        assert running.read() == b"v1"  # the old file lives on for whoever has it open
    finally:
        running.close()
    inode = target.stat().st_ino
    build._install(source, target)
    assert target.stat().st_ino == inode  # same content: not touched
