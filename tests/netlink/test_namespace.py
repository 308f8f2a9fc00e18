"""pycni.netlink.namespace: a socket opened inside a network namespace (by path, /proc/PID
path or fd) while our own thread and process stay where they were, even when the switch
fails (a scripted setns) or the namespace is missing."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pycni.cni.errors import Code, NotFound
from pycni.lab.netns import Netns
from pycni.netlink import NamespaceError, NamespaceNotFound, NetlinkExists, Rtnl, namespace
from pycni.netlink import socket as netlink_socket
from tests.support.netlink import ip_names


def own_namespaces() -> tuple[str, str]:
    return os.readlink("/proc/self/ns/net"), os.readlink("/proc/thread-self/ns/net")


def namespace_id(path: str) -> str:
    return f"net:[{os.stat(path).st_ino}]"


class FakeSocket:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_refused_setns_is_a_namespace_error_and_we_go_back_anyway(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []

    def refuse(fd: int) -> int:
        calls.append(fd)
        return errno.EPERM

    monkeypatch.setattr(namespace, "_setns", refuse)
    with pytest.raises(NamespaceError) as caught:
        namespace.socket_in_netns(str(tmp_path), FakeSocket)  # type: ignore[arg-type]
    assert not isinstance(caught.value, NotFound) and caught.value.code == Code.KERNEL
    assert str(caught.value) == (
        f"failed to open network namespace '{tmp_path}': Operation not permitted"
    )
    assert len(calls) == 2  # in (refused), and back to our own (harmless)


def test_failing_to_come_back_is_an_internal_error_and_closes_the_socket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    answers = iter([0, errno.EBADF])  # in: fine; back: refused
    monkeypatch.setattr(namespace, "_setns", lambda fd: next(answers))
    made: list[FakeSocket] = []

    def factory() -> Any:
        made.append(FakeSocket())
        return made[-1]

    with pytest.raises(NamespaceError, match="still inside it") as caught:
        namespace.socket_in_netns(str(tmp_path), factory)
    assert caught.value.code == Code.INTERNAL
    assert made[0].closed


@pytest.mark.netns
def test_the_socket_is_inside_the_namespace(netns: Netns) -> None:
    netns.ip("link", "add", "only-here", "type", "bridge")
    with Rtnl(netns=netns.path) as rt:
        assert {link.name for link in rt.links()} == ip_names(netns) == {"lo", "only-here"}


@pytest.mark.netns
def test_a_missing_namespace_is_namespace_not_found(netns: Netns, tmp_path: Path) -> None:
    before = own_namespaces()
    gone = f"/run/netns/{netns.name}-gone"
    with pytest.raises(NamespaceNotFound) as caught:
        Rtnl(netns=gone)
    assert caught.value.code == Code.UNKNOWN_CONTAINER and isinstance(caught.value, NotFound)
    assert gone in str(caught.value)
    with pytest.raises(NamespaceNotFound):
        Rtnl(netns="/proc/999999999/ns/net")
    plain_file = tmp_path / "plain-file"  # e.g. /run/netns/x once its mount is gone
    plain_file.write_text("")
    with pytest.raises(NamespaceNotFound, match="not a network namespace"):
        Rtnl(netns=str(plain_file))
    with Rtnl(netns=netns.path) as rt:
        with pytest.raises(NamespaceNotFound):
            rt.create_veth("veth0", "eth0", peer_netns=gone)
        with pytest.raises(NamespaceNotFound):
            rt.set_link("lo", netns=gone)
        assert [link.name for link in rt.links()] == ["lo"]  # no veth was created
    assert own_namespaces() == before


@pytest.mark.netns
def test_our_own_namespace_is_unchanged_after_work_and_failures(
    netns: Netns, pod_ns: Netns
) -> None:
    before = own_namespaces()
    with Rtnl(netns=netns.path) as host:
        host.create_veth("veth0", "eth0", peer_netns=pod_ns.path)
        assert own_namespaces() == before
        with pytest.raises(NetlinkExists):
            host.create_bridge("veth0")
        assert own_namespaces() == before

    def failing_factory() -> Any:
        assert os.readlink("/proc/thread-self/ns/net") == namespace_id(pod_ns.path)
        raise RuntimeError("socket() failed")

    with pytest.raises(RuntimeError, match=r"socket\(\) failed"):
        namespace.socket_in_netns(pod_ns.path, failing_factory)
    assert own_namespaces() == before
    assert "eth0" in ip_names(pod_ns) and "veth0" in ip_names(netns)


@pytest.mark.netns
def test_entering_a_namespace_moves_only_the_calling_thread(netns: Netns) -> None:
    before = own_namespaces()
    seen: dict[str, str] = {}

    def factory() -> Any:
        seen["during"] = os.readlink("/proc/thread-self/ns/net")
        seen["main thread during"] = os.readlink(f"/proc/self/task/{os.getpid()}/ns/net")
        return netlink_socket._new_socket()

    def worker() -> None:
        namespace.socket_in_netns(netns.path, factory).close()
        seen["after"] = os.readlink("/proc/thread-self/ns/net")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {
        "during": namespace_id(netns.path),
        "main thread during": before[1],
        "after": before[1],
    }
    assert own_namespaces() == before


@pytest.mark.netns
def test_a_namespace_by_proc_pid_path_and_by_fd(netns: Netns) -> None:
    netns.ip("link", "add", "marker0", "type", "bridge")
    sleeper = subprocess.Popen(["ip", "netns", "exec", netns.name, "sleep", "30"])
    try:
        path = f"/proc/{sleeper.pid}/ns/net"
        deadline = time.monotonic() + 10  # until `ip netns exec` has entered the namespace
        while namespace_id(path) != namespace_id(netns.path) and time.monotonic() < deadline:
            time.sleep(0.01)
        with Rtnl(netns=path) as rt:
            assert "marker0" in {link.name for link in rt.links()}
    finally:
        sleeper.kill()
        sleeper.wait()
    fd = os.open(netns.path, os.O_RDONLY)
    try:
        with Rtnl(netns=fd) as rt:
            assert rt.get_link("marker0").kind == "bridge"
    finally:
        os.close(fd)
