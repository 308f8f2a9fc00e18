"""pycni.netlink.nftables: scripts as nft reads them, typed elements, the one retry loop, and
reading chains and sets back over nfnetlink, against real nft and a real kernel in namespaces
these tests create (their nft runs inside them: see `nft_in`)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pycni.cni import spawn
from pycni.cni.errors import CniError, Code
from pycni.cni.ip import IP
from pycni.lab import netns as netns_mod
from pycni.netlink import nftables as nft
from pycni.netlink.nftables import Element, Owner, Script, SetSpec, Table, Verdict
from tests.support.ci import unavailable
from tests.support.headers import header_values
from tests.support.interpreter import python_output

HOSTPORTS = SetSpec("hostports", (nft.NF_PROTO, nft.INET_PROTO, nft.INET_SERVICE), nft.VERDICT)
BY_IP4 = SetSpec("by_ip4", (nft.IPV4_ADDR, nft.INET_PROTO, nft.INET_SERVICE), nft.VERDICT)
BY_IP6 = SetSpec("by_ip6", (nft.IPV6_ADDR, nft.INET_PROTO, nft.INET_SERVICE), nft.VERDICT)
# NetworkPolicy's shape: a table of its own, pod addresses per selector and family
POLICY = Table("inet", "pycni_policy_test")
PODS4 = SetSpec("sel_web_v4", nft.IPV4_ADDR)
PODS6 = SetSpec("sel_web_v6", nft.IPV6_ADDR)
PORTS = SetSpec("ports", nft.INET_SERVICE)


# --- the kernel's numbers ----------------------------------------------------------------------


def test_numbers_match_the_kernel_headers() -> None:
    headers = header_values(
        "netlink.h", "netfilter.h", "netfilter/nfnetlink.h", "netfilter/nf_tables.h"
    )
    ours = {
        name: value
        for name, value in vars(nft).items()
        if re.match(r"(NF|NETLINK_)\w+$", name)
        and isinstance(value, int)
        and not name.startswith("NFT_CANDIDATES")
        and not name.startswith("NFTNL_")
    } | {
        "NFPROTO_" + {"ip": "IPV4", "ip6": "IPV6"}.get(family, family.upper()): number
        for family, number in nft.NFPROTO.items()
    }
    assert len(ours) > 30
    wrong = [
        f"{k}: ours {v}, header {headers.get(k)}" for k, v in ours.items() if headers.get(k) != v
    ]
    assert not wrong, "\n".join(wrong)


# --- scripts, names, elements: what nft will read ----------------------------------------------


def test_a_script_says_each_statement_once_in_call_order() -> None:
    chain = "hp_1a2b"
    jump = Verdict.jump(chain)
    script = (
        Script(nft.TABLE)
        .add_table()
        .add_set(HOSTPORTS)
        .add_set(PODS4)
        .add_chain(chain, comment="kubenet c1/eth0")
        .recreate_chain("nat", hook="type nat hook postrouting priority srcnat", comment="f00d")
        .add_rule("nat", "ip saddr 10.0.0.0/8 masquerade")
        .add_elements(HOSTPORTS, [Element(4, "tcp", 8080, data=jump)])
        .remove_elements(PODS4, [Element(IP.parse("10.0.0.1"))])
        .flush_chain(chain)
        .delete_chain(chain)
    )
    assert str(script) == (
        "add table inet pycni\n"
        "add map inet pycni hostports { type nf_proto . inet_proto . inet_service : verdict; }\n"
        "add set inet pycni sel_web_v4 { type ipv4_addr; }\n"
        'add chain inet pycni hp_1a2b { comment "kubenet c1/eth0"; }\n'
        "add chain inet pycni nat\n"
        "flush chain inet pycni nat\n"
        "delete chain inet pycni nat\n"
        "add chain inet pycni nat { type nat hook postrouting priority srcnat; policy accept;"
        ' comment "f00d"; }\n'
        "add rule inet pycni nat ip saddr 10.0.0.0/8 masquerade\n"
        "add element inet pycni hostports { ipv4 . tcp . 8080 : jump hp_1a2b }\n"
        "add element inet pycni sel_web_v4 { 10.0.0.1 }\n"
        "delete element inet pycni sel_web_v4 { 10.0.0.1 }\n"
        "flush chain inet pycni hp_1a2b\n"
        "delete chain inet pycni hp_1a2b\n"
    )
    assert len(script) == 14
    copy = script.copy().add_table()
    assert len(copy) == 15 and len(script) == 14
    flagged = SetSpec("blocks", nft.IPV6_ADDR, flags=("interval",))
    assert Script(POLICY).add_set(flagged).__str__() == (
        "add set inet pycni_policy_test blocks { type ipv6_addr; flags interval; }\n"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: Table("inet", "bad name"),
        lambda: Table("inet6", "pycni"),
        lambda: Script(nft.TABLE).add_chain("x;flush ruleset"),
        lambda: Script(nft.TABLE).add_chain("c", comment='a" ; flush ruleset ; "'),
        lambda: Script(nft.TABLE).add_chain("c", comment="two\nlines"),
        lambda: Script(nft.TABLE).add_chain("café"),
        lambda: Script(nft.TABLE).add_rule("c", "accept\nflush ruleset"),
        lambda: Script(nft.TABLE).add_rule("c", "accept; flush ruleset"),
        lambda: Verdict.jump("-c"),
        lambda: Verdict("jump"),
        lambda: Verdict("accept", "c"),
        lambda: SetSpec("s", nft.VERDICT),
        lambda: Script(nft.TABLE).add_elements(HOSTPORTS, [Element(4, "tcp", 80)]),  # no data
        lambda: Script(nft.TABLE).add_elements(PODS4, [Element(IP.parse("fd00::1"))]),
        lambda: Script(nft.TABLE).delete_elements(HOSTPORTS, [Element(4, "tcp")]),
        lambda: Script(nft.TABLE).add_elements(PODS4, [Element(IP.parse("10.0.0.1"), data=1)]),
    ],
)
def test_what_nft_would_misread_is_refused_before_it_runs(make: object) -> None:
    assert callable(make)
    with pytest.raises(ValueError):
        make()


def test_keys_decode_from_the_kernels_bytes() -> None:
    """A concatenation's fields each take a multiple of 4 bytes; a single field its size."""
    assert HOSTPORTS.key_len == 12 and BY_IP6.key_len == 24 and PORTS.key_len == 2
    assert HOSTPORTS.key_type == (2 << 12) | (12 << 6) | 13  # nf_proto . inet_proto . inet_service
    ip6 = IP.parse("fd00::1")
    assert HOSTPORTS.parse_key(b"\x0a\0\0\0" + b"\x11\0\0\0" + b"\x1f\x90\0\0") == (6, "udp", 8080)
    assert BY_IP6.parse_key(ip6.packed + b"\x84\0\0\0" + b"\0\x01\0\0") == (ip6, "sctp", 1)
    assert PODS4.parse_key(bytes([10, 0, 0, 1])) == (IP.parse("10.0.0.1"),)
    assert HOSTPORTS.parse_key(b"\x02\0\0\0" + b"\x2f\0\0\0" + b"\0\x50\0\0")[1] == "47"  # GRE
    with pytest.raises(ValueError, match="declared with another type"):
        PODS4.parse_key(b"\0\x50")


def test_an_owner_comment_says_the_attachment_and_reads_back() -> None:
    owner = Owner("kubenet", "c1", "eth0")
    assert str(owner) == "kubenet c1/eth0" and Owner.parse(str(owner)) == owner
    assert Owner.parse("net 0123abcd/net1") == Owner("net", "0123abcd", "net1")
    for other in (None, "", "1f2e3d4c5b6a7980", "kubenet c1", "kubenet /eth0"):
        assert Owner.parse(other) is None
    chain = nft.Chain("pycni", "hp_1", 1, "kubenet c1/eth0")
    assert chain.owner == owner and nft.Chain("pycni", "x", 2, "f00d").owner is None


def test_userdata_comment() -> None:
    """libnftnl's userdata: TLVs of (type u8, length u8, value); the comment NUL-terminated."""
    assert nft.udata_comment(b"\x00\x05abcd\x00") == "abcd"
    assert nft.udata_comment(b"\x07\x02xy\x00\x03ok\x00") == "ok"
    assert nft.udata_comment(b"\x07\x02xy") is None
    assert nft.udata_comment(b"\x00\x09short") == "short"  # a truncated one: what is there


def test_fingerprint() -> None:
    assert nft.fingerprint("a") == nft.fingerprint("a") != nft.fingerprint("b")
    assert re.fullmatch(r"[0-9a-f]{16}", nft.fingerprint(""))


# --- running nft: missing, refused, raced (the spawn seam, no kernel) --------------------------


def test_a_node_without_nft_gets_an_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nft, "NFT_CANDIDATES", ("/nonexistent/nft",))
    assert nft.nft_path() is None
    with pytest.raises(CniError) as err:
        nft.run(Script(nft.TABLE).add_table(), "install the rules", remedy="install nftables")
    assert err.value.code == Code.KERNEL and err.value.details == "install nftables"
    assert err.value.msg == (
        "failed to install the rules: nft (nftables) is not installed in /nonexistent/nft"
    )
    calls: list[Callable[[], object]] = [
        lambda: nft.commit(lambda: Script(nft.TABLE).add_table(), "x", attempts=3),
        lambda: nft.list_chain(nft.TABLE, "c", "check"),
    ]
    for call in calls:
        with pytest.raises(CniError, match="not installed"):
            call()


class Spawned:
    """spawn.run, scripted: each nft run answers the next (status, output)."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.scripts: list[str] = []

    def __call__(
        self, argv: list[str], env: dict[str, str], stdin: bytes, **_: object
    ) -> tuple[int, bytes]:
        assert argv[1:] == ["-f", "-"] and env == nft.NFT_ENV
        self.scripts.append(stdin.decode())
        return self.answers.pop(0)


RACE = (1, b"Error: Could not process rule: File exists\nadd element ...\n")


def test_commit_builds_again_after_a_lost_race_and_stops_when_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nft, "nft_path", lambda: "/usr/sbin/nft")
    built: list[int] = []
    conflicts: list[int] = []

    def build() -> Script:
        built.append(len(built))
        return Script(nft.TABLE).add_chain(f"attempt{len(built)}")

    runs = Spawned(RACE, (0, b""))
    monkeypatch.setattr(spawn, "run", runs)
    nft.commit(build, "x", attempts=3, on_conflict=lambda: conflicts.append(1))
    assert built == [0, 1] and conflicts == [1] and "attempt2" in runs.scripts[1]

    built.clear()
    conflicts.clear()
    monkeypatch.setattr(spawn, "run", Spawned(RACE, RACE, RACE, RACE))
    with pytest.raises(CniError) as err:
        nft.commit(build, "forward it", attempts=3, on_conflict=lambda: conflicts.append(1))
    assert built == [0, 1, 2] and conflicts == [1, 1, 1]  # the last conflict too: it may raise
    assert err.value.code == Code.KERNEL and "File exists" in err.value.msg
    assert err.value.msg.startswith("failed to forward it: nft: Error:")
    assert "attempt3" in err.value.details  # the script that was refused

    built.clear()
    monkeypatch.setattr(spawn, "run", Spawned((1, b"Error: syntax error\n"), (0, b"")))
    with pytest.raises(CniError, match="syntax error"):
        nft.commit(build, "x", attempts=3)
    assert built == [0]  # not a race: no second attempt

    runs = Spawned()
    monkeypatch.setattr(spawn, "run", runs)
    nft.commit(lambda: None, "x", attempts=3)
    nft.commit(lambda: Script(nft.TABLE), "x", attempts=3)
    assert runs.scripts == []  # nothing to do: nft is not started


# --- against the kernel ------------------------------------------------------------------------


@pytest.fixture
def nft_in(
    netns: netns_mod.Netns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[netns_mod.Netns]:
    """This process's nft runs inside `netns` (an executable `ip netns exec <ns> nft` wrapper
    as the only candidate), so run/commit act there, never on the host's ruleset."""
    real = nft.nft_path()
    if real is None:
        unavailable("nft is not installed (packaging/setup.sh installs nftables)")
    wrapper = tmp_path / "nft"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns.name} {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(nft, "NFT_CANDIDATES", (str(wrapper),))
    yield netns


def ruleset_text(ns: netns_mod.Netns) -> str:
    return ns.run(["nft", "list", "ruleset"]).stdout


@pytest.mark.netns
def test_a_script_applies_whole_or_not_at_all(nft_in: netns_mod.Netns) -> None:
    good = Script(nft.TABLE).add_table().add_set(HOSTPORTS).add_chain("hp_a", comment="n c/eth0")
    bad = good.copy().add_rule("hp_a", "ip saddr 10.0.0.0/8 no-such-statement")
    with pytest.raises(CniError) as err:
        nft.run(bad, "install the test rules")
    assert err.value.code == Code.KERNEL and "no-such-statement" in err.value.details
    assert ruleset_text(nft_in).strip() == ""  # nothing of the good part either
    nft.run(good, "install the test rules")
    with nft.Ruleset(nft_in.path) as ruleset:
        chain = ruleset.chain(nft.TABLE, "hp_a")
        assert chain is not None and chain.owner == Owner("n", "c", "eth0")
        assert ruleset.elements(nft.TABLE, HOSTPORTS) == []
    assert nft.list_chain(nft.TABLE, "hp_a", "list") is not None
    assert nft.list_chain(nft.TABLE, "hp_b", "list") is None


@pytest.mark.netns
def test_reading_what_is_not_there(netns: netns_mod.Netns) -> None:
    with nft.Ruleset(netns.path) as ruleset:
        assert ruleset.chain(nft.TABLE, "hp_a") is None
        assert ruleset.chains(nft.TABLE) == []
        assert ruleset.elements(nft.TABLE, HOSTPORTS) is None
    assert nft.chain_comment(nft.TABLE, "hp_a", netns=netns.path) is None
    netns.run(["nft", "add table inet pycni; add chain inet pycni plain"])
    with nft.Ruleset(netns.path) as ruleset:
        assert ruleset.chain(nft.TABLE, "hp_a") is None
        assert ruleset.chain(nft.TABLE, "plain") == nft.Chain("pycni", "plain", 1, "")
        assert ruleset.elements(nft.TABLE, HOSTPORTS) is None
        assert ruleset.chain(Table("ip", "pycni"), "plain") is None  # another family's table
    assert nft.chain_comment(nft.TABLE, "plain", netns=netns.path) == ""


@pytest.mark.netns
def test_chains_of_a_table_with_their_comments(netns: netns_mod.Netns) -> None:
    script = Script(nft.TABLE).add_table().add_chain("a", comment="kubenet c1/eth0")
    script.recreate_chain("b", hook="type nat hook output priority -100", comment="f00d")
    script.extend(Script(POLICY).add_table().add_chain("a", comment="other table"))
    netns.run(["nft", "-f", "-"], input=str(script))
    with nft.Ruleset(netns.path) as ruleset:
        chains = {c.name: c for c in ruleset.chains(nft.TABLE)}
        assert {n: c.comment for n, c in chains.items()} == {"a": "kubenet c1/eth0", "b": "f00d"}
        assert ruleset.chains(POLICY)[0].comment == "other table"
        assert ruleset.chain(nft.TABLE, "b") == chains["b"] and chains["b"].handle > 0


def _random_elements(rng: random.Random, count: int) -> dict[SetSpec, set[Element]]:
    chains = ["hp_a", "hp_b"]
    verdicts = [Verdict.jump("hp_a"), Verdict.goto("hp_b"), Verdict("accept"), Verdict("drop")]
    out: dict[SetSpec, set[Element]] = {s: set() for s in (HOSTPORTS, BY_IP4, BY_IP6, PODS4, PODS6)}
    for _ in range(count):
        proto, port = rng.choice(["tcp", "udp", "sctp"]), rng.randrange(1, 65536)
        ip4, ip6 = IP(rng.getrandbits(32), 4), IP(rng.getrandbits(128), 6)
        out[HOSTPORTS].add(Element(rng.choice([4, 6]), proto, port, data=rng.choice(verdicts)))
        out[BY_IP4].add(Element(ip4, proto, port, data=Verdict.jump(rng.choice(chains))))
        out[BY_IP6].add(Element(ip6, proto, port, data=rng.choice(verdicts)))
        out[PODS4].add(Element(ip4))
        out[PODS6].add(Element(ip6))
    # one key, one element: keep the first of a repeated key
    for spec, elements in out.items():
        by_key: dict[tuple[object, ...], Element] = {}
        for element in sorted(elements, key=repr):
            by_key.setdefault(element.key, element)
        out[spec] = set(by_key.values())
    return out


@pytest.mark.netns
def test_elements_read_back_as_written_many_datagrams_of_them(netns: netns_mod.Netns) -> None:
    """Every datatype and verdict kind, 1500 elements a set (a dump of many datagrams)."""
    written = _random_elements(random.Random(16), 1500)
    script = Script(nft.TABLE).add_table().add_chain("hp_a").add_chain("hp_b")
    for spec, elements in written.items():
        script.add_set(spec).add_elements(spec, elements)
    netns.run(["nft", "-f", "-"], input=str(script), timeout=120)
    with nft.Ruleset(netns.path) as ruleset:
        for spec, elements in written.items():
            found = ruleset.elements(nft.TABLE, spec)
            assert found is not None and len(found) == len(elements), spec.name
            assert set(found) == elements, spec.name
        with pytest.raises(ValueError, match="another type"):
            ruleset.elements(nft.TABLE, SetSpec(PODS6.name, nft.IPV4_ADDR))


@pytest.mark.netns
def test_pod_sets_change_incrementally_in_one_transaction(nft_in: netns_mod.Netns) -> None:
    """NetworkPolicy's shape: a table of its own, a set of pod addresses per selector and
    family, a chain per policy matching them; pods come and go as element adds and deletes of
    one transaction, which fails whole (here: a delete of an address that is not there)."""
    a4, b4, c4 = (IP.parse(f"10.9.0.{n}") for n in (1, 2, 3))
    a6 = IP.parse("fd09::1")
    setup = Script(POLICY).add_table().add_set(PODS4).add_set(PODS6)
    setup.add_chain("pol_web").add_rule("pol_web", f"ip saddr @{PODS4.name} accept")
    setup.add_rule("pol_web", f"ip6 saddr @{PODS6.name} accept")
    setup.add_elements(PODS4, [Element(a4), Element(b4)]).add_elements(PODS6, [Element(a6)])
    nft.run(setup, "set up the policy")

    def pods() -> tuple[set[IP], set[IP]]:
        with nft.Ruleset(nft_in.path) as ruleset:
            found = [ruleset.elements(POLICY, spec) or [] for spec in (PODS4, PODS6)]
        return {e.key[0] for e in found[0]}, {e.key[0] for e in found[1]}

    assert pods() == ({a4, b4}, {a6})
    change = Script(POLICY).add_elements(PODS4, [Element(c4)]).delete_elements(PODS4, [Element(a4)])
    change.delete_elements(PODS6, [Element(a6)])
    broken = change.copy().delete_elements(PODS4, [Element(IP.parse("10.9.0.99"))])
    with pytest.raises(CniError):
        nft.run(broken, "move the pods")
    assert pods() == ({a4, b4}, {a6})  # none of it
    nft.run(change, "move the pods")
    assert pods() == ({b4, c4}, set())
    nft.run(Script(POLICY).remove_elements(PODS4, [Element(a4), Element(b4)]), "remove pods")
    assert pods() == ({c4}, set())  # a4 was gone already: no failure
    assert "ip saddr @sel_web_v4 accept" in (nft.list_chain(POLICY, "pol_web", "list") or "")


@pytest.mark.netns
def test_commit_wins_the_race_for_a_key_another_chain_took(nft_in: netns_mod.Netns) -> None:
    """The race portmap lives with: an element this attachment means to remove (add, then
    delete, as jump to its chain) jumps to another chain by now. nft refuses (EEXIST); commit
    lets on_conflict leave that key to its new owner and builds the script again."""
    ports = [Element(4, "tcp", p, data=Verdict.jump("hp_old")) for p in (80, 443)]
    base = Script(nft.TABLE).add_table().add_set(HOSTPORTS)
    nft.run(base.copy().add_chain("hp_old").add_chain("hp_new"), "set up")
    nft.run(Script(nft.TABLE).add_elements(HOSTPORTS, ports), "add")
    taken = Element(4, "tcp", 443, data=Verdict.jump("hp_new"))
    remove = Script(nft.TABLE).delete_elements(HOSTPORTS, [ports[1]])
    nft.run(remove.add_elements(HOSTPORTS, [taken]), "hand 443 over")  # the other pod's ADD

    mine = list(ports)
    built = []

    def build() -> Script:
        built.append(len(mine))
        script = Script(nft.TABLE).add_chain("hp_old").remove_elements(HOSTPORTS, mine)
        return script.flush_chain("hp_old").delete_chain("hp_old")

    def leave_to_new_owners() -> None:
        with nft.Ruleset(nft_in.path) as ruleset:
            held = {e.key: e.data for e in ruleset.elements(nft.TABLE, HOSTPORTS) or []}
        mine[:] = [e for e in mine if held.get(e.key, e.data) == e.data]

    nft.commit(build, "remove the old pod's ports", attempts=4, on_conflict=leave_to_new_owners)
    assert built == [2, 1]
    with nft.Ruleset(nft_in.path) as ruleset:
        assert ruleset.elements(nft.TABLE, HOSTPORTS) == [taken]
        assert ruleset.chain(nft.TABLE, "hp_old") is None

    built.clear()
    always = [Element(4, "tcp", 443, data=Verdict.jump("hp_b"))]
    nft.run(Script(nft.TABLE).add_chain("hp_b"), "add")

    def build_always() -> Script:
        built.append(len(always))
        return Script(nft.TABLE).remove_elements(HOSTPORTS, always)

    with pytest.raises(CniError) as err:
        nft.commit(build_always, "take 443", attempts=3)
    assert len(built) == 3 and "File exists" in err.value.msg


# --- the start-up budget ------------------------------------------------------------------------

BUDGET_DRIVER = r"""
before = set(sys.modules)
from pycni.netlink import nftables as nft
imported = set(sys.modules) - before
nft.NFT_CANDIDATES = (sys.argv[1],)
nft.run(nft.Script(nft.TABLE).add_table().add_chain("c", comment="f00d"), "add")
ran = set(sys.modules) - before
with nft.Ruleset(sys.argv[2]) as ruleset:
    assert ruleset.chain(nft.TABLE, "c").comment == "f00d"
read = set(sys.modules) - before
for name, modules in (("imported", imported), ("ran", ran), ("read", read)):
    print(name, *sorted(modules))
"""
CALL_PATH_FORBIDDEN = {"subprocess", "re", "enum", "typing", "json", "socket", "dataclasses"}


@pytest.mark.netns
def test_importing_running_and_reading_load_only_what_they_need(
    nft_in: netns_mod.Netns,
) -> None:
    """In a fresh interpreter as a frozen plugin starts (-I -S): importing the module loads no
    exchange and no codec; running nft loads pycni.cni.spawn and no `subprocess`; reading
    loads the netlink exchange. Nothing forbidden on the call path is ever loaded."""
    output = python_output(BUDGET_DRIVER, nft.NFT_CANDIDATES[0], nft_in.path, isolated=True)
    loaded = {line.split()[0]: set(line.split()[1:]) for line in output.splitlines()}
    assert "pycni.netlink.nftables" in loaded["imported"]
    assert not {"pycni.netlink.wire", "pycni.cni.spawn", "struct"} & (
        loaded["imported"] - _package_modules()
    )
    assert "pycni.cni.spawn" in loaded["ran"]
    everything = loaded["read"]
    assert not {m.split(".")[0] for m in everything} & CALL_PATH_FORBIDDEN, sorted(everything)


def _package_modules() -> set[str]:
    """What `import pycni.netlink` loads by itself (the package's own __init__)."""
    program = "b = set(sys.modules); import pycni.netlink; print(*(set(sys.modules) - b))"
    return set(python_output(program, isolated=True).split())


LAZY_DRIVER = r"""
import pycni.netlink.nftables
print(*sorted(m for m in sys.modules if m.startswith("pycni.netlink")))
import pycni.netlink as package
for name in package.__all__:
    value = getattr(package, name)
    home = getattr(value, "__module__", None)
    assert home is None or home.startswith("pycni.netlink."), (name, home)
print(*sorted(m for m in sys.modules if m.startswith("pycni.netlink")))
"""


def test_the_netlink_package_loads_a_name_when_it_is_first_used() -> None:
    """So that nftables' callers (portmap's DEL and STATUS) do not pay for rtnetlink."""
    output = python_output(LAZY_DRIVER, isolated=True)
    first, then = (set(line.split()) for line in output.splitlines())
    assert first == {"pycni.netlink", "pycni.netlink.nftables"}
    assert {"pycni.netlink.rtnl", "pycni.netlink.errors", "pycni.netlink.records"} <= then
