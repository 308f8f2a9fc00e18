"""NetworkPolicy names that the node agent and the pycni-netpol plugin must agree on (per-call:
standard library only, nothing heavy).

- The table `inet pycni-policy` (pycni's own; `inet pycni` holds NAT and is never touched by
  policy transactions), its verdict maps `ingress4`/`ingress6`/`egress4`/`egress6` (a local
  pod's address -> jump to its chain) and its sets `pending4`/`pending6` (addresses whose pod
  the agent has not programmed yet: everything but established traffic is dropped).
- A pod's chains `pod_<h>_in` / `pod_<h>_eg`, where <h> is a hash of "namespace/name": the agent
  creates them as soon as it sees the pod scheduled to its node (before the pod has an
  address), so the plugin can point the pod's addresses at them in the pod's ADD.
- The state directory (default /run/pycni/netpol): `namespaces/<name>` exists while the
  namespace has at least one NetworkPolicy (its pods are gated at ADD); `pods/<containerID>`
  is the plugin's record of an ADD (namespace, name, uid, addresses), which the local agent
  reads at once instead of waiting for the kubelet to report the pod's IP.
"""

from __future__ import annotations

TABLE_FAMILY = "inet"
TABLE_NAME = "pycni-policy"
STATE_DIR = "/run/pycni/netpol"
NAMESPACES = "namespaces"
PODS = "pods"
MAPS = {("in", 4): "ingress4", ("in", 6): "ingress6", ("eg", 4): "egress4", ("eg", 6): "egress6"}
PENDING = {4: "pending4", 6: "pending6"}
DIRECTIONS = ("in", "eg")


def digest(text: str, length: int = 12) -> str:
    """`length` hex digits of SHA-256 (the C module: hashlib would load OpenSSL)."""
    import _sha256

    value: str = _sha256.sha256(text.encode()).hexdigest()
    return value[:length]


def pod_chain(namespace: str, name: str, direction: str) -> str:
    """The chain of a pod's ingress ("in") or egress ("eg") policies."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected 'in' or 'eg'")
    return f"pod_{digest(f'{namespace}/{name}')}_{direction}"
