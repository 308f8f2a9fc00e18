"""The plugins' side of `"encryption": "ipsec"` (pycni-vxlan, pycni-ipip): the config value, the
MTU that ESP's overhead leaves the pods, and whether this node's kernel can do ESP at all.

The tunnel packets between nodes (VXLAN's UDP, IPIP's IP protocol 4) travel as IPsec ESP in
transport mode; the node agent keys them (pycni.agent, pycni.datapath.ipsec, docs/encryption.md).
A plugin only has to leave room for ESP in the MTU and refuse a kernel without ESP.

ESP in transport mode goes between the outer IP header and the tunnel's payload, and adds, with
the AEAD rfc4106(gcm(aes)) (RFC 4106): the ESP header (SPI, sequence number) 8 bytes, the IV 8,
then after the payload padding to a multiple of 4 (0 to 3 bytes), the pad length and next
header bytes (2), and the ICV 16: 34 to 37 bytes. `esp_payload_mtu` is the kernel's own rule
(esp4_get_mtu): on a 1500-byte underlay, 1446 bytes of payload, so 1416 for VXLAN's pods and
1446 for IPIP's, 34 bytes less than in the clear; 37 is the worst case (underlay MTU = 3 mod 4).

Whether the kernel can (`esp_problem`, run by STATUS and by ADD before it touches anything):
one xfrm request that cannot change the node's xfrm state. It asks the kernel to *update* an
ESP SA that does not exist (to 192.0.2.2, TEST-NET-1, which no real peer has). The kernel builds
the SA first (it looks the AEAD up, then the ESP type, loading gcm and esp4 on demand where they
are modules), then finds nothing to update and answers ESRCH, and frees what it built; nothing
is inserted (net/xfrm/xfrm_state.c, xfrm_state_update). Without the AEAD it answers ENOSYS
("Requested AEAD algorithm not found"), without ESP EPROTONOSUPPORT ("Requested type not
found"): the refusal names the modules to load. Files would be cheaper to read but answer
wrongly: /sys/module misses a built-in esp4, /proc/crypto a gcm not loaded yet, and a node
container often has no /lib/modules at all. One netlink round trip: 0.3 ms measured.
"""

from __future__ import annotations

import errno

from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import IP

NONE, IPSEC = "none", "ipsec"

IPV4_HEADER = 20  # the outer header; ESP here is IPv4 only
ESP_HEADER = 8  # SPI + sequence number (RFC 4303)
ESP_IV = 8  # rfc4106(gcm(aes))'s explicit IV
ESP_ICV = 16  # its 128-bit integrity check value
ESP_TRAILER = 2  # pad length + next header
ESP_ALIGN = 4  # the payload + trailer are padded to this (GCM's own block size is 1)
ESP_MAX_OVERHEAD = ESP_HEADER + ESP_IV + ESP_ICV + ESP_TRAILER + ESP_ALIGN - 1  # 37


def parse(value: object) -> str:
    """The config's `encryption` (validated by the schema): NONE when absent."""
    return IPSEC if value == IPSEC else NONE


def esp_payload_mtu(link_mtu: int) -> int:
    """The largest payload (what follows the outer IPv4 header) that an ESP transport-mode
    packet carries within `link_mtu`: the kernel's esp4_get_mtu for this AEAD."""
    room = link_mtu - IPV4_HEADER - ESP_HEADER - ESP_IV - ESP_ICV
    return (room & ~(ESP_ALIGN - 1)) - ESP_TRAILER


def esp_overhead(link_mtu: int) -> int:
    """What ESP costs on a link of this MTU: 34 to 37 bytes."""
    return link_mtu - IPV4_HEADER - esp_payload_mtu(link_mtu)


# The probe's SA: to an address no real node has (RFC 5737 TEST-NET-1), so no SA of pycni's or
# anyone's matches it (an SA is found by destination, SPI and protocol).
_PROBE_SRC, _PROBE_DST = "192.0.2.1", "192.0.2.2"
_PROBE_SPI = 0x100  # the first SPI that is not reserved (RFC 4303)


def esp_problem(netns: str | None = None) -> str | None:
    """Why this node's kernel cannot carry the tunnel packets as ESP with the AEAD, in a
    sentence that names the modules to load; None when it can. Asked in the current network
    namespace, or in `netns` (a path)."""
    from pycni.netlink import NetlinkError
    from pycni.netlink.xfrm import AEAD_ALGORITHM, AEAD_KEY_BYTES, SecurityAssociation, Xfrm

    probe = SecurityAssociation(
        src=IP.parse(_PROBE_SRC),
        dst=IP.parse(_PROBE_DST),
        spi=_PROBE_SPI,
        key=bytes(AEAD_KEY_BYTES),
        reqid=0,  # not pycni's reqid
    )
    need = f"encryption ipsec needs IPsec ESP with {AEAD_ALGORITHM}"
    try:
        with Xfrm(netns) as xfrm:
            xfrm.add_sa(probe, update=True)
    except OSError as err:  # the socket itself: no NETLINK_XFRM (xfrm_user)
        return (
            f"{need} and this node's kernel has no xfrm netlink ({err.strerror}): load the"
            " modules (modprobe xfrm_user; modprobe esp4), or set encryption to none"
        )
    except NetlinkError as err:
        said = f"ip xfrm state: {err.kernel_message or err.strerror}"
        if err.errno == errno.ESRCH:
            return None  # built, then nothing to update: the kernel has it all
        if err.errno == errno.EPROTONOSUPPORT:
            return (
                f"{need} and this node's kernel has no ESP ({said}): load the esp4 module"
                " (modprobe esp4), or set encryption to none"
            )
        if err.errno == errno.ENOSYS:
            return (
                f"{need} and this node's kernel has not got that AEAD ({said}): load the"
                " modules (modprobe esp4; modprobe gcm), or set encryption to none"
            )
        return f"{need} and this node's kernel refused a probe for it: {err.msg}"
    return None  # an SA of the probe's own addresses existed, and was updated: the kernel can


def require_esp(netns: str | None = None) -> None:
    """Refuse (code 50, not available) on a kernel without ESP: before ADD touches
    anything, and in STATUS."""
    problem = esp_problem(netns)
    if problem is not None:
        raise CniError(Code.NOT_AVAILABLE, problem)


def require_ipv4_underlay(local_ip: IP) -> None:
    """ESP here protects IPv4 tunnel packets only (esp4; the agent's policies are IPv4)."""
    if local_ip.version != 4:
        raise ConfigError(
            "$.encryption",
            f"ipsec needs an IPv4 underlay address; this node's is {local_ip} (set localIP to"
            " an IPv4 address, or encryption to none)",
        )
