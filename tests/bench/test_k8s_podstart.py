"""bench.k8s_podstart's parts that need no cluster: containerd's log read into sandbox times,
and the reference conflist it swaps in."""

# ruff: noqa: E501  (containerd log lines quoted verbatim)
from __future__ import annotations

import json

from bench import k8s_podstart

LOG = """\
time="2026-12-02T14:58:03.711671360Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:go-0-1,Uid:a7f9,Namespace:default,Attempt:0,}"
time="2026-12-02T14:58:03.800000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:other-1,Uid:b1,Namespace:default,Attempt:0,}"
time="2026-12-02T14:58:05.211671360Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:go-0-1,Uid:a7f9,Namespace:default,Attempt:0,} returns sandbox id \\"3d8b\\""
time="2026-12-02T14:59:59.900000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:go-0-2,Uid:c3,Namespace:default,Attempt:0,}"
time="2026-12-02T15:00:00.150000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:go-0-2,Uid:c3,Namespace:default,Attempt:0,} returns sandbox id \\"9a\\""
time="2026-12-02T15:00:01.000000000Z" level=info msg="RunPodSandbox for &PodSandboxMetadata{Name:go-0-3,Uid:d4,Namespace:default,Attempt:0,}"
"""


def test_sandbox_seconds_pairs_start_and_return_per_pod_of_the_round() -> None:
    took = k8s_podstart.sandbox_seconds(LOG, "go-0")
    # go-0-1: 1.5 s; go-0-2 across a minute boundary: 0.25 s; go-0-3 never returned; other-1
    # belongs to another round
    assert [round(t, 6) for t in took] == [0.25, 1.5]


def test_reference_conflist_mirrors_pycnis_bridge_options() -> None:
    conflist = json.loads(k8s_podstart._go_conflist("10.244.0.0/24"))
    bridge, portmap = conflist["plugins"]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"], bridge["hairpinMode"]) == (
        "bridge", "cbr0", True, True,
    )  # fmt: skip
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24"}]]
    assert portmap["type"] == "portmap"
    assert k8s_podstart.GO_CONFLIST < "/etc/cni/net.d/00-pycni-bridge.conflist"  # sorts first
