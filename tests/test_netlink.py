"""pycni.netlink against the kernel, cross-checked with pyroute2 and `ip -j`.

Every kernel test works inside network namespaces it creates (the `netns` fixture, and `pod`
below) and never touches the interfaces of the namespace the tests run in: every Rtnl is
opened with `netns=`, pyroute2 as `IPRoute(netns=name, flags=0)`, `ip` through `ip netns
exec`. Each operation is checked both ways: done by us and read by pyroute2 and/or `ip -j`;
done by `ip`/pyroute2 and read by us. Errnos are compared with what pyroute2 gets for the same
failing request.

The tests without a kernel check the tables against the uapi headers, our requests against
pyroute2's decoder (IPIP included, which this VM's kernel lacks), and the exchange logic
(sequence numbers, interrupted dumps, extended acks, big datagrams) with a scripted socket.
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteError
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from pycni.cni.errors import CniError, Code, NotFound
from pycni.cni.ip import IP, Prefix
from pycni.lab import netns as netns_mod
from pycni.netlink import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    NamespaceError,
    NamespaceNotFound,
    NetlinkError,
    NetlinkExists,
    NetlinkNotFound,
    Rtnl,
    TbfInfo,
    namespace,
    rtnl,
    wire,
)
from pycni.netlink import kernel as k
from pycni.netlink import socket as netlink_socket
from pycni.netlink.conntrack import Conntrack, ConntrackEntry

REPO = Path(__file__).resolve().parent.parent
HEADERS = Path("/usr/include/linux")
netns_test = pytest.mark.netns
Netns = netns_mod.Netns

# What importing pycni.netlink must not load: each costs milliseconds of every plugin call.
FORBIDDEN = frozenset(
    (
        "re",
        "enum",
        "typing",
        "dataclasses",
        "json",
        "ipaddress",
        "socket",
        "logging",
        "inspect",
        "functools",
        "collections",
        "contextlib",
        "subprocess",
        "ctypes",
        "asyncio",
        "pyroute2",
        "ast",
        "traceback",
        "threading",
    )
)


def ip(text: str) -> IP:
    return IP.parse(text)


def net(text: str) -> Prefix:
    return Prefix.parse(text)


def expect(actual: Any, **wanted: Any) -> None:
    """The named fields of `actual` are `wanted`: attributes of a record, keys of a dict
    (missing ones are None), fields of a pyroute2 message's header (not its attributes)."""

    def get(name: str) -> Any:
        if type(actual) is dict:
            return actual.get(name)
        if isinstance(actual, dict):  # pyroute2's messages: .get() would look at attributes
            return actual[name]
        return getattr(actual, name)

    assert {name: get(name) for name in wanted} == wanted


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def pod(netns: Netns) -> Iterator[Netns]:
    """A second throwaway namespace (a pod beside `netns`, the node; `netns` also checks that
    we are root); removed even if the test fails."""
    ns = netns_mod.create("pyt")
    try:
        yield ns
    finally:
        ns.delete()


@contextmanager
def pyroute(ns: Netns) -> Iterator[IPRoute]:
    with IPRoute(netns=ns.name, flags=0) as ipr:
        yield ipr


def pyroute_errno(call: Callable[[], object]) -> int:
    with pytest.raises(PyrouteError) as caught:
        call()
    return int(caught.value.code)


def ip_link(ns: Netns, name: str) -> dict[str, Any]:
    (found,) = ns.ip_json("-d", "link", "show", "dev", name)
    return dict(found)


def run_ip(ns: Netns, command: str) -> str:
    """`ip <command>` inside the namespace (arguments split at spaces)."""
    return ns.ip(*command.split())


def ip_names(ns: Netns) -> set[str]:
    return set(ns.link_names())


def ip_addresses(ns: Netns, dev: str) -> list[dict[str, Any]]:
    (found,) = ns.ip_json("addr", "show", "dev", dev)
    return list(found["addr_info"])


def ip_routes(ns: Netns, *args: str) -> list[dict[str, Any]]:
    """`ip -j -d [-6] route show [args]`: options such as -6 go before the object."""
    options = [arg for arg in args if arg.startswith("-")]
    rest = [arg for arg in args if not arg.startswith("-")]
    return list(ns.ip_json("-d", *options, "route", "show", *rest))


def ip_route(routes: list[dict[str, Any]], dst: str, **match: Any) -> dict[str, Any]:
    found = [r for r in routes if r["dst"] == dst and all(r.get(n) == v for n, v in match.items())]
    assert len(found) == 1, (dst, match, routes)
    return found[0]


def ip_batch(ns: Netns, lines: list[str]) -> None:
    ns.run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")


def bridge_fdb(ns: Netns, dev: str) -> list[dict[str, Any]]:
    done = ns.run(["bridge", "-j", "fdb", "show", "dev", dev])
    return list(json.loads(done.stdout or "[]"))


def own_namespaces() -> tuple[str, str]:
    return os.readlink("/proc/self/ns/net"), os.readlink("/proc/thread-self/ns/net")


def namespace_id(path: str) -> str:
    return f"net:[{os.stat(path).st_ino}]"


@contextmanager
def veth_up(ns: Netns) -> Iterator[int]:
    """A veth pair v0/v1, both up (so IPv6 DAD runs); yields v0's index."""
    for command in ("link add v0 type veth peer name v1", "link set v0 up", "link set v1 up"):
        run_ip(ns, command)
    yield ip_link(ns, "v0")["ifindex"]


@contextmanager
def routed(ns: Netns) -> Iterator[int]:
    """v0 up with 10.1.0.5/24 and fd00::5/64; yields its index."""
    with veth_up(ns) as v0:
        ns.ip("addr", "add", "10.1.0.5/24", "dev", "v0")
        ns.ip("addr", "add", "fd00::5/64", "dev", "v0", "nodad")
        yield v0


# --- import cost ---------------------------------------------------------------------------


def _modules_after(code: str) -> set[str]:
    """The modules loaded by `code` in a fresh `python -I -S` (nothing preloaded by site)."""
    program = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{code}\nprint(*sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def _forbidden(modules: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & FORBIDDEN)


def test_importing_netlink_loads_no_forbidden_module() -> None:
    modules = _modules_after("import pycni.netlink\npycni.netlink.Rtnl")
    assert not _forbidden(modules), f"import pycni.netlink loads {_forbidden(modules)}"
    assert "_ctypes" not in modules  # only entering a namespace loads it


def test_importing_netlink_with_site_adds_no_forbidden_module() -> None:
    """`python -c` as a person would type it; site (the editable install's finder) has
    loaded `re`, `enum`, ... before, so what counts is what the import adds."""
    program = (
        "import sys\nbefore = set(sys.modules)\nimport pycni.netlink\npycni.netlink.Rtnl\n"
        "print(*sorted(set(sys.modules) - before))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    added = set(done.stdout.split())
    assert "pycni.netlink.rtnl" in added
    assert not _forbidden(added), f"import pycni.netlink adds {_forbidden(added)}"


@netns_test
def test_entering_a_namespace_loads_only_the_c_half_of_ctypes(netns: Netns) -> None:
    modules = _modules_after(
        f"import pycni.netlink\nwith pycni.netlink.Rtnl(netns={netns.path!r}) as rt:\n"
        "    rt.links()"
    )
    assert not _forbidden(modules), f"Rtnl(netns=...) loads {_forbidden(modules)}"
    if not hasattr(os, "setns"):  # Python 3.11
        assert "_ctypes" in modules


# --- tables against the kernel's uapi headers ----------------------------------------------


def _header_values() -> dict[str, int]:
    """Enumerators and numeric #defines of the headers the tables come from."""
    values: dict[str, int] = {}
    for name in ("netlink.h", "rtnetlink.h", "if_link.h", "if_tunnel.h", "veth.h", "if_addr.h",
                 "neighbour.h", "if.h", "pkt_sched.h", "pkt_cls.h", "tc_act/tc_mirred.h",
                 "if_ether.h", "netfilter/nfnetlink.h",
                 "netfilter/nfnetlink_conntrack.h"):  # fmt: skip
        text = re.sub(r"/\*.*?\*/", "", (HEADERS / name).read_text(), flags=re.S)
        for define in re.finditer(r"#define\s+(\w+)\s+([^\n]*)", text):
            number = _number(define.group(2), values)
            if number is not None:
                values.setdefault(define.group(1), number)
        for body in re.findall(r"enum\s*\w*\s*\{(.*?)\}", text, flags=re.S):
            current = -1
            for raw in body.split(","):
                item = " ".join(
                    line for line in raw.splitlines() if not line.strip().startswith("#")
                )
                found = re.match(r"\s*(\w+)\s*(?:=\s*(.+?))?\s*$", item)
                if not found:
                    continue
                number = None if found.group(2) is None else _number(found.group(2), values)
                current = current + 1 if number is None else number
                values[found.group(1)] = current
    return values


def _number(text: str, known: dict[str, int]) -> int | None:
    text = text.strip().strip("()").strip()
    text = re.sub(r"(?<=[0-9a-fA-F])U$", "", text)  # 0xFFFFFFFFU
    shift = re.fullmatch(r"1\s*<<\s*(\d+)", text)
    if shift:
        return 1 << int(shift.group(1))
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text):
        return int(text, 0)
    return known.get(text)


@pytest.fixture(scope="module")
def header_values() -> dict[str, int]:
    if not (HEADERS / "if_link.h").exists():
        pytest.skip(f"{HEADERS} has no kernel headers (linux-libc-dev)")
    return _header_values()


def test_attribute_tables_match_the_kernel_headers(header_values: dict[str, int]) -> None:
    wrong = [
        f"{name}: ours {number}, header {header_values.get(name)}"
        for prefix, attrs in k.SPACES.items()
        for field, number in attrs.fields().items()
        if header_values.get(name := prefix + field.upper()) != number
    ]
    assert not wrong, "\n".join(wrong)


def test_constants_match_the_kernel_headers(header_values: dict[str, int]) -> None:
    prefixes = (
        "NLM_F_",
        "NLMSG_",
        "NETLINK_",
        "RTM_",
        "RTN_",
        "RTPROT_",
        "RT_SCOPE_",
        "RT_TABLE_",
        "RTNH_F_",
        "IFF_",
        "IFA_F_",
        "NTF_",
        "NUD_",
        "RTEXT_FILTER_",
        "TC_LINKLAYER_",
        "TC_H_ROOT",
        "TC_H_INGRESS",
        "TC_ACT_STOLEN",
        "TC_U32_TERMINAL",
        "TCA_EGRESS_",
        "TCA_INGRESS_",
        "ETH_P_ALL",
        "NFNL_SUBSYS_CTNETLINK",
        "NFNETLINK_V0",
        "IPCTNL_MSG_CT_",
    )
    ours = {name: getattr(k, name) for name in dir(k) if name.startswith(tuple(prefixes))}
    assert ours.pop("TC_H_INGRESS_HANDLE") == 0xFFFF0000  # TC_H_MAKE(TC_H_INGRESS, 0)
    assert ours.pop("NLM_F_DUMP") == header_values["NLM_F_ROOT"] | header_values["NLM_F_MATCH"]
    wrong = [
        f"{name}: ours {value}, header {header_values.get(name)}"
        for name, value in sorted(ours.items())
        if header_values.get(name) != value
    ]
    assert not wrong, "\n".join(wrong)
    operstates = {v: n for n, v in header_values.items() if n.startswith("IF_OPER_")}
    assert {number: f"IF_OPER_{name}" for number, name in k.OPERSTATES.items()} == operstates


# --- the wire format, offline --------------------------------------------------------------

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=15)
MACS = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
IPS = st.integers(0, 2**32 - 1).map(lambda v: IP(v, 4)) | st.integers(0, 2**128 - 1).map(
    lambda v: IP(v, 6)
)


@given(
    name=NAMES,
    mtu=st.integers(68, 2**32 - 1),
    mac=MACS,
    master=st.integers(1, 2**31 - 1),
    vni=st.integers(0, 2**24 - 1),
    port=st.integers(1, 65535),
    local=IPS,
    learning=st.booleans(),
)
def test_link_attributes_round_trip_and_pyroute2_reads_them_alike(
    name: str, mtu: int, mac: str, master: int, vni: int, port: int, local: IP, learning: bool
) -> None:
    six = local.version == 6
    data = {"id": vni, "port": port, "local6" if six else "local": local, "learning": learning}
    values = {"ifname": name, "mtu": mtu, "address": mac, "master": master}
    encoded = k.IFLA.encode({**values, "linkinfo": {"kind": "vxlan", "data": data}})

    decoded = k.IFLA.decode(memoryview(encoded))
    expect(decoded, **values)
    expect(decoded["linkinfo"], kind="vxlan", data=data)

    header = k.IFINFOMSG.pack(0, 0, 0, 0, 0)
    theirs = ifinfmsg(wire.pack_message(k.RTM_NEWLINK, 0, 1, header + encoded))
    theirs.decode()
    assert [theirs.get_attr(f"IFLA_{n}") for n in ("IFNAME", "MTU", "ADDRESS", "MASTER")] == [
        name,
        mtu,
        mac,
        master,
    ]
    info = theirs.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert info.get_attr("IFLA_VXLAN_ID") == vni
    assert info.get_attr("IFLA_VXLAN_PORT") == port
    assert info.get_attr("IFLA_VXLAN_LEARNING") == int(learning)
    assert ip(info.get_attr("IFLA_VXLAN_LOCAL6" if six else "IFLA_VXLAN_LOCAL")) == local


def test_unknown_attributes_are_skipped_and_a_truncated_one_ends_the_list() -> None:
    payload = wire.pack_attr(999, b"xyz") + k.IFLA.encode({"mtu": 1400}) + b"\x08\x00"
    assert k.IFLA.decode(memoryview(payload)) == {"mtu": 1400}


def test_bad_values_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="IFLA 'address'"):
        k.IFLA.encode({"address": "not-a-mac"})
    with pytest.raises(ValueError, match="IFLA has no attribute 'colour'"):
        k.IFLA.encode({"colour": 1})
    with pytest.raises(ValueError, match="IFLA 'mtu'"):
        k.IFLA.encode({"mtu": -1})


def test_errors_say_what_failed_the_project_way() -> None:
    error = NetlinkNotFound(errno.ENODEV, "delete link 'veth1'")
    assert str(error) == "failed to delete link 'veth1': No such device"
    assert isinstance(error, NetlinkError) and isinstance(error, NotFound)
    assert isinstance(error, CniError) and error.code == Code.KERNEL
    expect(error, errno=errno.ENODEV, what="delete link 'veth1'", strerror="No such device")
    unsupported = NetlinkError(errno.EOPNOTSUPP, "create ipip tunnel 't0'", "Unknown device type")
    assert str(unsupported) == (
        "failed to create ipip tunnel 't0': Operation not supported (Unknown device type)"
    )
    missing = NamespaceNotFound("/run/netns/gone")
    assert isinstance(missing, NotFound) and missing.code == Code.UNKNOWN_CONTAINER
    assert (
        str(missing)
        == "failed to open network namespace '/run/netns/gone': no such file or directory"
    )


# --- the namespace switch's failures, with a scripted setns --------------------------------


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


# --- the exchange, with a scripted socket --------------------------------------------------

PORT = 4242
MSG_PEEK, MSG_TRUNC = 0x2, 0x20


def _message(msg_type: int, flags: int, seq: int, payload: bytes, port: int = PORT) -> bytes:
    length = wire.NLMSG_HDR.size + len(payload)
    head = wire.NLMSG_HDR.pack(length, msg_type, flags, seq, port)
    return head + payload + b"\0" * (wire.align(length) - length)


def _link(index: int) -> bytes:
    return k.IFINFOMSG.pack(0, 1, index, k.IFF_UP, 0) + k.IFLA.encode(
        {"ifname": f"l{index}", "mtu": 1500, "linkinfo": {"kind": "bridge"}}
    )


def _ack(seq: int, error: int = 0, flags: int = 0, tail: bytes = b"") -> bytes:
    return _message(k.NLMSG_ERROR, flags, seq, struct.pack("=i", -error) + tail)


def _done(seq: int, flags: int = k.NLM_F_MULTI) -> bytes:
    return _message(k.NLMSG_DONE, flags, seq, struct.pack("=i", 0))


def _header(request: bytes) -> tuple[int, int, int, int, int]:
    """(len, type, flags, seq, pid) of a request."""
    length, msg_type, flags, seq, pid = wire.NLMSG_HDR.unpack_from(request)
    return length, msg_type, flags, seq, pid


class ScriptedSocket:
    """Answers each request with the datagrams `script(request_number, request)` returns."""

    def __init__(self, script: Callable[[int, bytes], list[bytes]]) -> None:
        self.script = script
        self.sent: list[bytes] = []
        self.queue: list[bytes] = []
        self.options: list[tuple[object, ...]] = []  # setsockopt calls, in order

    def setsockopt(self, *args: object) -> None:
        self.options.append(args)

    def bind(self, address: object) -> None:
        pass

    def getsockname(self) -> tuple[int, int]:
        return (PORT, 0)

    def close(self) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        self.queue += self.script(len(self.sent), bytes(data))
        return len(data)

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        datagram = self.queue[0] if flags & MSG_PEEK else self.queue.pop(0)
        size = min(len(buf), len(datagram))
        buf[:size] = datagram[:size]
        return len(datagram) if flags & MSG_TRUNC else size


def scripted(script: Callable[[int, bytes], list[bytes]]) -> tuple[Rtnl, ScriptedSocket]:
    sock = ScriptedSocket(script)
    return Rtnl(sock=sock), sock  # type: ignore[arg-type]


def test_an_interrupted_dump_is_read_to_its_end_and_run_again() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = _header(request)[3]
        flags = k.NLM_F_MULTI | (k.NLM_F_DUMP_INTR if number == 1 else 0)
        first, second = (
            _message(k.RTM_NEWLINK, flags, seq, _link(number * 10 + i)) for i in (0, 1)
        )
        return [first + second, _done(seq, flags)]

    rt, sock = scripted(script)
    assert [link.index for link in rt.links()] == [20, 21]
    assert len(sock.sent) == 2 and sock.queue == []
    _, msg_type, flags, _, _ = _header(sock.sent[0])
    assert msg_type == k.RTM_GETLINK
    assert flags == k.NLM_F_REQUEST | k.NLM_F_ACK | k.NLM_F_DUMP


def test_a_dump_interrupted_every_time_fails_with_eintr() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = _header(request)[3]
        return [
            _message(k.RTM_NEWLINK, k.NLM_F_MULTI | k.NLM_F_DUMP_INTR, seq, _link(1)),
            _done(seq),
        ]

    rt, sock = scripted(script)
    with pytest.raises(NetlinkError, match=r"list links.*interrupted") as caught:
        rt.links()
    assert caught.value.errno == errno.EINTR
    assert len(sock.sent) == netlink_socket.DUMP_ATTEMPTS


def test_answers_to_other_requests_and_ports_are_skipped() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = _header(request)[3]
        stale = _message(k.RTM_NEWLINK, k.NLM_F_MULTI, seq - 1, _link(7)) + _done(seq - 1)
        other_port = _message(k.RTM_NEWLINK, 0, seq, _link(8), port=PORT + 1)
        return [stale, other_port, _message(k.RTM_NEWLINK, 0, seq, _link(3)), _ack(seq)]

    rt, sock = scripted(script)
    assert rt.get_link(3).name == "l3"
    assert sock.queue == []


def test_sequence_numbers_increase_per_request() -> None:
    rt, sock = scripted(lambda number, request: [_ack(_header(request)[3])])
    for _ in range(3):
        rt.delete_link(5)
    assert [_header(request)[3] for request in sock.sent] == [1, 2, 3]


def test_the_kernels_own_words_come_with_the_errno() -> None:
    """An extended ack after the request's header only (NETLINK_CAP_ACK), and after the whole
    request echoed (a kernel that ignored CAP_ACK)."""
    words = k.NLMSGERR.encode({"msg": "Unknown device type"})

    def capped(number: int, request: bytes) -> list[bytes]:
        flags = k.NLM_F_CAPPED | k.NLM_F_ACK_TLVS
        return [_ack(_header(request)[3], errno.EOPNOTSUPP, flags, request[:16] + words)]

    def echoed(number: int, request: bytes) -> list[bytes]:
        tail = request + b"\0" * (wire.align(len(request)) - len(request)) + words
        return [_ack(_header(request)[3], errno.EOPNOTSUPP, k.NLM_F_ACK_TLVS, tail)]

    for script in (capped, echoed):
        rt, _ = scripted(script)
        with pytest.raises(NetlinkError) as caught:
            rt.create_ipip("tun0", local=ip("10.0.0.1"))
        expect(caught.value, errno=errno.EOPNOTSUPP, kernel_message="Unknown device type")
        assert str(caught.value) == (
            "failed to create ipip tunnel 'tun0': Operation not supported (Unknown device type)"
        )


def test_a_datagram_larger_than_the_buffer_grows_it() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = _header(request)[3]
        many = (_message(k.RTM_NEWLINK, k.NLM_F_MULTI, seq, _link(i)) for i in range(1, 2000))
        return [b"".join(many), _done(seq)]

    rt, _ = scripted(script)
    links = rt.links()
    assert len(links) == 1999 and links[-1].name == "l1999"


# --- our requests, decoded by pyroute2 (no kernel needed) ----------------------------------


def _acking(number: int, request: bytes) -> list[bytes]:
    """Acks everything; answers RTM_GETLINK with link 3 (what a create returns)."""
    _, msg_type, _, seq, _ = _header(request)
    if msg_type == k.RTM_GETLINK:
        return [_message(k.RTM_NEWLINK, 0, seq, _link(3)), _ack(seq)]
    return [_ack(seq)]


def _decoded(request: bytes, message_class: Any) -> Any:
    message = message_class(request)
    message.decode()
    return message


def _attrs(message: Any) -> dict[str, Any]:
    return {name: value for name, value, *_ in message["attrs"]}


def test_link_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(_acking)
    rt.create_ipip("tun0", local=ip("10.0.0.1"), remote=ip("10.0.0.2"), underlay=3, ttl=64,
                   pmtudisc=True, mtu=1480, up=True)  # fmt: skip
    request = _decoded(sock.sent[-2], ifinfmsg)
    assert (
        request["header"]["flags"] == k.NLM_F_REQUEST | k.NLM_F_ACK | k.NLM_F_CREATE | k.NLM_F_EXCL
    )
    expect(request, flags=k.IFF_UP, change=k.IFF_UP)
    assert [request.get_attr("IFLA_IFNAME"), request.get_attr("IFLA_MTU")] == ["tun0", 1480]
    info = request.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "ipip"
    assert _attrs(info.get_attr("IFLA_INFO_DATA")) == {
        "IFLA_IPIP_LINK": 3,
        "IFLA_IPIP_LOCAL": "10.0.0.1",
        "IFLA_IPIP_REMOTE": "10.0.0.2",
        "IFLA_IPIP_TTL": 64,
        "IFLA_IPIP_PMTUDISC": 1,
    }

    rt.create_veth("veth0", "eth0", peer_netns=9, mtu=1400, mac="02:00:00:00:00:01",
                   peer_mac="02:00:00:00:00:02")  # fmt: skip
    request = _decoded(sock.sent[-2], ifinfmsg)
    assert [request.get_attr(f"IFLA_{n}") for n in ("IFNAME", "MTU", "ADDRESS")] == [
        "veth0",
        1400,
        "02:00:00:00:00:01",
    ]
    peer = request.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    expect(peer, flags=0, change=0)
    assert _attrs(peer) == {
        "IFLA_IFNAME": "eth0",
        "IFLA_MTU": 1400,
        "IFLA_ADDRESS": "02:00:00:00:00:02",
        "IFLA_NET_NS_FD": 9,
    }

    rt.set_link(3, up=False, promiscuous=True, mtu=1300, master=4)
    request = _decoded(sock.sent[-1], ifinfmsg)
    expect(request, index=3, flags=k.IFF_PROMISC, change=k.IFF_UP | k.IFF_PROMISC)
    assert _attrs(request) == {"IFLA_MTU": 1300, "IFLA_MASTER": 4}

    rt.set_bridge_port(3, hairpin=True, learning=False)
    request = _decoded(sock.sent[-1], ifinfmsg)
    expect(request, family=AF_BRIDGE, index=3)
    assert _header(sock.sent[-1])[1] == k.RTM_SETLINK
    protinfo = request.get_attr("IFLA_PROTINFO")
    assert (protinfo.get_attr("IFLA_BRPORT_MODE"), protinfo.get_attr("IFLA_BRPORT_LEARNING")) == (
        1,
        0,
    )


def test_address_route_and_neighbour_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(_acking)
    rt.add_address(3, net("fd00::5/64"), nodad=True, noprefixroute=True, replace=True)
    request = _decoded(sock.sent[-1], ifaddrmsg)
    modifiers = request["header"]["flags"] & (k.NLM_F_CREATE | k.NLM_F_REPLACE | k.NLM_F_EXCL)
    assert modifiers == k.NLM_F_CREATE | k.NLM_F_REPLACE
    expect(request, family=AF_INET6, prefixlen=64, index=3)
    expect(_attrs(request), IFA_FLAGS=k.IFA_F_NODAD | k.IFA_F_NOPREFIXROUTE, IFA_LOCAL="fd00::5")

    rt.add_address(3, net("10.1.0.5/24"))
    expect(_attrs(_decoded(sock.sent[-1], ifaddrmsg)), IFA_BROADCAST="10.1.0.255")

    rt.add_route(net("10.9.0.0/16"), gateway=ip("192.168.7.1"), oif=3, onlink=True, table=1000,
                 metric=7, mtu=1300, advmss=1200, src=ip("10.1.0.5"))  # fmt: skip
    request = _decoded(sock.sent[-1], rtmsg)
    expect(request, family=AF_INET, dst_len=16, flags=k.RTNH_F_ONLINK, table=0, proto=k.RTPROT_BOOT)
    attrs = _attrs(request)
    expect(attrs, RTA_TABLE=1000, RTA_DST="10.9.0.0", RTA_GATEWAY="192.168.7.1", RTA_OIF=3)
    expect(attrs, RTA_PREFSRC="10.1.0.5", RTA_PRIORITY=7)
    expect(_attrs(attrs["RTA_METRICS"]), RTAX_MTU=1300, RTAX_ADVMSS=1200)

    rt.add_route(net("0.0.0.0/0"), gateway=ip("10.1.0.1"))
    request = _decoded(sock.sent[-1], rtmsg)
    expect(request, dst_len=0, table=k.RT_TABLE_MAIN, scope=k.RT_SCOPE_UNIVERSE)
    assert "RTA_DST" not in _attrs(request)

    rt.add_fdb_entry(3, "02:11:22:33:44:55", ip("10.0.0.2"), append=True)
    request = _decoded(sock.sent[-1], ndmsg)
    assert request["header"]["flags"] & k.NLM_F_APPEND
    expect(request, family=AF_BRIDGE, ifindex=3, flags=k.NTF_SELF, state=k.NUD_PERMANENT)
    expect(_attrs(request), NDA_LLADDR="02:11:22:33:44:55", NDA_DST="10.0.0.2")

    rt.add_neighbour(3, ip("10.0.0.9"), proxy=True)
    request = _decoded(sock.sent[-1], ndmsg)
    expect(request, family=AF_INET, ifindex=3, flags=k.NTF_PROXY)
    assert _attrs(request) == {"NDA_DST": "10.0.0.9"}


def _dumping(number: int, request: bytes) -> list[bytes]:
    """Ends every dump at once (NLMSG_DONE); acks anything else."""
    _, _, flags, seq, _ = _header(request)
    return [_done(seq)] if flags & k.NLM_F_DUMP == k.NLM_F_DUMP else [_ack(seq)]


def test_filtered_dump_and_route_get_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(_dumping)
    strict_on = (k.SOL_NETLINK, k.NETLINK_GET_STRICT_CHK, 1)
    strict_off = (k.SOL_NETLINK, k.NETLINK_GET_STRICT_CHK, 0)

    sock.options.clear()
    assert rt.routes(AF_INET, protocol=112, oif=3) == []
    request = _decoded(sock.sent[-1], rtmsg)
    assert request["header"]["flags"] & k.NLM_F_DUMP == k.NLM_F_DUMP
    expect(request, family=AF_INET, dst_len=0, src_len=0, tos=0, table=k.RT_TABLE_MAIN, proto=112)
    expect(request, scope=0, type=0, flags=0)
    assert _attrs(request) == {"RTA_OIF": 3}
    assert sock.options == [strict_on, strict_off]  # strict for this dump only

    rt.routes(table=1000)
    request = _decoded(sock.sent[-1], rtmsg)
    expect(request, family=0, table=k.RT_TABLE_COMPAT, proto=0)
    assert _attrs(request) == {"RTA_TABLE": 1000}

    sock.options.clear()
    rt.routes(table=None)  # everything: nothing for the kernel to filter, no strict check
    expect(_decoded(sock.sent[-1], rtmsg), table=0, proto=0)
    assert sock.options == []

    sock.options.clear()
    rt.addresses(3, AF_INET6)
    request = _decoded(sock.sent[-1], ifaddrmsg)
    expect(request, family=AF_INET6, index=3, prefixlen=0, flags=0, scope=0)
    assert sock.options == [strict_on, strict_off]

    rt.neighbours(3)
    request = _decoded(sock.sent[-1], ndmsg)
    expect(request, family=0, ifindex=0, state=0, flags=0)
    assert _attrs(request) == {"NDA_IFINDEX": 3}

    sock.options.clear()
    rt.fdb_entries(3)
    request = _decoded(sock.sent[-1], ndmsg)
    expect(request, family=AF_BRIDGE, ifindex=3, state=0, flags=0)
    assert _attrs(request) == {} and sock.options == [strict_on, strict_off]

    assert rt.route_to(ip("10.1.2.3")) is None  # acked without an answer
    request = _decoded(sock.sent[-1], rtmsg)
    assert request["header"]["flags"] & k.NLM_F_DUMP == 0
    assert _header(sock.sent[-1])[1] == k.RTM_GETROUTE
    expect(request, family=AF_INET, dst_len=32)
    assert _attrs(request) == {"RTA_DST": "10.1.2.3"}


# --- namespaces --------------------------------------------------------------------------


@netns_test
def test_the_socket_is_inside_the_namespace(netns: Netns) -> None:
    netns.ip("link", "add", "only-here", "type", "bridge")
    with Rtnl(netns=netns.path) as rt:
        assert {link.name for link in rt.links()} == ip_names(netns) == {"lo", "only-here"}


@netns_test
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


@netns_test
def test_our_own_namespace_is_unchanged_after_work_and_failures(netns: Netns, pod: Netns) -> None:
    before = own_namespaces()
    with Rtnl(netns=netns.path) as host:
        host.create_veth("veth0", "eth0", peer_netns=pod.path)
        assert own_namespaces() == before
        with pytest.raises(NetlinkExists):
            host.create_bridge("veth0")
        assert own_namespaces() == before

    def failing_factory() -> Any:
        assert os.readlink("/proc/thread-self/ns/net") == namespace_id(pod.path)
        raise RuntimeError("socket() failed")

    with pytest.raises(RuntimeError, match=r"socket\(\) failed"):
        namespace.socket_in_netns(pod.path, failing_factory)
    assert own_namespaces() == before
    assert "eth0" in ip_names(pod) and "veth0" in ip_names(netns)


@netns_test
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


@netns_test
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


# --- links -------------------------------------------------------------------------------


@netns_test
def test_the_veth_peer_lands_in_the_target_namespace(netns: Netns, pod: Netns) -> None:
    with Rtnl(netns=netns.path) as host:
        veth = host.create_veth("veth0", "eth0", peer_netns=pod.path, mtu=1450,
                                mac="02:00:00:00:00:01", peer_mac="02:00:00:00:00:02",
                                up=True)  # fmt: skip
    with Rtnl(netns=pod.path) as inside:
        inside.set_link("eth0", up=True)  # the kernel cannot bring it up in the same request
    assert "eth0" not in ip_names(netns) and "veth0" not in ip_names(pod)
    host_end, pod_end = ip_link(netns, "veth0"), ip_link(pod, "eth0")
    expect(host_end, mtu=1450, address="02:00:00:00:00:01", link_index=pod_end["ifindex"])
    expect(pod_end, mtu=1450, address="02:00:00:00:00:02", link_index=host_end["ifindex"])
    assert host_end["linkinfo"]["info_kind"] == pod_end["linkinfo"]["info_kind"] == "veth"
    assert "UP" in host_end["flags"] and "UP" in pod_end["flags"]
    expect(veth, index=host_end["ifindex"], name="veth0", kind="veth", mtu=1450, up=True)
    expect(veth, mac="02:00:00:00:00:01", link=pod_end["ifindex"])
    assert veth.link_netnsid is not None  # the peer's index is in another namespace
    with pyroute(pod) as ipr:
        (theirs,) = ipr.get_links(ifname="eth0")
        assert theirs["index"] == veth.link
        assert theirs.get_attr("IFLA_ADDRESS") == "02:00:00:00:00:02"


@netns_test
def test_the_veth_peer_mtu_defaults_to_the_mtu_and_can_differ(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        rt.create_veth("a0", "a1", mtu=1400)
        rt.create_veth("b0", "b1", mtu=1400, peer_mtu=1300)
        assert rt.get_link("a1").mtu == 1400 and rt.get_link("b1").mtu == 1300
        a0, a1 = rt.get_link("a0"), rt.get_link("a1")
        assert (a0.link, a1.link, a0.link_netnsid) == (a1.index, a0.index, None)
    assert ip_link(netns, "a0")["link"] == "a1"


@netns_test
def test_a_bridge_we_create_is_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        bridge = rt.create_bridge("br0", mtu=1400, mac="02:00:00:00:00:0b", up=True)
    theirs = ip_link(netns, "br0")
    expect(theirs, mtu=1400, address="02:00:00:00:00:0b")
    assert "UP" in theirs["flags"]
    expect(theirs["linkinfo"], info_kind="bridge")
    assert theirs["linkinfo"]["info_data"]["vlan_filtering"] == 0
    expect(bridge, kind="bridge", mtu=1400, mac="02:00:00:00:00:0b", up=True)
    assert bridge.bridge is not None and bridge.bridge.vlan_filtering is False
    with pyroute(netns) as ipr:
        (link,) = ipr.get_links(ifname="br0")
        assert link["index"] == bridge.index
        assert link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"


@netns_test
def test_bridge_vlan_filtering_gets_the_answer_ip_gets(netns: Netns) -> None:
    """This VM's kernel lacks CONFIG_BRIDGE_VLAN_FILTERING and refuses the attribute, even
    off, with EOPNOTSUPP. Whatever the kernel, we must get what `ip` gets."""
    for on in (0, 1):
        command = ["ip", "link", "add", f"ip{on}", "type", "bridge", "vlan_filtering", str(on)]
        done = netns.run(command, check=False)
        with Rtnl(netns=netns.path) as rt:
            try:
                ours = rt.create_bridge(f"ours{on}", vlan_filtering=bool(on))
            except NetlinkError as err:
                assert done.returncode != 0, f"ip succeeded where we got {err}"
                assert err.errno == errno.EOPNOTSUPP and "Operation not supported" in done.stderr
            else:
                assert done.returncode == 0, done.stderr
                assert ours.bridge is not None and ours.bridge.vlan_filtering is bool(on)
                info = ip_link(netns, f"ours{on}")["linkinfo"]["info_data"]
                assert info["vlan_filtering"] == on


@netns_test
def test_a_vxlan_we_create_is_what_ip_and_pyroute2_show(netns: Netns) -> None:
    netns.ip("link", "add", "under0", "type", "bridge")
    with Rtnl(netns=netns.path) as rt:
        vx = rt.create_vxlan("vx0", 42, port=4789, local=ip("192.168.0.1"), underlay="under0",
                             learning=False, ttl=64, mtu=1450, udp_csum=False)  # fmt: skip
        vx6 = rt.create_vxlan("vx6", 43, port=4790, local=ip("fd00::1"), learning=True,
                              udp6_zero_csum_tx=True)  # fmt: skip
        under = rt.get_link("under0").index
    assert ip_link(netns, "vx0")["mtu"] == 1450
    expect(ip_link(netns, "vx0")["linkinfo"]["info_data"], id=42, port=4789,
           local="192.168.0.1", ttl=64, learning=False, udp_csum=False, link="under0")  # fmt: skip
    expect(ip_link(netns, "vx6")["linkinfo"]["info_data"], id=43, port=4790, local6="fd00::1",
           learning=True, udp_zero_csum6_tx=True)  # fmt: skip
    expect(vx.vxlan, vni=42, port=4789, local=ip("192.168.0.1"), underlay=under, learning=False,
           ttl=64, udp_csum=False, group=None)  # fmt: skip
    expect(vx6.vxlan, vni=43, port=4790, local=ip("fd00::1"), learning=True, udp6_zero_csum_tx=True)
    with pyroute(netns) as ipr:
        (link,) = ipr.get_links(ifname="vx0")
        theirs = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        assert [theirs.get_attr(f"IFLA_VXLAN_{n}") for n in ("ID", "PORT", "LINK")] == [
            42,
            4789,
            under,
        ]


@netns_test
def test_ipip_gets_the_answer_ip_gets(netns: Netns) -> None:
    """No CONFIG_NET_IPIP on this VM: the kernel answers EOPNOTSUPP with "Unknown device
    type", as it answers `ip`. (The request itself is checked by pyroute2 above.)"""
    netns.ip("link", "add", "under0", "type", "bridge")
    command = ["ip", "link", "add", "iptun", "type", "ipip", "local", "10.0.0.1", "ttl", "64"]
    done = netns.run(command, check=False)
    with Rtnl(netns=netns.path) as rt:
        try:
            tunnel = rt.create_ipip(
                "tun0", local=ip("10.0.0.1"), underlay="under0", ttl=64, pmtudisc=True
            )
        except NetlinkError as err:
            assert done.returncode != 0, f"ip created the tunnel, we got {err}"
            expect(err, errno=errno.EOPNOTSUPP, kernel_message="Unknown device type")
            assert "Unknown device type" in done.stderr
            assert str(err) == (
                f"failed to create ipip tunnel 'tun0' in netns '{netns.path}':"
                " Operation not supported (Unknown device type)"
            )
        else:
            assert done.returncode == 0, done.stderr
            expect(tunnel, kind="ipip")
            expect(tunnel.ipip, local=ip("10.0.0.1"), ttl=64, pmtudisc=True, remote=None)
            assert ip_link(netns, "tun0")["linkinfo"]["info_data"]["local"] == "10.0.0.1"


@netns_test
def test_links_ip_creates_are_what_we_read_field_by_field(netns: Netns) -> None:
    for command in (
        "link add br0 type bridge",
        "link add v0 mtu 1400 address 02:00:00:00:00:0a type veth peer name v1",
        "link set v0 master br0",
        "link set v0 type bridge_slave hairpin on learning off flood off",
        "link set br0 up",
        "link set v0 up",
        "link set v1 up promisc on",
        "link add vx0 type vxlan id 7 dstport 4789 local 10.0.0.1 dev br0 nolearning ttl 9",
    ):
        run_ip(netns, command)
    with Rtnl(netns=netns.path) as rt:
        ours = {link.name: link for link in rt.links()}
        v0, v1, vx0, br0 = (rt.get_link(name) for name in ("v0", "v1", "vx0", "br0"))
    for theirs in netns.ip_json("-d", "link", "show"):
        link = ours.pop(theirs["ifname"])
        master = theirs.get("master")
        expect(
            link,
            index=theirs["ifindex"],
            mtu=theirs["mtu"],
            mac=theirs["address"],
            up="UP" in theirs["flags"],
            lower_up="LOWER_UP" in theirs["flags"],
            operstate=theirs["operstate"],
            kind=theirs.get("linkinfo", {}).get("info_kind"),
            promiscuity=theirs["promiscuity"],
            master=None if master is None else ip_link(netns, master)["ifindex"],
        )
    assert not ours, f"links ip does not list: {sorted(ours)}"
    assert (v0.link, v1.link) == (v1.index, v0.index)
    assert v1.promiscuous and not v0.promiscuous
    expect(v0.bridge_port, hairpin=True, learning=False, unicast_flood=False)
    assert v1.bridge_port is None
    expect(vx0.vxlan, vni=7, port=4789, local=ip("10.0.0.1"), underlay=br0.index, learning=False)
    expect(vx0.vxlan, ttl=9)


@netns_test
def test_get_link_by_index_or_name(netns: Netns) -> None:
    with Rtnl(netns=netns.path) as rt:
        lo = rt.get_link("lo")
        assert rt.get_link(lo.index) == lo
        assert rt.find_link("nope") is None
        with pytest.raises(NetlinkNotFound) as caught:
            rt.get_link(4242)
        assert caught.value.errno == errno.ENODEV


@netns_test
def test_link_errnos_are_exact_and_match_pyroute2(netns: Netns) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    with Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        with pytest.raises(NetlinkExists) as exists:
            rt.create_bridge("br0")
        assert exists.value.errno == errno.EEXIST
        assert pyroute_errno(lambda: ipr.link("add", ifname="br0", kind="bridge")) == errno.EEXIST
        rt.delete_link("br0")
        assert "br0" not in ip_names(netns)
        with pytest.raises(NetlinkNotFound) as by_name:
            rt.delete_link("br0")
        assert by_name.value.errno == errno.ENODEV
        assert str(by_name.value) == (
            f"failed to delete link 'br0' in netns '{netns.path}': No such device"
        )
        with pytest.raises(NetlinkNotFound) as by_index:
            rt.delete_link(4242)
        assert by_index.value.errno == errno.ENODEV
        assert pyroute_errno(lambda: ipr.link("del", index=4242)) == errno.ENODEV
        rt.delete_link("br0", missing_ok=True)
        with pytest.raises(NetlinkError) as too_long:  # IFNAMSIZ: the policy's length check
            rt.create_bridge("a-name-longer-than-15")
        expect(
            too_long.value, errno=errno.ERANGE, kernel_message="Attribute failed policy validation"
        )
        too_long_too = lambda: ipr.link("add", ifname="a-name-longer-than-15", kind="bridge")  # noqa: E731
        assert pyroute_errno(too_long_too) == errno.ERANGE
        rt.create_veth("v0", "v1")
        rt.delete_link(rt.get_link("v1").index)
        assert ip_names(netns) == {"lo"}  # a veth pair goes as a whole


@netns_test
def test_set_link_changes_what_ip_and_pyroute2_show(netns: Netns) -> None:
    netns.ip("link", "add", "br0", "type", "bridge")
    netns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    with Rtnl(netns=netns.path) as rt:
        bridge = rt.get_link("br0")
        rt.set_link("v0", up=True, mtu=1300, mac="02:00:00:00:00:aa", master="br0")
        shown = ip_link(netns, "v0")
        assert "UP" in shown["flags"]
        expect(shown, mtu=1300, address="02:00:00:00:00:aa", master="br0")
        rt.set_link("v0", nomaster=True, up=False)
        shown = ip_link(netns, "v0")
        assert "master" not in shown and "UP" not in shown["flags"]
        rt.set_link("v0", master=bridge.index, promiscuous=True)
        shown = ip_link(netns, "v0")
        assert shown["master"] == "br0" and "PROMISC" in shown["flags"]
        rt.set_link("v0", promiscuous=False, name="renamed0")
        assert "PROMISC" not in ip_link(netns, "renamed0")["flags"]
        with pyroute(netns) as ipr:
            (theirs,) = ipr.get_links(ifname="renamed0")
            assert [theirs.get_attr("IFLA_MTU"), theirs.get_attr("IFLA_MASTER")] == [
                1300,
                bridge.index,
            ]
        with pytest.raises(NetlinkNotFound) as gone:
            rt.set_link("v0", up=True)
        assert gone.value.errno == errno.ENODEV
        with pytest.raises(NetlinkNotFound):
            rt.set_link("renamed0", master="no-such-bridge")
        with pytest.raises(NetlinkError) as bad_mtu:
            rt.set_link("renamed0", mtu=10)
        assert bad_mtu.value.errno == errno.EINVAL
        assert f"failed to set link 'renamed0' mtu 10 in netns '{netns.path}'" in str(bad_mtu.value)
        with pytest.raises(ValueError, match="master or nomaster"):
            rt.set_link("renamed0", master="br0", nomaster=True)


@netns_test
def test_move_a_link_to_another_namespace_by_path_or_fd(netns: Netns, pod: Netns) -> None:
    netns.ip("link", "add", "a0", "type", "veth", "peer", "name", "a1")
    with Rtnl(netns=netns.path) as rt:
        rt.set_link("a1", netns=pod.path)
        fd = os.open(pod.path, os.O_RDONLY)
        try:
            rt.set_link("a0", netns=fd)
        finally:
            os.close(fd)
        assert [link.name for link in rt.links()] == ["lo"]
    assert {"a0", "a1"} <= ip_names(pod)
    with Rtnl(netns=pod.path) as rt:
        assert rt.get_link("a0").link == rt.get_link("a1").index


@netns_test
def test_bridge_port_settings_round_trip(netns: Netns) -> None:
    for command in (
        "link add br0 type bridge",
        "link add v0 type veth peer name v1",
        "link add w0 type veth peer name w1",
        "link set v0 master br0",
        "link set w0 master br0",
    ):
        run_ip(netns, command)
    with Rtnl(netns=netns.path) as rt:
        rt.set_bridge_port("v0", hairpin=True, learning=False, unicast_flood=False,
                           multicast_flood=False, broadcast_flood=False, isolated=True)  # fmt: skip
        expect(ip_link(netns, "v0")["linkinfo"]["info_slave_data"], hairpin=True, learning=False,
               flood=False, mcast_flood=False, bcast_flood=False, isolated=True)  # fmt: skip
        expect(rt.get_link("v0").bridge_port, hairpin=True, learning=False, unicast_flood=False,
               multicast_flood=False, broadcast_flood=False, isolated=True)  # fmt: skip
        with pyroute(netns) as ipr:
            (link,) = ipr.get_links(ifname="v0")
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_SLAVE_DATA")
            assert [data.get_attr("IFLA_BRPORT_MODE"), data.get_attr("IFLA_BRPORT_LEARNING")] == [
                1,
                0,
            ]
        netns.ip("link", "set", "w0", "type", "bridge_slave", "hairpin", "on", "proxy_arp", "on")
        expect(rt.get_link("w0").bridge_port, hairpin=True, proxyarp=True, learning=True)
        rt.set_bridge_port("v0", hairpin=False)
        assert ip_link(netns, "v0")["linkinfo"]["info_slave_data"]["hairpin"] is False
        with pytest.raises(NetlinkError) as not_a_port:
            rt.set_bridge_port("v1", hairpin=True)
        assert not_a_port.value.errno == errno.EOPNOTSUPP
        with pytest.raises(NetlinkNotFound):
            rt.set_bridge_port("missing0", hairpin=True)


# --- addresses ---------------------------------------------------------------------------


@netns_test
def test_addresses_we_add_are_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_address(v0, net("10.1.0.5/24"))
        rt.add_address("v0", net("10.2.0.5/31"))
        rt.add_address(v0, net("fd00:1::5/64"), nodad=True, noprefixroute=True)
        rt.add_address(v0, net("fd00::6/64"))
        theirs = {(a["local"], a["prefixlen"]): a for a in ip_addresses(netns, "v0")}
        assert theirs["10.1.0.5", 24]["broadcast"] == "10.1.0.255"
        assert "broadcast" not in theirs["10.2.0.5", 31]
        expect(theirs["fd00:1::5", 64], nodad=True, noprefixroute=True, tentative=None)
        assert theirs["fd00::6", 64].get("tentative") is True  # DAD takes a second or more
        routes6 = {r["dst"] for r in ip_routes(netns, "-6")}
        assert "fd00::/64" in routes6 and "fd00:1::/64" not in routes6
        flags = {a.get_attr("IFA_ADDRESS"): a.get_attr("IFA_FLAGS") for a in ipr.get_addr(index=v0)}
        both = k.IFA_F_NODAD | k.IFA_F_NOPREFIXROUTE
        assert flags["fd00:1::5"] & both == both and not flags["fd00::6"] & both
        with pytest.raises(NetlinkExists) as exists:
            rt.add_address(v0, net("10.1.0.5/24"))
        assert exists.value.errno == errno.EEXIST
        again = lambda: ipr.addr("add", index=v0, address="10.1.0.5", prefixlen=24)  # noqa: E731
        assert pyroute_errno(again) == errno.EEXIST
        rt.add_address(v0, net("10.1.0.5/24"), replace=True)
        rt.add_address(v0, net("fd00:1::5/64"), replace=True, nodad=True)
        assert len(ip_addresses(netns, "v0")) == 5  # with the link-local one


@netns_test
def test_addresses_ip_adds_are_what_we_list(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        netns.ip("addr", "add", "10.1.0.5/24", "brd", "+", "dev", "v0")
        netns.ip("addr", "add", "10.3.0.1/16", "dev", "v0", "label", "v0:x", "noprefixroute")
        netns.ip("addr", "add", "fd00::5/64", "dev", "v0", "nodad")
        netns.ip("addr", "add", "10.9.0.1/8", "dev", "v1")
        ours = {str(a.prefix): a for a in rt.addresses(v0)}
        theirs = ip_addresses(netns, "v0")
        assert len(ours) == len(theirs)
        for address in theirs:
            expect(
                ours[f"{address['local']}/{address['prefixlen']}"],
                index=v0,
                family=AF_INET if address["family"] == "inet" else AF_INET6,
                scope={"global": 0, "link": 253, "host": 254}[address["scope"]],
                tentative=bool(address.get("tentative")),
                label=address.get("label"),
                broadcast=ip(address["broadcast"]) if "broadcast" in address else None,
            )
            flags = ours[f"{address['local']}/{address['prefixlen']}"].flags
            assert bool(flags & k.IFA_F_NODAD) == bool(address.get("nodad"))
            assert bool(flags & k.IFA_F_NOPREFIXROUTE) == bool(address.get("noprefixroute"))
        assert [str(a.prefix) for a in rt.addresses("v0", AF_INET)] == [
            "10.1.0.5/24",
            "10.3.0.1/16",
        ]
        everywhere = {str(a.prefix) for a in rt.addresses(family=AF_INET)}
        assert everywhere == {"10.1.0.5/24", "10.3.0.1/16", "10.9.0.1/8"}  # lo is down: no 127/8


@netns_test
def test_address_delete_and_its_errnos(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_address(v0, net("10.1.0.5/24"))
        rt.add_address(v0, net("fd00::5/64"), nodad=True)
        rt.delete_address(v0, net("10.1.0.5/24"))
        rt.delete_address("v0", net("fd00::5/64"))
        assert [a["local"] for a in ip_addresses(netns, "v0") if a["scope"] == "global"] == []
        for prefix in (net("10.1.0.5/24"), net("fd00::5/64")):
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_address(v0, prefix)
            assert caught.value.errno == errno.EADDRNOTAVAIL
            rt.delete_address(v0, prefix, missing_ok=True)
        gone = lambda: ipr.addr("del", index=v0, address="10.1.0.5", prefixlen=24)  # noqa: E731
        assert pyroute_errno(gone) == errno.EADDRNOTAVAIL
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_address("v9", net("10.1.0.5/24"))
        assert no_link.value.errno == errno.ENODEV
        with pytest.raises(NetlinkNotFound) as no_index:
            rt.add_address(4242, net("10.1.0.5/24"))
        assert no_index.value.errno == errno.ENODEV


# --- routes ------------------------------------------------------------------------------


@netns_test
def test_routes_we_add_are_what_ip_and_pyroute2_show(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_route(net("0.0.0.0/0"), gateway=ip("10.1.0.1"))
        rt.add_route(net("::/0"), gateway=ip("fd00::1"), oif=v0)
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"), metric=10, mtu=1300, advmss=1200,
                     src=ip("10.1.0.5"), protocol=k.RTPROT_STATIC)  # fmt: skip
        rt.add_route(net("10.8.0.0/16"), gateway=ip("192.168.7.1"), oif="v0", onlink=True,
                     table=100)  # fmt: skip
        rt.add_route(net("10.7.0.0/16"), oif=v0)
        rt.add_route(net("10.6.0.0/16"), oif=v0, table=1000, scope=k.RT_SCOPE_UNIVERSE)
        rt.add_route(net("fd01::/64"), gateway=ip("fd00::1"), mtu=1280)
        theirs = ip_routes(netns, "table", "all")
    expect(ip_route(theirs, "default", gateway="10.1.0.1"), dev="v0", protocol="boot",
           scope="global", table="main")  # fmt: skip
    expect(ip_route(theirs, "default", gateway="fd00::1"), dev="v0", metric=1024)
    expect(ip_route(theirs, "10.9.0.0/16"), metric=10, prefsrc="10.1.0.5", protocol="static",
           metrics=[{"mtu": 1300, "advmss": 1200}])  # fmt: skip
    expect(ip_route(theirs, "10.8.0.0/16"), table="100", flags=["onlink"], gateway="192.168.7.1")
    expect(ip_route(theirs, "10.7.0.0/16"), scope="link", gateway=None)
    expect(ip_route(theirs, "10.6.0.0/16"), table="1000", scope="global")
    expect(ip_route(theirs, "fd01::/64"), metrics=[{"mtu": 1280}])
    with pyroute(netns) as ipr:  # a dump: get_routes(dst=...) would be a lookup
        routes = {(r.get_attr("RTA_DST"), r.get_attr("RTA_TABLE")): r for r in ipr.get_routes()}
    onlink = routes["10.8.0.0", 100]
    assert onlink["flags"] & k.RTNH_F_ONLINK and onlink.get_attr("RTA_GATEWAY") == "192.168.7.1"
    detailed = routes["10.9.0.0", k.RT_TABLE_MAIN]
    assert detailed.get_attr("RTA_PRIORITY") == 10
    assert detailed.get_attr("RTA_METRICS").get_attr("RTAX_ADVMSS") == 1200


@netns_test
def test_routes_ip_adds_are_what_we_list(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        for command in (
            "route add default via 10.1.0.1",
            "route add 10.9.0.0/16 via 10.1.0.1 metric 10 mtu 1300 advmss 1200 src 10.1.0.5"
            " proto static",
            "route add 10.8.0.0/16 via 192.168.7.1 dev v0 onlink table 100",
            "route add 10.7.0.0/16 dev v0",
            "-6 route add default via fd00::1 dev v0",
            "-6 route add fd01::/64 via fd00::1 mtu 1280",
        ):
            run_ip(netns, command)
        ours = rt.routes()
        main = {(str(r.dst), r.family): r for r in ours}
        expect(main["0.0.0.0/0", AF_INET], gateway=ip("10.1.0.1"), oif=v0, protocol=k.RTPROT_BOOT,
               table=k.RT_TABLE_MAIN, scope=k.RT_SCOPE_UNIVERSE)  # fmt: skip
        expect(main["10.9.0.0/16", AF_INET], metric=10, mtu=1300, advmss=1200, src=ip("10.1.0.5"),
               protocol=k.RTPROT_STATIC)  # fmt: skip
        expect(main["10.7.0.0/16", AF_INET], scope=k.RT_SCOPE_LINK, gateway=None, oif=v0)
        expect(main["10.1.0.0/24", AF_INET], protocol=k.RTPROT_KERNEL, src=ip("10.1.0.5"))
        expect(main["::/0", AF_INET6], gateway=ip("fd00::1"), metric=1024)
        expect(main["fd01::/64", AF_INET6], mtu=1280, gateway=ip("fd00::1"))
        assert ("10.8.0.0/16", AF_INET) not in main  # table 100, not main
        (in_100,) = rt.routes(table=100)
        expect(in_100, dst=net("10.8.0.0/16"), onlink=True, gateway=ip("192.168.7.1"), table=100)
        assert len(ours) == len(ip_routes(netns)) + len(ip_routes(netns, "-6"))
        v6 = {str(r.dst) for r in rt.routes(AF_INET6)}
        assert v6 == {"::/0", "fd00::/64", "fd01::/64", "fe80::/64"}
        assert any(r.table == k.RT_TABLE_LOCAL for r in rt.routes(table=None))


@netns_test
def test_route_replace_delete_and_errnos(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"))
        with pytest.raises(NetlinkExists) as exists:
            rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"))
        assert exists.value.errno == errno.EEXIST
        rt.add_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"), replace=True)
        assert ip_route(ip_routes(netns), "10.9.0.0/16")["gateway"] == "10.1.0.2"
        with pytest.raises(NetlinkNotFound) as wrong_gateway:
            rt.delete_route(net("10.9.0.0/16"), gateway=ip("10.1.0.1"))
        assert wrong_gateway.value.errno == errno.ESRCH
        rt.delete_route(net("10.9.0.0/16"), gateway=ip("10.1.0.2"), oif=v0)
        assert not [r for r in ip_routes(netns) if r["dst"] == "10.9.0.0/16"]
        for dst, code in (
            (net("10.9.0.0/16"), errno.ESRCH),
            (net("fd09::/64"), errno.ESRCH),
            (net("0.0.0.0/0"), errno.ESRCH),
            (net("::/0"), errno.ENOENT),  # the lookup ends at the table's null entry
        ):
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_route(dst)
            assert caught.value.errno == code, dst
            rt.delete_route(dst, missing_ok=True)
        v6_default = lambda: ipr.route("del", dst="::/0", family=AF_INET6)  # noqa: E731
        assert pyroute_errno(v6_default) == errno.ENOENT
        assert pyroute_errno(lambda: ipr.route("del", dst="10.9.0.0/16")) == errno.ESRCH
        with pytest.raises(NetlinkError) as host_bits:
            rt.add_route(net("10.9.0.5/16"), oif=v0)
        assert host_bits.value.errno == errno.EINVAL
        assert host_bits.value.kernel_message  # the kernel says what is wrong
        with pytest.raises(ValueError, match="IPv6"):
            rt.add_route(net("10.9.0.0/16"), gateway=ip("fd00::1"))


class CountingSocket:
    """A real socket that counts the datagrams read from it."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.datagrams = 0
        self.received = 0  # bytes

    def recv_into(self, buf: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        size = int(self.sock.recv_into(buf, nbytes, flags))
        if not flags & MSG_PEEK:
            self.datagrams += 1
            self.received += size
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@netns_test
def test_dumps_of_300_links_and_300_routes_are_complete(netns: Netns) -> None:
    ip_batch(netns, [f"link add b{i} type bridge" for i in range(300)])
    with routed(netns):
        ip_batch(
            netns,
            [f"route add 10.{100 + i // 200}.{i % 200}.0/24 via 10.1.0.1" for i in range(300)]
            + [f"route add fd10:{i:x}::/64 via fd00::1" for i in range(300)],
        )
        sock = CountingSocket(namespace.socket_in_netns(netns.path, netlink_socket._new_socket))
        with Rtnl(netns=netns.path, sock=sock) as rt:  # type: ignore[arg-type]
            links = rt.links()
            assert len(links) == 303  # lo, v0, v1 and the bridges
            assert {link.name for link in links} == ip_names(netns)
            assert sock.datagrams > 2  # the dump really came in parts
            before = sock.datagrams
            routes = rt.routes()
            assert len([r for r in routes if r.dst.ip.version == 4 and r.gateway]) == 300
            assert len([r for r in routes if r.dst.ip.version == 6 and r.gateway]) == 300
            assert len(routes) == len(ip_routes(netns)) + len(ip_routes(netns, "-6"))
            assert sock.datagrams - before > 2


@contextmanager
def crowded(ns: Netns) -> Iterator[tuple[int, int]]:
    """A node with many pods' worth of routes and addresses: v0 (10.1.0.5/24, fd00::5/64,
    default routes both ways) with 300 /32 host routes out of it, 16 more veth pairs up (an
    fe80 address and fe80::/64 route each), 4 routes of protocol 112, routes in tables 100 and
    1000, permanent neighbours on v0 and w0. Yields (v0, w0)."""
    with routed(ns) as v0:
        lines = ["route add default via 10.1.0.1", "route add ::/0 via fd00::1"]
        lines += [f"route add 10.50.{n // 250}.{n % 250 + 1}/32 dev v0" for n in range(300)]
        lines += [f"route add 10.60.{n}.0/24 via 10.1.0.1 proto 112" for n in range(3)]
        lines += ["route add fd60::/64 via fd00::1 proto 112"]
        lines += ["route add 10.70.0.0/16 via 10.1.0.1 table 100"]
        lines += ["route add 10.71.0.0/16 via 10.1.0.1 table 1000 proto 112"]
        for n in range(16):
            lines += [f"link add w{n} type veth peer name x{n}", f"link set w{n} up",
                      f"link set x{n} up"]  # fmt: skip
        lines += [
            f"neigh add 10.1.0.{n} lladdr 02:00:00:00:00:{n:02x} dev v0" for n in range(6, 16)
        ]
        ip_batch(ns, lines)
        w0 = ip_link(ns, "w0")["ifindex"]
        ns.ip("addr", "add", "10.2.0.5/24", "dev", "w0")
        ns.ip("neigh", "add", "10.2.0.9", "lladdr", "02:00:00:00:01:09", "dev", "w0")
        yield v0, w0


class RouteKey(NamedTuple):
    """A route as both views can name it: ours (Route) and pyroute2's (rtmsg)."""

    family: int
    dst: str
    oif: int | None
    protocol: int
    table: int
    type: int


def _route_key(route: Any) -> RouteKey:
    return RouteKey(
        route.family, str(route.dst), route.oif, route.protocol, route.table, route.type
    )


def _pyroute_route_key(msg: Any) -> RouteKey:
    anywhere = "0.0.0.0" if msg["family"] == AF_INET else "::"
    dst = f"{msg.get_attr('RTA_DST') or anywhere}/{msg['dst_len']}"
    return RouteKey(
        msg["family"], dst, msg.get_attr("RTA_OIF"), msg["proto"], msg.get_attr("RTA_TABLE"),
        msg["type"],
    )  # fmt: skip


@netns_test
def test_filtered_dumps_are_the_whole_dump_filtered_and_the_kernel_does_it(netns: Netns) -> None:
    """Each filtered dump returns exactly what the whole dump, filtered here, holds, read by us
    and by pyroute2 (its own socket, whole dumps, nothing filtered by the kernel)."""
    with crowded(netns) as (v0, w0), Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        everything = rt.routes(table=None)
        main = [r for r in everything if r.table == k.RT_TABLE_MAIN]
        assert len(main) > 300 and any(r.table == 1000 for r in everything)
        theirs = [_pyroute_route_key(r) for r in ipr.get_routes()]  # every table
        assert sorted(theirs) == sorted(map(_route_key, everything))
        cases: list[tuple[dict[str, Any], Callable[[RouteKey], bool]]] = [
            ({}, lambda r: r.table == k.RT_TABLE_MAIN),
            ({"protocol": 112}, lambda r: r.table == k.RT_TABLE_MAIN and r.protocol == 112),
            ({"table": None, "protocol": 112}, lambda r: r.protocol == 112),
            ({"oif": v0}, lambda r: r.table == k.RT_TABLE_MAIN and r.oif == v0),
            ({"oif": w0}, lambda r: r.table == k.RT_TABLE_MAIN and r.oif == w0),
            ({"table": None, "oif": w0}, lambda r: r.oif == w0),
            ({"table": 100}, lambda r: r.table == 100),
            ({"table": 1000}, lambda r: r.table == 1000),
            ({"table": 1000, "protocol": 112}, lambda r: r.table == 1000 and r.protocol == 112),
            ({"family": AF_INET, "protocol": 112},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET and r.protocol == 112),
            ({"family": AF_INET6, "oif": v0},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET6 and r.oif == v0),
            ({"dst_len": 0}, lambda r: r.table == k.RT_TABLE_MAIN and r.dst.endswith("/0")),
            ({"family": AF_INET6, "dst_len": 0},
             lambda r: r.table == k.RT_TABLE_MAIN and r.family == AF_INET6
             and r.dst.endswith("/0")),
        ]  # fmt: skip
        for kwargs, wanted in cases:
            got = sorted(map(_route_key, rt.routes(**kwargs)))
            assert got == sorted(r for r in map(_route_key, everything) if wanted(r)), kwargs
            assert got == sorted(r for r in theirs if wanted(r)), kwargs
            assert got, kwargs  # every case selects something: the comparison means something
        addresses = rt.addresses()
        their_addresses = ipr.get_addr()
        for index in (v0, w0):
            for family in (k.AF_UNSPEC, AF_INET, AF_INET6):
                got_a = sorted(str(a.prefix) for a in rt.addresses(index, family))
                want_a = sorted(
                    str(a.prefix) for a in addresses
                    if a.index == index and family in (k.AF_UNSPEC, a.family)
                )  # fmt: skip
                assert got_a == want_a and got_a, (index, family)
                seen_a = sorted(
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in their_addresses
                    if a["index"] == index and family in (k.AF_UNSPEC, a["family"])
                )  # fmt: skip
                assert got_a == seen_a, (index, family)
        neighbours = rt.neighbours()
        their_neighbours = ipr.get_neighbours()
        for index in (v0, w0):
            got_n = sorted(str(n.dst) for n in rt.neighbours(index))
            assert got_n == sorted(str(n.dst) for n in neighbours if n.index == index) and got_n
            seen_n = sorted(
                n.get_attr("NDA_DST") for n in their_neighbours
                if n["ifindex"] == index and n["family"] in (AF_INET, AF_INET6)
            )  # fmt: skip
            assert got_n == seen_n, index
        # FDBs: a bridge with four ports (each with its own entries) and a VXLAN device's own
        lines = ["link add br0 type bridge", "link set br0 up"]
        lines += [f"link set w{n} master br0" for n in range(1, 5)]
        lines += ["link add vx0 type vxlan id 1 dstport 8472 local 10.1.0.5 nolearning"]
        lines += [f"link set x{n} up" for n in range(1, 5)]
        ip_batch(netns, lines)
        vx0 = rt.get_link("vx0").index
        for n in range(1, 6):
            rt.add_fdb_entry(vx0, f"02:11:22:33:44:{n:02x}", ip(f"10.1.0.{n + 20}"))
        fdb = rt.fdb_entries()
        their_fdb = ipr.get_neighbours(family=AF_BRIDGE)
        for index in (vx0, rt.get_link("w1").index, rt.get_link("br0").index):
            got_f = sorted(f"{e.mac} {e.dst} {e.flags}" for e in rt.fdb_entries(index))
            want_f = sorted(f"{e.mac} {e.dst} {e.flags}" for e in fdb if e.index == index)
            assert got_f == want_f and got_f, index
            seen_f = sorted(
                f"{e.get_attr('NDA_LLADDR')} {e.get_attr('NDA_DST')} {e['flags']}"
                for e in their_fdb if e["ifindex"] == index
            )  # fmt: skip
            assert got_f == seen_f, index


@netns_test
def test_the_kernel_does_the_filtering_of_a_strict_dump(netns: Netns) -> None:
    """It sends a fraction of the bytes of the whole dump."""
    sock = CountingSocket(namespace.socket_in_netns(netns.path, netlink_socket._new_socket))
    with crowded(netns) as (v0, _), Rtnl(netns=netns.path, sock=sock) as rt:  # type: ignore[arg-type]
        before = sock.received
        rt.routes()
        whole = sock.received - before
        before = sock.received
        assert len(rt.routes(protocol=112)) == 4
        filtered = sock.received - before
        before = sock.received
        rt.addresses(v0, AF_INET)
        one_link = sock.received - before
    assert filtered * 20 < whole, (filtered, whole)
    assert one_link < 1000, one_link  # v0's one IPv4 address, not every link's


@netns_test
def test_a_filter_naming_no_table_or_link_that_exists_lists_nothing(netns: Netns) -> None:
    """A strict dump refuses a table or link that does not exist (ENOENT "FIB table does not
    exist", ENODEV); the whole dump filtered holds nothing for it, and so do we, as pyroute2's
    unfiltered dumps confirm. (A gone link named by name is still NetlinkNotFound.)"""
    with crowded(netns) as (v0, _), Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        missing = max(link.index for link in rt.links()) + 100
        assert rt.routes(AF_INET, table=100) and not rt.routes(AF_INET6, table=100)
        for family in (k.AF_UNSPEC, AF_INET, AF_INET6):
            assert rt.routes(family, table=4242) == [], family
            assert rt.routes(family, table=4242, protocol=112) == [], family
            assert rt.routes(family, oif=missing) == [], family
            assert rt.routes(family, table=None, oif=missing) == [], family
            assert rt.addresses(missing, family) == [], family
        assert rt.routes(AF_INET6, table=100) == []  # table 100 is IPv4's only
        assert rt.neighbours(missing) == [] and rt.fdb_entries(missing) == []
        theirs_routes = list(ipr.get_routes())  # every table: a dump, nothing filtered
        assert not [r for r in theirs_routes if r.get_attr("RTA_TABLE") == 4242]
        assert not [r for r in theirs_routes if r.get_attr("RTA_OIF") == missing]
        assert not [a for a in ipr.get_addr() if a["index"] == missing]
        assert rt.routes(oif=v0) and rt.addresses(v0)  # the same calls do find what exists
        with pytest.raises(NetlinkNotFound):
            rt.addresses("no-such-link")


@netns_test
def test_route_to_is_what_ip_route_get_says(netns: Netns, pod: Netns) -> None:
    with crowded(netns), Rtnl(netns=netns.path) as rt:
        for target in ("10.50.0.7", "192.0.2.1", "10.2.0.9", "fd00::77", "2001:db8::1"):
            ours = rt.route_to(ip(target))
            (theirs,) = netns.ip_json("route", "get", target)
            assert ours is not None and ours.oif == ip_link(netns, theirs["dev"])["ifindex"]
            gateway = str(ours.gateway) if ours.gateway else None
            assert gateway == theirs.get("gateway"), (target, theirs)
        local = rt.route_to(ip("10.1.0.5"))
        assert local is not None and local.type == k.RTN_LOCAL
    with Rtnl(netns=pod.path) as bare:  # no routes at all: none to anywhere
        assert bare.route_to(ip("192.0.2.1")) is None
        assert bare.route_to(ip("2001:db8::1")) is None


# --- neighbours and the FDB ---------------------------------------------------------------


@netns_test
def test_neighbours_round_trip(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:55")
        rt.add_neighbour("v0", ip("fd00::9"), "02:11:22:33:44:56")
        theirs = {n["dst"]: n for n in netns.ip_json("neigh", "show", "dev", "v0")}
        expect(theirs["10.1.0.9"], lladdr="02:11:22:33:44:55", state=["PERMANENT"])
        expect(theirs["fd00::9"], lladdr="02:11:22:33:44:56", state=["PERMANENT"])
        with pyroute(netns) as ipr:
            found = {n.get_attr("NDA_DST"): n for n in ipr.get_neighbours(ifindex=v0)}
            assert found["10.1.0.9"]["state"] == k.NUD_PERMANENT
            assert found["fd00::9"].get_attr("NDA_LLADDR") == "02:11:22:33:44:56"
        with pytest.raises(NetlinkExists) as exists:
            rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:57")
        assert exists.value.errno == errno.EEXIST
        rt.add_neighbour(v0, ip("10.1.0.9"), "02:11:22:33:44:57", replace=True)
        run_ip(netns, "neigh add 10.1.0.10 lladdr 02:00:00:00:00:10 dev v0 nud reachable")
        ours = {str(n.dst): n for n in rt.neighbours(v0)}
        expect(ours["10.1.0.9"], mac="02:11:22:33:44:57", permanent=True, family=AF_INET)
        expect(ours["10.1.0.10"], state=k.NUD_REACHABLE, permanent=False, index=v0)
        expect(ours["fd00::9"], family=AF_INET6, mac="02:11:22:33:44:56")
        theirs6 = {
            n["dst"] for n in netns.ip_json("-6", "neigh", "show", "dev", "v0", "nud", "all")
        }
        assert {str(n.dst) for n in rt.neighbours(v0, AF_INET6)} == theirs6
        rt.delete_neighbour(v0, ip("10.1.0.9"))
        assert "10.1.0.9" not in {n["dst"] for n in netns.ip_json("neigh", "show", "dev", "v0")}
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_neighbour(v0, ip("10.1.0.9"))
        assert caught.value.errno == errno.ENOENT
        rt.delete_neighbour(v0, ip("10.1.0.9"), missing_ok=True)
        with pyroute(netns) as ipr:
            gone = lambda: ipr.neigh("del", ifindex=v0, dst="10.1.0.9")  # noqa: E731
            assert pyroute_errno(gone) == errno.ENOENT


@netns_test
def test_proxy_neighbours_round_trip(netns: Netns) -> None:
    with routed(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_neighbour(v0, ip("10.1.0.20"), proxy=True)
        netns.ip("neigh", "add", "proxy", "10.1.0.21", "dev", "v0")
        theirs = {n["dst"] for n in netns.ip_json("neigh", "show", "proxy")}
        assert theirs == {"10.1.0.20", "10.1.0.21"}
        ours = rt.neighbours(v0, proxy=True)
        assert {str(n.dst) for n in ours} == theirs
        assert all(n.flags & k.NTF_PROXY for n in ours)
        assert not [n for n in rt.neighbours(v0) if str(n.dst) in theirs]
        rt.delete_neighbour(v0, ip("10.1.0.20"), proxy=True)
        assert {n["dst"] for n in netns.ip_json("neigh", "show", "proxy")} == {"10.1.0.21"}
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_neighbour(v0, ip("10.1.0.20"), proxy=True)
        assert caught.value.errno == errno.ENOENT


@netns_test
def test_fdb_entries_on_a_vxlan_device_round_trip(netns: Netns) -> None:
    run_ip(netns, "link add vx0 type vxlan id 1 dstport 8472 local 10.0.0.1 nolearning")
    with Rtnl(netns=netns.path) as rt:
        vx0 = rt.get_link("vx0").index
        rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.2"))
        rt.add_fdb_entry("vx0", "00:00:00:00:00:00", ip("10.0.0.3"), append=True)
        rt.add_fdb_entry("vx0", "00:00:00:00:00:00", ip("10.0.0.4"), append=True)
        shown = bridge_fdb(netns, "vx0")
        assert {(e["mac"], e["dst"]) for e in shown} == {
            ("02:11:22:33:44:55", "10.0.0.2"),
            ("00:00:00:00:00:00", "10.0.0.3"),
            ("00:00:00:00:00:00", "10.0.0.4"),
        }
        assert all(e["flags"] == ["self"] and e["state"] == "permanent" for e in shown)
        with pyroute(netns) as ipr:
            theirs = ipr.fdb("dump", ifindex=vx0)
            assert ("02:11:22:33:44:55", "10.0.0.2") in {
                (n.get_attr("NDA_LLADDR"), n.get_attr("NDA_DST")) for n in theirs
            }
        with pytest.raises(NetlinkExists):
            rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.9"))
        rt.add_fdb_entry(vx0, "02:11:22:33:44:55", ip("10.0.0.9"), replace=True)
        bridge = "bridge fdb add 02:aa:bb:cc:dd:ee dev vx0 dst 10.0.0.7 self permanent"
        netns.run(bridge.split())
        ours = {(e.mac, str(e.dst)): e for e in rt.fdb_entries(vx0)}
        assert set(ours) == {
            ("02:11:22:33:44:55", "10.0.0.9"),
            ("00:00:00:00:00:00", "10.0.0.3"),
            ("00:00:00:00:00:00", "10.0.0.4"),
            ("02:aa:bb:cc:dd:ee", "10.0.0.7"),
        }
        for entry in ours.values():
            expect(entry, family=AF_BRIDGE, index=vx0, permanent=True)
            assert entry.flags & k.NTF_SELF
        rt.delete_fdb_entry(vx0, "00:00:00:00:00:00", ip("10.0.0.3"))
        rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee")
        assert {(e["mac"], e["dst"]) for e in bridge_fdb(netns, "vx0")} == {
            ("02:11:22:33:44:55", "10.0.0.9"),
            ("00:00:00:00:00:00", "10.0.0.4"),
        }
        with pytest.raises(NetlinkNotFound) as caught:
            rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee")
        assert caught.value.errno == errno.ENOENT
        rt.delete_fdb_entry(vx0, "02:aa:bb:cc:dd:ee", missing_ok=True)
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_fdb_entry("vx9", "02:aa:bb:cc:dd:ee")
        assert no_link.value.errno == errno.ENODEV


# --- traffic control: tbf, ingress qdisc, u32 redirect filter, IFB --------------------------


def tc_json(ns: Netns, *args: str) -> list[dict[str, Any]]:
    done = ns.run(["tc", "-j", *args])
    return list(json.loads(done.stdout or "[]"))


def test_tc_requests_read_as_intended_by_pyroute2() -> None:
    rt, sock = scripted(_acking)
    rt.add_tbf(3, rate=1_250_000, burst=20_480, limit=51_730, replace=True)
    request = _decoded(sock.sent[-1], tcmsg)
    assert _header(sock.sent[-1])[1] == k.RTM_NEWQDISC
    assert request["header"]["flags"] & (k.NLM_F_CREATE | k.NLM_F_REPLACE | k.NLM_F_EXCL) == (
        k.NLM_F_CREATE | k.NLM_F_REPLACE
    )
    expect(request, index=3, handle=0, parent=k.TC_H_ROOT, info=0)
    assert request.get_attr("TCA_KIND") == "tbf"
    parms = request.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    # 20480 bytes at 1.25 MB/s: 16.384 ms, in 64 ns ticks; linklayer ethernet (pyroute2
    # calls the field rate___reserved)
    expect(parms, rate=1_250_000, limit=51_730, buffer=16_384_000 // 64, peak=0)
    expect(parms, rate___reserved=k.TC_LINKLAYER_ETHERNET)
    assert wire.Attrs.decode(k.TCA_TBF, _tbf_options(sock.sent[-1]))["burst"] == 20_480

    rt.add_tbf(3, rate=5 << 32, burst=1 << 20, limit=1 << 30)  # past 32 bits: TCA_TBF_RATE64
    options = wire.Attrs.decode(k.TCA_TBF, _tbf_options(sock.sent[-1]))
    assert options["rate64"] == 5 << 32
    assert k.TC_RATESPEC.unpack(k.TC_TBF_QOPT.unpack(options["parms"])[0])[5] == 0xFFFFFFFF

    rt.add_ingress_qdisc(3)
    request = _decoded(sock.sent[-1], tcmsg)
    expect(request, index=3, handle=0xFFFF0000, parent=0xFFFFFFF1)
    assert request.get_attr("TCA_KIND") == "ingress"

    rt.add_redirect_filter(3, 4, prio=2)
    request = _decoded(sock.sent[-1], tcmsg)
    assert _header(sock.sent[-1])[1] == k.RTM_NEWTFILTER
    expect(request, index=3, parent=0xFFFF0000, info=(2 << 16) | 0x0300)  # htons(ETH_P_ALL)
    options = request.get_attr("TCA_OPTIONS")
    sel = options.get_attr("TCA_U32_SEL")
    expect(sel, flags=1, nkeys=1)
    assert sel["keys"] == [{"key_mask": 0, "key_val": 0, "key_off": 0, "key_offmask": 0}]
    action = options.get_attr("TCA_U32_ACT").get_attr("TCA_ACT_PRIO_1")
    assert action.get_attr("TCA_ACT_KIND") == "mirred"
    mirred = action.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
    expect(mirred, action=k.TC_ACT_STOLEN, eaction=k.TCA_EGRESS_REDIR, ifindex=4)

    rt.delete_qdisc(3, k.TC_H_INGRESS)
    request = _decoded(sock.sent[-1], tcmsg)
    assert _header(sock.sent[-1])[1] == k.RTM_DELQDISC
    expect(request, index=3, parent=0xFFFFFFF1)


def _tbf_options(request: bytes) -> memoryview:
    attrs = k.TCA.decode(memoryview(request)[16 + k.TCMSG.size :])
    return memoryview(attrs["options"])


def test_tbf_buffer_ticks_and_their_limits() -> None:
    assert rtnl.tbf_buffer_ticks(1_250_000, 20_480) == 256_000
    assert rtnl.tbf_buffer_ticks(125, 1) == 125_000  # 8 ms
    with pytest.raises(ValueError, match="2\\*\\*32 ticks"):
        rtnl.tbf_buffer_ticks(1, 300)  # 300 s of traffic
    with pytest.raises(ValueError, match="positive"):
        rtnl.tbf_buffer_ticks(0, 10)
    assert TbfInfo(
        rate=1_250_000, buffer_ns=16_384_000, limit=0, peakrate=0, linklayer=1
    ).burst == (20_480)


@netns_test
def test_a_tbf_we_add_is_what_tc_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        rt.add_tbf(v0, rate=1_250_000, burst=20_480, limit=51_730)
        (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
        assert shown["kind"] == "tbf"
        expect(shown["options"], rate=1_250_000, burst=20_480, lat=25_000)  # 31250 B = 25 ms
        with pyroute(netns) as ipr:
            (theirs,) = [q for q in ipr.get_qdiscs(index=v0) if q.get_attr("TCA_KIND") == "tbf"]
        parms = theirs.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
        expect(parms, rate=1_250_000, limit=51_730, buffer=256_000)
        (ours,) = [q for q in rt.qdiscs(v0) if q.kind == "tbf"]
        expect(ours, index=v0, parent=k.TC_H_ROOT, handle=theirs["handle"])
        assert ours.tbf == TbfInfo(
            rate=1_250_000, buffer_ns=16_384_000, limit=51_730, peakrate=0, linklayer=1
        )
        # replace: another rate, the same qdisc slot; a plain add of a second root: EEXIST
        rt.add_tbf(v0, rate=2_500_000, burst=40_960, limit=200_000, replace=True)
        (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
        expect(shown["options"], rate=2_500_000, burst=40_960)
        with pytest.raises(NetlinkExists) as caught:
            rt.add_tbf(v0, rate=2_500_000, burst=40_960, limit=200_000)
        assert caught.value.errno == errno.EEXIST


@netns_test
def test_a_tbf_tc_adds_is_what_we_read(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        for rate, burst in (("10mbit", 20_000), ("40gbit", 5_000_000)):  # 40 Gbit: RATE64
            netns.run(["tc", "qdisc", "replace", "dev", "v0", "root", "tbf", "rate", rate,
                       "burst", str(burst), "latency", "25ms"])  # fmt: skip
            (shown,) = [q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["root"]]
            (ours,) = [q for q in rt.qdiscs("v0") if q.parent == k.TC_H_ROOT]
            assert ours.kind == "tbf" and ours.tbf is not None
            assert ours.tbf.rate == shown["options"]["rate"]
            # tc prints the burst from the buffer time rounded to whole microseconds
            assert abs(ours.tbf.burst - shown["options"]["burst"]) <= ours.tbf.rate // 10**6 + 1
            assert ours.handle >> 16 == int(shown["handle"].rstrip(":"), 16)
        assert ours.index == v0


@netns_test
def test_an_ifb_with_an_ingress_redirect_is_what_tc_ip_and_pyroute2_show(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        ifb = rt.create_ifb("ifb7", mtu=1400, txqlen=500, alias="pycni-bandwidth n c eth0", up=True)
        expect(ifb, name="ifb7", kind="ifb", mtu=1400, alias="pycni-bandwidth n c eth0")
        assert ifb.up
        shown = ip_link(netns, "ifb7")
        expect(shown, mtu=1400, txqlen=500, ifalias="pycni-bandwidth n c eth0")
        assert shown["linkinfo"]["info_kind"] == "ifb"
        rt.add_ingress_qdisc(v0)
        rt.add_redirect_filter(v0, ifb.index)
        (ingress,) = [
            q for q in tc_json(netns, "qdisc", "show", "dev", "v0") if q["kind"] == "ingress"
        ]
        assert ingress["handle"] == "ffff:" and ingress["parent"] == "ffff:fff1"
        shown_filters = tc_json(netns, "filter", "show", "dev", "v0", "parent", "ffff:")
        (shown_filter,) = [f for f in shown_filters if "actions" in f.get("options", {})]
        expect(shown_filter, protocol="all", pref=1, kind="u32")
        (action,) = shown_filter["options"]["actions"]
        expect(action, kind="mirred", mirred_action="redirect", direction="egress", to_dev="ifb7")
        assert shown_filter["options"]["match"] == {
            "value": "0",
            "mask": "0",
            "offmask": "",
            "off": 0,
        }
        (ours,) = rt.filters(v0)
        expect(ours, index=v0, parent=0xFFFF0000, prio=1, protocol=k.ETH_P_ALL, kind="u32")
        expect(ours, match_all=True, redirect=ifb.index)
        with pyroute(netns) as ipr:
            dumped = ipr.get_filters(index=v0, parent=0xFFFF0000)
            options = [f.get_attr("TCA_OPTIONS") for f in dumped]
            theirs = [
                f for f, o in zip(dumped, options, strict=True) if o and o.get_attr("TCA_U32_SEL")
            ]
        assert [f["handle"] for f in theirs] == [ours.handle]


@netns_test
def test_a_redirect_tc_adds_is_what_we_read(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt:
        netns.ip("link", "add", "ifb8", "type", "ifb")
        netns.run(["tc", "qdisc", "add", "dev", "v0", "ingress"])
        netns.run(["tc", "filter", "add", "dev", "v0", "parent", "ffff:", "protocol", "all",
                   "prio", "3", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
                   "redirect", "dev", "ifb8"])  # fmt: skip
        netns.run(["tc", "filter", "add", "dev", "v0", "parent", "ffff:", "protocol", "ip",
                   "prio", "4", "u32", "match", "ip", "dst", "10.0.0.0/8", "action", "mirred",
                   "egress", "mirror", "dev", "ifb8"])  # fmt: skip
        by_prio = {f.prio: f for f in rt.filters("v0")}
        ifb8 = rt.get_link("ifb8").index
        expect(by_prio[3], match_all=True, redirect=ifb8, protocol=k.ETH_P_ALL)
        expect(by_prio[4], match_all=False, redirect=None, protocol=0x0800)  # a mirror only
        assert {q.kind for q in rt.qdiscs(v0)} >= {"ingress"}


@netns_test
def test_qdisc_deletes_and_their_errnos_match_pyroute2(netns: Netns) -> None:
    with veth_up(netns) as v0, Rtnl(netns=netns.path) as rt, pyroute(netns) as ipr:
        for parent in (k.TC_H_ROOT, k.TC_H_INGRESS):  # only the default root; no ingress
            with pytest.raises(NetlinkNotFound) as caught:
                rt.delete_qdisc(v0, parent)
            theirs = pyroute_errno(lambda p=parent: ipr.tc("del", index=v0, parent=p))  # type: ignore[misc]
            assert caught.value.errno == theirs == errno.ENOENT
            rt.delete_qdisc(v0, parent, missing_ok=True)
        with pytest.raises(NetlinkNotFound) as no_link:
            rt.delete_qdisc("v9")
        assert no_link.value.errno == errno.ENODEV
        rt.add_tbf(v0, rate=125_000, burst=10_000, limit=20_000)
        rt.add_ingress_qdisc(v0)
        with pytest.raises(NetlinkExists):
            rt.add_ingress_qdisc(v0)
        rt.delete_qdisc(v0)
        rt.delete_qdisc(v0, k.TC_H_INGRESS)
        assert {q["kind"] for q in tc_json(netns, "qdisc", "show", "dev", "v0")} == {"noqueue"}


# --- conntrack (pycni.netlink.conntrack) -----------------------------------------------------

PYROUTE2_CONNTRACK = r"""
import json, socket
from pyroute2 import Conntrack
out = []
for family in (socket.AF_INET, socket.AF_INET6):
    with Conntrack(nfgen_family=family) as ct:
        out += [[e.tuple_orig.proto, e.tuple_orig.saddr, e.tuple_orig.sport,
                 e.tuple_orig.daddr, e.tuple_orig.dport] for e in ct.dump_entries()]
print(json.dumps(out))
"""


def pyroute2_conntrack(ns: Netns) -> set[tuple[int, str, int | None, str, int | None]]:
    """The node's conntrack table as pyroute2 reads it (its socket opened inside `ns`)."""
    done = ns.run([sys.executable, "-c", PYROUTE2_CONNTRACK])
    return {(p, src, sport, dst, dport) for p, src, sport, dst, dport in json.loads(done.stdout)}


def ours_conntrack(table: Conntrack) -> set[tuple[int, str, int | None, str, int | None]]:
    return {
        (e.proto, str(e.src), e.sport, str(e.dst), e.dport)
        for family in (AF_INET, AF_INET6)
        for e in table.entries(family)
    }


@contextmanager
def tracked(node: Netns, client: Netns) -> Iterator[None]:
    """`client` (10.77.0.1, fd77::1) wired to `node` (10.77.0.2, fd77::2), whose input hook
    tracks connections; UDP from the client to the node's ports 8080 and 9090, both ways."""
    node.ip("link", "add", "vn", "type", "veth", "peer", "name", "vc", "netns", client.name)
    for ns, dev, v4, v6 in ((node, "vn", "10.77.0.2", "fd77::2"), (client, "vc", "10.77.0.1",
                                                                    "fd77::1")):  # fmt: skip
        ns.ip("addr", "add", f"{v4}/24", "dev", dev)
        ns.ip("addr", "add", f"{v6}/64", "dev", dev, "nodad")
        ns.ip("link", "set", dev, "up")
    node.run(["nft", "add table inet ct_probe; add chain inet ct_probe in"
              " { type filter hook input priority 0; }; add rule inet ct_probe in ct state new"
              " counter"])  # fmt: skip
    sender = (
        "import socket\n"
        "for family, src, dst in ((socket.AF_INET, '10.77.0.1', '10.77.0.2'),"
        " (socket.AF_INET6, 'fd77::1', 'fd77::2')):\n"
        "    for sport, dport in ((40001, 8080), (40002, 8080), (40003, 9090)):\n"
        "        s = socket.socket(family, socket.SOCK_DGRAM)\n"
        "        s.bind((src, sport)); s.sendto(b'x', (dst, dport)); s.close()\n"
    )
    client.run([sys.executable, "-c", sender])
    yield


@netns_test
def test_conntrack_entries_and_delete_agree_with_pyroute2(netns: Netns, pod: Netns) -> None:
    with tracked(netns, pod), Conntrack(netns=netns.path) as table:
        ours = ours_conntrack(table)
        assert ours == pyroute2_conntrack(netns)
        assert {
            (17, "10.77.0.1", 40001, "10.77.0.2", 8080),
            (17, "fd77::1", 40003, "fd77::2", 9090),
        } <= ours
        gone = table.delete_to_ports(17, {8080}, [AF_INET])
        assert sorted(e.sport or 0 for e in gone) == [40001, 40002]
        left = pyroute2_conntrack(netns)
        assert not [e for e in left if e[3] == "10.77.0.2" and e[4] == 8080]
        assert (17, "10.77.0.1", 40003, "10.77.0.2", 9090) in left
        assert (17, "fd77::1", 40001, "fd77::2", 8080) in left  # the other family stays
        both = table.delete_to_ports(17, {9090})  # both families, from one dump
        assert sorted(str(e.src) for e in both) == ["10.77.0.1", "fd77::1"]
        assert not [e for e in pyroute2_conntrack(netns) if e[4] == 9090]
        table.delete(gone[0])  # gone already: fine
        with pytest.raises(NetlinkNotFound) as caught:
            table.delete(gone[0], missing_ok=False)
        assert caught.value.errno == errno.ENOENT


def test_conntrack_delete_reads_as_intended_by_pyroute2() -> None:
    sock = ScriptedSocket(_acking)
    table = Conntrack(sock=sock)  # type: ignore[arg-type]
    entry = ConntrackEntry(family=AF_INET6, proto=17, src=ip("fd77::1"), dst=ip("fd77::2"),
                           sport=40001, dport=8080, zone=7)  # fmt: skip
    table.delete(entry)
    _, msg_type, flags, _, _ = _header(sock.sent[-1])
    assert msg_type == k.NFNL_SUBSYS_CTNETLINK << 8 | k.IPCTNL_MSG_CT_DELETE
    assert flags == k.NLM_F_REQUEST | k.NLM_F_ACK
    request = _decoded(sock.sent[-1], nfct_msg)
    assert request["nfgen_family"] == AF_INET6
    orig = request.get_attr("CTA_TUPLE_ORIG")
    addresses, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    assert (addresses.get_attr("CTA_IP_V6_SRC"), addresses.get_attr("CTA_IP_V6_DST")) == (
        "fd77::1",
        "fd77::2",
    )
    assert [proto.get_attr(f"CTA_PROTO_{n}") for n in ("NUM", "SRC_PORT", "DST_PORT")] == [
        17,
        40001,
        8080,
    ]
    assert request.get_attr("CTA_ZONE") == 7
