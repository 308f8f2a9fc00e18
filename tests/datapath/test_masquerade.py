"""ipMasq's node-level nftables rules, in a namespace standing in for the node."""

from __future__ import annotations

import re
import sys

from pycni.lab.netns import Netns

DRIVER = """
import sys
from pycni.datapath import masquerade
from pycni.netlink import nftables
from pycni.cni.ip import Prefix
sources = [Prefix.parse(p) for p in sys.argv[2].split(",")]
extra = [Prefix.parse(p) for p in sys.argv[3].split(",") if p]
masquerade.ensure(sys.argv[1], sources, extra)
print(nftables.chain_comment(nftables.TABLE, masquerade.chain_name(sys.argv[1])))
"""


def ensure(ns: Netns, network: str, sources: str, extra: str = "") -> str:
    done = ns.run([sys.executable, "-c", DRIVER, network, sources, extra])
    return done.stdout.strip()


def chains(ns: Netns) -> dict[str, str]:
    """chain name -> its listing, with handles (a recreated chain gets a new one)."""
    text = ns.run(["nft", "-a", "list", "table", "inet", "pycni"]).stdout
    return dict(re.findall(r"chain (\S+) \{ # handle \d+\n(.*?)\n\t\}", text, re.S)) | {
        "handles": " ".join(re.findall(r"chain \S+ \{ # handle (\d+)", text))
    }


def test_rules_per_network_idempotent_and_rewritten_when_they_change(netns: Netns) -> None:
    first = ensure(netns, "net-a", "10.1.0.0/24", "10.0.0.0/8,10.1.0.0/16")
    before = chains(netns)
    assert ensure(netns, "net-a", "10.1.0.0/24", "10.0.0.0/8,10.1.0.0/16") == first
    assert chains(netns) == before  # same rules: nothing rewritten (same handles)
    body = next(v for k, v in before.items() if k.startswith("net_"))
    assert "ip saddr 10.1.0.0/24 ip daddr != 10.0.0.0/8 masquerade" in body  # /16 inside /8
    changed = ensure(netns, "net-a", "10.1.0.0/24,fd00:1::/64")
    assert changed != first
    after = chains(netns)
    body = next(v for k, v in after.items() if k.startswith("net_"))
    assert "ip daddr != 10.1.0.0/24 masquerade" in body and "ip6 saddr fd00:1::/64" in body
    ensure(netns, "net-b", "10.2.0.0/24")
    assert len([k for k in chains(netns) if k.startswith("net_")]) == 2  # one chain a network
