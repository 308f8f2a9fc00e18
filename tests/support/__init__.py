"""What the tests share: paths, fixtures and helpers, each written once.

Test modules import from here and never from one another; tests/conftest.py registers the
fixtures (`pytest_plugins`). One module per concern:

    paths         the checkout's paths (REPO, BUNDLE, KIND, ...) and modules loaded by path
    ci            IN_CI and unavailable(): a test that cannot run skips loudly, or fails in CI
    fixtures      bundle, reference, netns/pod_ns (the one namespace system), node,
                  cluster_factory, fake_plugins
    fake_plugins  the fake CNI plugin (one script, many names) for pycni.lab.runtime's tests
    conflists     the kubenet-shaped network most plugin tests run (pycni-bridge first)
    calls         a plugin's config as a runtime sends it, DEL repeated, a call refused
    kill          plugin calls started as a runtime starts them and SIGKILLed mid-way
    storm         many pods churning on one node at once; FULL (PYCNI_STRESS=full) sizes
    leftovers     host-local's leases; what a node or a process leaves behind
    cluster       pods and probes across an emulated cluster's nodes
    flock         another process holding flock(2) on a file
    cnitool       the CNI project's reference client (libcni 1.1.2) run inside a node
    netlink       independent views of the kernel (ip -j, pyroute2) and a scripted netlink socket
    headers       the kernel's uapi headers' numbers, which pycni's netlink tables must match
    capture       packets captured on a link (tcpdump), for proofs of encapsulation; whether
                  the kernel makes IPIP devices at all (kernel_has_ipip)
    kube_replay   a stand-in Kubernetes API server for the node agent
    netpol        the NetworkPolicy lab: an emulated cluster, agents, pods that probe each other
    cri           containerd's CRI as the kubelet drives it: a containerd of the test's own in
                  a node namespace, a pause image built here, a small CRI client
    hostile       hostile stdin and CNI_* for any plugin, and the outcome the spec allows
    validators    the generated and the jsonschema validators held to the same verdict
    bandwidth     pycni-bandwidth's conflist and the kernel's tc state, as its tests read them
    wait          waiting, bounded, for a condition
    interpreter   a program in a fresh interpreter (as a frozen plugin starts, or as typed)
"""

from __future__ import annotations

# What the one-file support module offered before it became this package, for tests written
# against it: branches made before the restructure import these names from tests.support.
from tests.support.capture import kernel_has_ipip
from tests.support.flock import flock_held
from tests.support.leftovers import is_address
from tests.support.paths import REPO, plugin_table

__all__ = ["REPO", "flock_held", "is_address", "kernel_has_ipip", "plugin_table"]
