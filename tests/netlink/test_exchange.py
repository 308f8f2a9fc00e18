"""The netlink exchange (one request, its answers), with a scripted socket: interrupted dumps
run again, stale answers and other ports skipped, sequence numbers, the kernel's extended ack,
datagrams larger than the buffer."""

from __future__ import annotations

import errno

import pytest

from pycni.netlink import NetlinkError, wire
from pycni.netlink import kernel as k
from pycni.netlink import socket as netlink_socket
from tests.support.netlink import (
    PORT,
    expect,
    ip,
    link_payload,
    nlmsg,
    nlmsg_ack,
    nlmsg_done,
    nlmsg_header,
    scripted,
)


def test_an_interrupted_dump_is_read_to_its_end_and_run_again() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = nlmsg_header(request)[3]
        flags = k.NLM_F_MULTI | (k.NLM_F_DUMP_INTR if number == 1 else 0)
        first, second = (
            nlmsg(k.RTM_NEWLINK, flags, seq, link_payload(number * 10 + i)) for i in (0, 1)
        )
        return [first + second, nlmsg_done(seq, flags)]

    rt, sock = scripted(script)
    assert [link.index for link in rt.links()] == [20, 21]
    assert len(sock.sent) == 2 and sock.queue == []
    _, msg_type, flags, _, _ = nlmsg_header(sock.sent[0])
    assert msg_type == k.RTM_GETLINK
    assert flags == k.NLM_F_REQUEST | k.NLM_F_ACK | k.NLM_F_DUMP


def test_a_dump_interrupted_every_time_fails_with_eintr() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = nlmsg_header(request)[3]
        return [
            nlmsg(k.RTM_NEWLINK, k.NLM_F_MULTI | k.NLM_F_DUMP_INTR, seq, link_payload(1)),
            nlmsg_done(seq),
        ]

    rt, sock = scripted(script)
    with pytest.raises(NetlinkError, match=r"list links.*interrupted") as caught:
        rt.links()
    assert caught.value.errno == errno.EINTR
    assert len(sock.sent) == netlink_socket.DUMP_ATTEMPTS


def test_answers_to_other_requests_and_ports_are_skipped() -> None:
    def script(number: int, request: bytes) -> list[bytes]:
        seq = nlmsg_header(request)[3]
        stale = nlmsg(k.RTM_NEWLINK, k.NLM_F_MULTI, seq - 1, link_payload(7)) + nlmsg_done(seq - 1)
        other_port = nlmsg(k.RTM_NEWLINK, 0, seq, link_payload(8), port=PORT + 1)
        return [stale, other_port, nlmsg(k.RTM_NEWLINK, 0, seq, link_payload(3)), nlmsg_ack(seq)]

    rt, sock = scripted(script)
    assert rt.get_link(3).name == "l3"
    assert sock.queue == []


def test_sequence_numbers_increase_per_request() -> None:
    rt, sock = scripted(lambda number, request: [nlmsg_ack(nlmsg_header(request)[3])])
    for _ in range(3):
        rt.delete_link(5)
    assert [nlmsg_header(request)[3] for request in sock.sent] == [1, 2, 3]


def test_the_kernels_own_words_come_with_the_errno() -> None:
    """An extended ack after the request's header only (NETLINK_CAP_ACK), and after the whole
    request echoed (a kernel that ignored CAP_ACK)."""
    words = k.NLMSGERR.encode({"msg": "Unknown device type"})

    def capped(number: int, request: bytes) -> list[bytes]:
        flags = k.NLM_F_CAPPED | k.NLM_F_ACK_TLVS
        return [nlmsg_ack(nlmsg_header(request)[3], errno.EOPNOTSUPP, flags, request[:16] + words)]

    def echoed(number: int, request: bytes) -> list[bytes]:
        tail = request + b"\0" * (wire.align(len(request)) - len(request)) + words
        return [nlmsg_ack(nlmsg_header(request)[3], errno.EOPNOTSUPP, k.NLM_F_ACK_TLVS, tail)]

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
        seq = nlmsg_header(request)[3]
        many = (nlmsg(k.RTM_NEWLINK, k.NLM_F_MULTI, seq, link_payload(i)) for i in range(1, 2000))
        return [b"".join(many), nlmsg_done(seq)]

    rt, _ = scripted(script)
    links = rt.links()
    assert len(links) == 1999 and links[-1].name == "l1999"
