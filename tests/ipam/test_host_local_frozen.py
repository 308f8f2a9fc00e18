"""The frozen pycni-host-local, driven exactly as a runtime drives it: a bare environment, the
CNI_* variables, the network config on stdin, a network namespace the test made."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import versions
from pycni.lab.netns import Netns
from pycni.lab.runtime import Invocation, invoke
from tests.support.flock import flock_held
from tests.support.leftovers import leases

pytestmark = [pytest.mark.frozen, pytest.mark.netns]

SUBNET4, SUBNET6 = "10.22.0.0/24", "fd22::/64"
NETWORK = "hl-test"


def netconf(version: str, data_dir: Path, **ipam: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "type": "pycni-host-local",
        "ranges": [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dataDir": str(data_dir),
    }
    section.update(ipam)
    return {"cniVersion": version, "name": NETWORK, "ipam": section}


def run(
    bundle: Path,
    command: str,
    config: dict[str, Any] | bytes,
    ns: Netns | str | None,
    cid: str | None = "c1",
    ifname: str | None = "eth0",
    **kw: Any,
) -> Invocation:
    netns_path = ns.path if isinstance(ns, Netns) else ns
    return invoke(
        str(bundle / "pycni-host-local"),
        command,
        container_id=cid,
        netns=netns_path,
        ifname=ifname,
        config=config,
        timeout=30,
        **kw,
    )


def ok(inv: Invocation) -> Invocation:
    assert inv.exit_status == 0, f"{inv.command} failed: {inv.stdout!r} {inv.stderr}"
    assert not inv.problems, inv.problems
    return inv


def error(inv: Invocation, code: int, *words: str) -> dict[str, Any]:
    assert inv.exit_status == 1, f"expected an error, got {inv.exit_status}: {inv.stdout!r}"
    out = inv.output
    assert isinstance(out, dict) and set(out) <= {"cniVersion", "code", "msg", "details"}, (
        inv.stdout
    )
    assert out["code"] == code, out
    for word in words:
        assert word in out["msg"] + " " + out.get("details", ""), out
    assert "Traceback" not in inv.stdout.decode()
    return out


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_every_verb_at_every_version(
    bundle: Path, netns: Netns, tmp_path: Path, version: str
) -> None:
    conf = netconf(version, tmp_path)
    result = ok(run(bundle, "ADD", conf, netns)).result()

    assert result["cniVersion"] == version
    assert "interfaces" not in result
    old = versions.parse(version) < (1, 0, 0)
    assert result["ips"] == [
        {**({"version": "4"} if old else {}), "address": "10.22.0.2/24", "gateway": "10.22.0.1"},
        {**({"version": "6"} if old else {}), "address": "fd22::2/64", "gateway": "fd22::1"},
    ]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert leases(tmp_path, NETWORK) == {"10.22.0.2": b"c1\r\neth0", "fd22::2": b"c1\r\neth0"}

    with_prev = {**conf, "prevResult": result}
    if versions.at_least(version, "0.4.0"):
        assert ok(run(bundle, "CHECK", with_prev, netns)).stdout == b""
    else:
        error(run(bundle, "CHECK", with_prev, netns), 1, "CHECK")
    if versions.at_least(version, "1.1.0"):
        assert ok(run(bundle, "STATUS", conf, None, cid=None, ifname=None)).stdout == b""
        gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
        assert ok(run(bundle, "GC", gc, None, cid=None, ifname=None)).stdout == b""
        assert len(leases(tmp_path, NETWORK)) == 2  # GC keeps what is listed
    else:
        error(run(bundle, "STATUS", conf, None, cid=None, ifname=None), 1, "STATUS")
        error(run(bundle, "GC", conf, None, cid=None, ifname=None), 1, "GC")

    delete = with_prev if versions.at_least(version, "0.4.0") else conf
    assert ok(run(bundle, "DEL", delete, netns)).stdout == b""
    assert leases(tmp_path, NETWORK) == {}
    assert ok(run(bundle, "DEL", delete, netns)).stdout == b""  # DEL again: still success
    assert ok(run(bundle, "DEL", conf, "")).stdout == b""  # containerd's second DEL, no netns


def test_del_with_the_namespace_gone_releases_the_lease(bundle: Path, tmp_path: Path) -> None:
    from pycni.lab import netns as netns_mod

    ns = netns_mod.create("pyt")
    try:
        ok(run(bundle, "ADD", netconf("1.0.0", tmp_path), ns))
    finally:
        ns.delete()
    ok(run(bundle, "DEL", netconf("1.0.0", tmp_path), ns.path))
    assert leases(tmp_path, NETWORK) == {}


def test_round_robin_across_calls(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = netconf("1.0.0", tmp_path, ranges=[[{"subnet": SUBNET4}]])
    first = ok(run(bundle, "ADD", conf, netns, cid="a")).result()["ips"][0]["address"]
    ok(run(bundle, "DEL", conf, netns, cid="a"))
    second = ok(run(bundle, "ADD", conf, netns, cid="b")).result()["ips"][0]["address"]
    assert (first, second) == ("10.22.0.2/24", "10.22.0.3/24")


def test_requested_ips_from_capability_args_and_cni_args(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    conf = netconf("1.0.0", tmp_path)
    a = ok(
        run(
            bundle,
            "ADD",
            {**conf, "runtimeConfig": {"ips": ["10.22.0.50/24", "fd22::50/64"]}},
            netns,
            cid="a",
        )
    ).result()
    assert [ip["address"] for ip in a["ips"]] == ["10.22.0.50/24", "fd22::50/64"]
    b = ok(
        run(bundle, "ADD", {**conf, "args": {"cni": {"ips": ["10.22.0.51"]}}}, netns, cid="b")
    ).result()
    assert b["ips"][0]["address"] == "10.22.0.51/24"
    c = ok(
        run(
            bundle,
            "ADD",
            conf,
            netns,
            cid="c",
            cni_args="IgnoreUnknown=1;IP=10.22.0.52;K8S_POD_NAME=x",
        )
    ).result()
    assert c["ips"][0]["address"] == "10.22.0.52/24"


def test_ip_ranges_capability_replaces_ranges(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = {
        **netconf("1.0.0", tmp_path),
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.99.0.0/24"}]]},
    }
    assert ok(run(bundle, "ADD", conf, netns)).result()["ips"][0]["address"] == "10.99.0.2/24"


def test_resolv_conf_becomes_dns(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# comment\nnameserver 10.96.0.10\nsearch default.svc cluster.local\noptions ndots:5\n"
    )
    conf = netconf("1.0.0", tmp_path, resolvConf=str(resolv))
    assert ok(run(bundle, "ADD", conf, netns)).result()["dns"] == {
        "nameservers": ["10.96.0.10"],
        "search": ["default.svc", "cluster.local"],
        "options": ["ndots:5"],
    }


def test_legacy_single_range_form(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = netconf("0.3.1", tmp_path)
    del conf["ipam"]["ranges"]
    conf["ipam"].update(
        subnet="10.23.0.0/16", rangeStart="10.23.5.0", rangeEnd="10.23.5.9", gateway="10.23.0.1"
    )
    result = ok(run(bundle, "ADD", conf, netns)).result()
    assert result["ips"] == [{"version": "4", "address": "10.23.5.0/16", "gateway": "10.23.0.1"}]


# --- every error code, each fed the input that earns it --------------------------------------


def _mutate(conf: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    conf = copy.deepcopy(conf)
    *parents, last = path.split(".")
    target: Any = conf
    for key in parents:
        target = target[key] if not key.isdigit() else target[int(key)]
    target[int(last) if last.isdigit() else last] = value
    return conf


ERROR_CASES = [
    # id, command, config change (path, value), env change, expected code, words in msg/details
    ("version-too-old", "ADD", ("cniVersion", "0.2.0"), {}, 1, ["0.2.0", "1.1.0"]),
    ("version-unknown", "ADD", ("cniVersion", "9.9.9"), {}, 1, ["9.9.9"]),
    ("check-before-0.4.0", "CHECK", ("cniVersion", "0.3.1"), {}, 1, ["CHECK"]),
    (
        "unsupported-ipam-key",
        "ADD",
        ("ipam.rangeStat", "10.22.0.9"),
        {},
        2,
        ["rangeStat", "10.22.0.9"],
    ),
    (
        "netns-gone",
        "ADD",
        None,
        {"netns": "/run/netns/pycni-no-such-ns"},
        3,
        ["/run/netns/pycni-no-such-ns"],
    ),
    ("no-container-id", "ADD", None, {"cid": None}, 4, ["CNI_CONTAINERID"]),
    ("bad-container-id", "ADD", None, {"cid": "../../etc"}, 4, ["CNI_CONTAINERID"]),
    ("ifname-too-long", "ADD", None, {"ifname": "a" * 16}, 4, ["CNI_IFNAME"]),
    ("ifname-slash", "DEL", None, {"ifname": "a/b"}, 4, ["CNI_IFNAME"]),
    ("no-netns-for-add", "ADD", None, {"netns": ""}, 4, ["CNI_NETNS"]),
    ("unknown-cni-arg", "ADD", None, {"cni_args": "FOO=1"}, 4, ["CNI_ARGS", "FOO"]),
    ("no-ifname", "CHECK", None, {"ifname": None}, 4, ["CNI_IFNAME"]),
    (
        "subnet-prefix-too-long",
        "ADD",
        ("ipam.ranges.0.0.subnet", "10.22.0.0/33"),
        {},
        7,
        ["$.ipam.ranges[0][0].subnet"],
    ),
    (
        "subnet-host-bits",
        "ADD",
        ("ipam.ranges.0.0.subnet", "10.22.0.7/24"),
        {},
        7,
        ["10.22.0.0", "$.ipam.ranges[0][0].subnet"],
    ),
    (
        "gateway-outside-subnet",
        "ADD",
        ("ipam.ranges.0.0.gateway", "10.23.0.1"),
        {},
        7,
        ["$.ipam.ranges[0][0].gateway"],
    ),
    (
        "v6-in-v4-range",
        "ADD",
        ("ipam.ranges.0.0.rangeStart", "fd22::5"),
        {},
        7,
        ["$.ipam.ranges[0][0].rangeStart"],
    ),
    (
        "subnet-wrong-type",
        "ADD",
        ("ipam.ranges.0.0.subnet", 10),
        {},
        7,
        ["$.ipam.ranges[0][0].subnet"],
    ),
    ("relative-datadir", "ADD", ("ipam.dataDir", "var/lib/cni"), {}, 7, ["$.ipam.dataDir"]),
    ("datadir-escape", "ADD", ("ipam.dataDir", "/tmp/../etc"), {}, 7, ["$.ipam.dataDir"]),
    ("name-escape", "ADD", ("name", "../../etc"), {}, 7, ["$.name"]),
    ("no-ipam", "ADD", ("ipam", None), {}, 7, ["$.ipam"]),
]


@pytest.mark.parametrize(
    ("case", "command", "change", "env", "code", "words"),
    ERROR_CASES,
    ids=[c[0] for c in ERROR_CASES],
)
def test_error_codes(
    bundle: Path,
    netns: Netns,
    tmp_path: Path,
    case: str,
    command: str,
    change: tuple[str, Any] | None,
    env: dict[str, Any],
    code: int,
    words: list[str],
) -> None:
    conf = netconf("1.1.0", tmp_path)
    if change is not None:
        conf = _mutate(conf, *change)
        if change[1] is None:
            del conf[change[0]]
    if command == "CHECK":
        conf["prevResult"] = {
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.22.0.2/24"}],
        }
    kwargs: dict[str, Any] = {"cid": env.get("cid", "c1"), "ifname": env.get("ifname", "eth0")}
    if "cni_args" in env:
        kwargs["cni_args"] = env["cni_args"]
    out = error(run(bundle, command, conf, env.get("netns", netns), **kwargs), code, *words)
    assert out["cniVersion"] in versions.SUPPORTED
    assert leases(tmp_path, NETWORK) == {}  # a refused call leases nothing


def test_undecodable_stdin_is_code_6(bundle: Path, netns: Netns) -> None:
    error(run(bundle, "ADD", b'{"cniVersion": "1.0.0", "name": ', netns), 6, "decode")
    error(run(bundle, "ADD", b"\xff\xfe", netns), 6)


def test_io_failure_is_code_5_naming_the_directory(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    error(run(bundle, "ADD", netconf("1.0.0", blocker / "data"), netns), 5, str(blocker))


def test_lock_held_too_long_is_code_11_naming_the_holder(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    net = tmp_path / NETWORK
    net.mkdir()
    with flock_held(net / "lock") as holder:
        inv = run(bundle, "ADD", netconf("1.0.0", tmp_path), netns)
        error(inv, 11, str(holder), "lock")
        assert 9 < inv.duration < 20  # waited its bounded 10 s, no longer
    ok(run(bundle, "ADD", netconf("1.0.0", tmp_path), netns))


def test_exhaustion_add_101_and_status_50(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = netconf("1.1.0", tmp_path, ranges=[[{"subnet": "10.22.0.0/30"}]])  # one address: .2
    ok(run(bundle, "STATUS", conf, None, cid=None, ifname=None))
    ok(run(bundle, "ADD", conf, netns, cid="a"))
    error(run(bundle, "STATUS", conf, None, cid=None, ifname=None), 50, "10.22.0.0/30")
    error(run(bundle, "ADD", conf, netns, cid="b"), 101, "10.22.0.0/30")
    ok(run(bundle, "DEL", conf, netns, cid="a"))
    ok(run(bundle, "STATUS", conf, None, cid=None, ifname=None))


def test_requested_ip_in_use_is_102_naming_the_holder(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    conf = {**netconf("1.0.0", tmp_path), "runtimeConfig": {"ips": ["10.22.0.9"]}}
    ok(run(bundle, "ADD", conf, netns, cid="holder"))
    error(run(bundle, "ADD", conf, netns, cid="other"), 102, "10.22.0.9", "holder")
    assert set(leases(tmp_path, NETWORK)) == {"10.22.0.9", "fd22::2"}  # the failed ADD left nothing


def test_duplicate_add_is_103_and_changes_nothing(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    conf = netconf("1.0.0", tmp_path)
    ok(run(bundle, "ADD", conf, netns))
    before = leases(tmp_path, NETWORK)
    error(run(bundle, "ADD", conf, netns), 103, "c1", "eth0")
    assert leases(tmp_path, NETWORK) == before


def test_check_detects_a_lost_lease_104(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = netconf("1.0.0", tmp_path)
    result = ok(run(bundle, "ADD", conf, netns)).result()
    (tmp_path / NETWORK / "fd22::2").unlink()
    error(run(bundle, "CHECK", {**conf, "prevResult": result}, netns), 104, "fd22::2")
    (tmp_path / NETWORK / "10.22.0.2").unlink()
    error(run(bundle, "CHECK", {**conf, "prevResult": result}, netns), 104, "holds no address")


def test_gc_releases_exactly_what_is_not_listed(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    conf = netconf("1.1.0", tmp_path, ranges=[[{"subnet": SUBNET4}]])
    for cid in ("a", "b", "c"):
        ok(run(bundle, "ADD", conf, netns, cid=cid))
    keep = [{"containerID": "b", "ifname": "eth0"}]
    ok(run(bundle, "GC", {**conf, "cni.dev/valid-attachments": keep}, None, cid=None, ifname=None))
    assert set(leases(tmp_path, NETWORK).values()) == {b"b\r\neth0"}
    ok(
        run(bundle, "GC", {**conf, "cni.dev/attachments": []}, None, cid=None, ifname=None)
    )  # legacy key, empty: all
    assert leases(tmp_path, NETWORK) == {}


def test_bare_environment_and_any_cwd(bundle: Path, netns: Netns, tmp_path: Path) -> None:
    """What a runtime's exec looks like: env -i plus CNI_*, cwd /, no PATH, no HOME."""
    env = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "bare",
        "CNI_NETNS": netns.path,
        "CNI_IFNAME": "eth0",
    }
    import json

    done = subprocess.run(
        [str(bundle / "pycni-host-local")],
        input=json.dumps(netconf("1.0.0", tmp_path)).encode(),
        env=env,
        cwd="/",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, (
        done.stdout + done.stderr.encode()
        if isinstance(done.stderr, str)
        else done.stdout + done.stderr
    )
    assert json.loads(done.stdout)["ips"][0]["address"] == "10.22.0.2/24"
    assert os.listdir(tmp_path / NETWORK)  # the lease landed in dataDir, nowhere else


def test_leases_leaked_by_a_reboot_do_not_exhaust_the_range(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    """The node reboots with pods that never got their DEL: the next ADDs still succeed,
    reclaiming those leases, without an operator and without a GC. (The reboot is staged by
    rewriting the boot_id pycni recorded, which is what it compares with the kernel's.)"""
    conf = netconf("1.1.0", tmp_path, ranges=[[{"subnet": "10.22.0.0/29"}]])  # 5 addresses
    for n in range(5):
        ok(run(bundle, "ADD", conf, netns, cid=f"before{n}"))
    error(run(bundle, "ADD", conf, netns, cid="full"), 101)
    (tmp_path / NETWORK / ".pycni" / "boot").write_text("an-earlier-boot")
    ok(run(bundle, "STATUS", conf, None, cid=None, ifname=None))  # not exhausted any more
    for n in range(5):
        ok(run(bundle, "ADD", conf, netns, cid=f"after{n}"))
    error(run(bundle, "ADD", conf, netns, cid="after5"), 101)  # now it is full of live pods
    assert sorted(v.split(b"\r\n")[0] for v in leases(tmp_path, NETWORK).values()) == [
        f"after{n}".encode() for n in range(5)
    ]
    for n in range(5):  # the dead pods' DELs, late: they release nothing of the new pods
        ok(run(bundle, "DEL", conf, netns, cid=f"before{n}"))
    assert len(leases(tmp_path, NETWORK)) == 5


def test_gc_after_a_reboot_keeps_what_the_runtime_reports_live(
    bundle: Path, netns: Netns, tmp_path: Path
) -> None:
    conf = netconf("1.1.0", tmp_path, ranges=[[{"subnet": "10.22.0.0/29"}]])
    for n in range(5):
        ok(run(bundle, "ADD", conf, netns, cid=f"before{n}"))
    (tmp_path / NETWORK / ".pycni" / "boot").write_text("an-earlier-boot")
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "before0", "ifname": "eth0"}]}
    ok(run(bundle, "GC", gc, None, cid=None, ifname=None))
    assert leases(tmp_path, NETWORK) == {"10.22.0.2": b"before0\r\neth0"}
    for n in range(4):
        ok(run(bundle, "ADD", conf, netns, cid=f"after{n}"))
    error(run(bundle, "ADD", conf, netns, cid="after4"), 101)  # before0 was not reclaimed
    assert leases(tmp_path, NETWORK)["10.22.0.2"] == b"before0\r\neth0"


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of the test's own, mounted under its tmp dir and unmounted after."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=64", "pycni-test", str(mount)],
        check=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_data_dir_is_an_io_error_and_leaves_nothing(
    bundle: Path, netns: Netns, small_tmpfs: Path
) -> None:
    conf = netconf("1.1.0", small_tmpfs)
    ok(run(bundle, "ADD", conf, netns, cid="before"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    error(run(bundle, "ADD", conf, netns, cid="during"), 5, str(small_tmpfs))
    error(run(bundle, "STATUS", conf, None, cid=None, ifname=None), 50, str(small_tmpfs))
    subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert set(leases(small_tmpfs, NETWORK).values()) == {b"before\r\neth0"}
    ok(run(bundle, "ADD", conf, netns, cid="after"))


def test_full_data_dir_is_an_io_error_and_leaves_no_empty_lease(
    bundle: Path, netns: Netns, small_tmpfs: Path
) -> None:
    conf = netconf("1.1.0", small_tmpfs, ranges=[[{"subnet": "10.22.0.0/24"}]])
    ok(run(bundle, "ADD", conf, netns, cid="first"))
    n = 0
    while True:  # bounded by the 64-inode tmpfs
        try:
            (small_tmpfs / f"filler{n}").write_bytes(b"x" * 4096)
        except OSError:
            break
        n += 1
        assert n < 200
    error(run(bundle, "ADD", conf, netns, cid="second"), 5)
    assert all(v for v in leases(small_tmpfs, NETWORK).values())  # no empty, ownerless lease file
    assert set(leases(small_tmpfs, NETWORK).values()) == {b"first\r\neth0"}
    for path in small_tmpfs.glob("filler*"):
        path.unlink()
    ok(run(bundle, "ADD", conf, netns, cid="second"))
