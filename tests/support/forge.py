"""Clear tunnel packets forged with a node's source address, for the IPsec tests: the start of
a script run with `python -c` in another namespace (the guest has no scapy), which builds the
IPv4 headers itself and sends on a raw socket."""

from __future__ import annotations


def script(body: str) -> str:
    """`body` after the definitions it uses: csum(data), ipv4(proto, src, dst, body) and
    send_in_tunnel(kind, src, dst, inner, vni, dst_mac, src_mac), which sends `inner` (an IPv4
    packet) from `src` to `dst` in VXLAN (UDP to 4789, an Ethernet frame between the MACs
    "aa:bb:..") or in IPIP, five times, then prints "sent"."""
    return _DEFINITIONS + body


_DEFINITIONS = r"""
import socket, struct, sys
def csum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack(f"!{len(data)//2}H", data))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
def ipv4(proto, a, b, body):
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 7, 0, 64, proto, 0,
                       socket.inet_aton(a), socket.inet_aton(b))
    return head[:10] + struct.pack("!H", csum(head)) + head[12:] + body
def send_in_tunnel(kind, src, dst, inner, vni=0, dst_mac="", src_mac=""):
    if kind == "vxlan":
        mac = lambda m: bytes.fromhex(m.replace(":", ""))
        frame = mac(dst_mac) + mac(src_mac) + b"\x08\x00" + inner
        vxlan = struct.pack("!II", 0x08000000, vni << 8) + frame
        outer = ipv4(17, src, dst, struct.pack("!HHHH", 40001, 4789, 8 + len(vxlan), 0) + vxlan)
    else:
        outer = ipv4(4, src, dst, inner)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for _ in range(5):
        s.sendto(outer, (dst, 0))
    print("sent", flush=True)
"""
