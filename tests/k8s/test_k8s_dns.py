"""The lane's cluster DNS: lookups as the Kubernetes DNS specification has them, the wire format,
and real resolvers (dig, nslookup) against the server inside a network namespace of the test's
own (UDP, and TCP after a truncated UDP answer)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pycni.lab.k8s import dns


def service(namespace: str, name: str, cluster_ip: str = "", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"clusterIP": cluster_ip, **spec},
    }


def endpoints(namespace: str, name: str, *addresses: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "subsets": [
            {
                "addresses": [
                    {"ip": ip, **({"hostname": host} if host else {})} for ip, host in addresses
                ],
                "notReadyAddresses": [{"ip": "10.244.9.9"}],
            }
        ],
    }


SERVICES = [
    service("default", "kubernetes", "10.96.0.1"),
    service(
        "e2e",
        "nodeport-test",
        "10.96.12.34",
        type="NodePort",
        ports=[{"name": "http", "port": 80, "protocol": "TCP"}],
    ),
    service("e2e", "headless", "None"),
    service(
        "e2e",
        "external",
        type="ExternalName",
        externalName="kubernetes.default.svc.cluster.local",
    ),
    service("e2e", "outside", type="ExternalName", externalName="example.org"),
]
ENDPOINTS = [
    endpoints("e2e", "headless", ("10.244.1.5", "web-0"), ("10.244.2.7", "")),
]


@pytest.fixture
def records() -> dns.Records:
    table = dns.Records()
    table.replace_services(SERVICES)
    table.replace_endpoints(ENDPOINTS)
    return table


def addresses(answers: list[dns.Record]) -> list[str]:
    return [str(record.data) for record in answers if record.rtype == dns.A]


def test_a_service_name_resolves_to_its_cluster_ip(records: dns.Records) -> None:
    rcode, answers = records.lookup("nodeport-test.e2e.svc.cluster.local", dns.A)
    assert (rcode, addresses(answers)) == (dns.NOERROR, ["10.96.12.34"])
    assert records.lookup("NodePort-Test.E2E.svc.cluster.local.", dns.A)[1] == answers


def test_headless_service_answers_its_ready_endpoints(records: dns.Records) -> None:
    rcode, answers = records.lookup("headless.e2e.svc.cluster.local", dns.A)
    assert rcode == dns.NOERROR
    assert addresses(answers) == ["10.244.1.5", "10.244.2.7"]  # not the unready 10.244.9.9
    _, answers = records.lookup("web-0.headless.e2e.svc.cluster.local", dns.A)
    assert addresses(answers) == ["10.244.1.5"]


def test_external_name_is_a_cname_followed_inside_the_cluster(records: dns.Records) -> None:
    rcode, answers = records.lookup("external.e2e.svc.cluster.local", dns.A)
    assert rcode == dns.NOERROR
    assert [(record.rtype, record.data) for record in answers] == [
        (dns.CNAME, "kubernetes.default.svc.cluster.local"),
        (dns.A, "10.96.0.1"),
    ]
    _, answers = records.lookup("outside.e2e.svc.cluster.local", dns.A)
    assert [(record.rtype, record.data) for record in answers] == [(dns.CNAME, "example.org")]


def test_pods_srv_nodata_and_nxdomain(records: dns.Records) -> None:
    assert addresses(records.lookup("10-244-1-5.e2e.pod.cluster.local", dns.A)[1]) == ["10.244.1.5"]
    rcode, answers = records.lookup("_http._tcp.nodeport-test.e2e.svc.cluster.local", dns.SRV)
    assert rcode == dns.NOERROR
    assert [record.data for record in answers] == [
        (0, 100, 80, "nodeport-test.e2e.svc.cluster.local")
    ]
    assert records.lookup("nodeport-test.e2e.svc.cluster.local", dns.AAAA) == (dns.NOERROR, [])
    assert records.lookup("missing.e2e.svc.cluster.local", dns.A) == (dns.NXDOMAIN, [])
    assert records.lookup("nodeport-test.e2e.cluster.local", dns.A) == (dns.NXDOMAIN, [])
    assert records.lookup("example.org", dns.A) == (dns.NXDOMAIN, [])


def test_watch_events_change_the_answers(records: dns.Records) -> None:
    records.service_event("ADDED", service("e2e", "late", "10.96.0.77"))
    assert addresses(records.lookup("late.e2e.svc.cluster.local", dns.A)[1]) == ["10.96.0.77"]
    records.service_event("DELETED", service("e2e", "late", "10.96.0.77"))
    assert records.lookup("late.e2e.svc.cluster.local", dns.A)[0] == dns.NXDOMAIN


def query_packet(name: str, qtype: int, ident: int = 0x1234) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + dns.encode_name(name)
        + struct.pack("!HH", qtype, dns.IN)
    )


def test_wire_format_round_trip(records: dns.Records) -> None:
    response = dns.answer(
        records, query_packet("kubernetes.default.svc.cluster.local", dns.A), limit=512
    )
    assert response is not None
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", response[:12])
    assert (ident, qd, an, ns, ar) == (0x1234, 1, 1, 0, 0)
    assert flags & 0x8000 and flags & 0x0400 and flags & 0xF == dns.NOERROR
    name, offset = dns.read_name(response, 12)
    assert name == "kubernetes.default.svc.cluster.local"
    offset += 4
    owner, offset = dns.read_name(response, offset)
    rtype, _, ttl, length = struct.unpack("!HHIH", response[offset : offset + 10])
    assert (owner, rtype, ttl, length) == (name, dns.A, dns.TTL, 4)
    assert response[offset + 10 : offset + 14] == bytes([10, 96, 0, 1])


def test_malformed_and_truncated(records: dns.Records) -> None:
    assert dns.answer(records, b"\x00\x01", limit=512) is None
    bad = dns.answer(records, struct.pack("!HHHHHH", 7, 0x0100, 2, 0, 0, 0), limit=512)
    assert bad is not None and struct.unpack("!H", bad[2:4])[0] & 0xF == dns.FORMERR
    many = [service("big", "svc", "None")]
    table = dns.Records()
    table.replace_services(many)
    table.replace_endpoints(
        [endpoints("big", "svc", *[(f"10.244.{i // 250}.{i % 250 + 1}", "") for i in range(60)])]
    )
    response = dns.answer(table, query_packet("svc.big.svc.cluster.local", dns.A), limit=512)
    assert response is not None
    flags, _, answers = struct.unpack("!HHH", response[2:8])
    assert flags & 0x0200 and answers == 0  # TC: the resolver retries over TCP


def test_service_manifests_front_the_server_with_kube_dns() -> None:
    service_doc, endpoints_doc = dns.service_manifests("172.18.0.2")
    assert service_doc["spec"]["clusterIP"] == dns.CLUSTER_DNS_IP
    assert "selector" not in service_doc["spec"]
    assert endpoints_doc["subsets"][0]["addresses"] == [{"ip": "172.18.0.2"}]
    assert {port["protocol"] for port in endpoints_doc["subsets"][0]["ports"]} == {"UDP", "TCP"}


SERVE_AND_ASK = textwrap.dedent(
    """\
    import json, subprocess, sys
    from pycni.lab.k8s import dns
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    data = json.loads(sys.argv[1])
    records = dns.Records()
    records.replace_services(data["services"])
    records.replace_endpoints(data["endpoints"])
    server = dns.Server(records, "127.0.0.1", 0)
    server.start()
    port = str(server.port)
    out = {}
    for name, argv in data["asks"].items():
        argv = [arg.replace("PORT", port) for arg in argv]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out[name] = [run.returncode, run.stdout, run.stderr]
    server.stop()
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace (unshare --net)")
def test_dig_and_nslookup_resolve_through_the_server_in_a_namespace_of_our_own() -> None:
    missing = [tool for tool in ("dig", "nslookup", "unshare") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{missing} not installed (apt-get install bind9-dnsutils util-linux)")
    big = [f"10.244.{i // 250}.{i % 250 + 1}" for i in range(60)]
    data = {
        "services": [*SERVICES, service("big", "svc", "None")],
        "endpoints": [*ENDPOINTS, endpoints("big", "svc", *[(ip, "") for ip in big])],
        "asks": {
            "dig": [
                "dig",
                "@127.0.0.1",
                "-p",
                "PORT",
                "+short",
                "nodeport-test.e2e.svc.cluster.local",
            ],
            "cname": [
                "dig",
                "@127.0.0.1",
                "-p",
                "PORT",
                "+short",
                "external.e2e.svc.cluster.local",
            ],
            "big": ["dig", "@127.0.0.1", "-p", "PORT", "+short", "svc.big.svc.cluster.local"],
            "nx": ["dig", "@127.0.0.1", "-p", "PORT", "missing.e2e.svc.cluster.local"],
            "nslookup": ["nslookup", "-port=PORT", "headless.e2e.svc.cluster.local", "127.0.0.1"],
        },
    }
    run = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", SERVE_AND_ASK, json.dumps(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["dig"][1].split() == ["10.96.12.34"]
    assert out["cname"][1].split() == ["kubernetes.default.svc.cluster.local.", "10.96.0.1"]
    assert sorted(out["big"][1].split()) == sorted(big)  # TC over UDP, then TCP
    assert "status: NXDOMAIN" in out["nx"][1]
    assert out["nslookup"][0] == 0, out["nslookup"]
    assert "Address: 10.244.1.5" in out["nslookup"][1]
    assert "Address: 10.244.2.7" in out["nslookup"][1]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace (unshare --net)")
def test_start_returns_once_the_server_listens_and_sigterm_stops_it(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    log = tmp_path / "dns.log"
    process = dns.start(
        kubeconfig=kubeconfig, listen="127.0.0.1", log_path=log, prefix=["unshare", "--net"]
    )
    try:
        assert process.poll() is None
        assert dns.READY_LINE in log.read_text()
    finally:
        process.terminate()
        assert process.wait(20) == 0
