"""A node in a network namespace, with pods, driven exactly as containerd drives CNI.

The node is a namespace standing in for a kind node: the plugins run inside it (that is where
a runtime execs them), so the bridge, the host veths, sysctls and firewall rules all land
there and never on the host. Each pod is a namespace of its own; adding one runs `loopback`
first (when a loopback plugin is on the plugin path; otherwise `lo` is brought up directly),
then the network's plugins through pycni.lab.runtime (bare environment, the conflist from the
node's conf dir, chaining, the result cache), and removing it runs DEL the same way.
Everything the node holds — cache, state — lives in its own directory, as on a real machine.

Operator and test path. The multi-node emulated cluster builds on this.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.lab import netns as netns_mod
from pycni.lab.runtime import Runtime

REFERENCE_DIR = "/usr/lib/cni"


@dataclass
class Pod:
    name: str
    ns: netns_mod.Netns
    container_id: str
    result: dict[str, Any]
    # what ADD was given besides the conflist (capability_args, cni_args): a runtime keeps them
    # with the sandbox and passes them again on DEL, as containerd does for portMappings
    add_args: dict[str, Any] = field(default_factory=dict)

    def addresses(self, version: int | None = None) -> list[str]:
        """The pod's addresses from the ADD result (without prefix length)."""
        out = [str(ip["address"]).split("/")[0] for ip in self.result.get("ips", [])]
        return [a for a in out if version is None or (":" in a) == (version == 6)]


@dataclass
class Node:
    """A namespace standing in for a node, with its own state directory."""

    name: str
    ns: netns_mod.Netns
    bin_dirs: list[str]
    state_dir: Path
    pods: dict[str, Pod] = field(default_factory=dict)

    @classmethod
    def create(
        cls, name: str, bin_dir: str | Path, *, reference_dir: str | None = REFERENCE_DIR
    ) -> Node:
        ns = netns_mod.create(name.replace("-", "_"))
        try:
            ns.ip("link", "set", "lo", "up")
            state = Path(tempfile.mkdtemp(prefix=f"pycni-{name}-"))
        except BaseException:
            ns.delete()
            raise
        dirs = [str(bin_dir)] + (
            [reference_dir] if reference_dir and Path(reference_dir).is_dir() else []
        )
        return cls(name, ns, dirs, state)

    def runtime(self) -> Runtime:
        return Runtime(
            self.bin_dirs,
            str(self.state_dir / "cache"),
            in_netns=self.ns.path,
            loopback=True,
        )

    def conf(self, conflist: dict[str, Any]) -> dict[str, Any]:
        """Put the node's data dirs into a conflist's host-local sections (each node keeps
        its own leases, as separate machines do) and write it to the node's conf dir."""
        conflist = json.loads(json.dumps(conflist))
        for plugin in conflist.get("plugins", [conflist]):
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and "host-local" in str(ipam.get("type")):
                ipam.setdefault("dataDir", str(self.state_dir / "networks"))
        conf_dir = self.state_dir / "net.d"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / f"10-{conflist['name']}.conflist").write_text(json.dumps(conflist, indent=2))
        return conflist

    def add_pod(self, name: str, conflist: dict[str, Any], **kwargs: Any) -> Pod:
        ns = netns_mod.create("pod")
        container_id = f"{self.name}-{name}-{ns.name.rsplit('-', 1)[-1]}"
        runtime = self.runtime()
        try:
            if runtime.add_loopback(container_id, ns.path) is None:
                ns.ip("link", "set", "lo", "up")
            result = runtime.add(conflist, container_id, ns.path, "eth0", **kwargs)
        except BaseException:
            try:  # what a runtime does after a failed ADD; the ADD's error is the one to see
                self._delete(runtime, conflist, container_id, ns, **kwargs)
            except Exception:
                pass
            raise
        pod = Pod(name, ns, container_id, result, dict(kwargs))
        self.pods[name] = pod
        return pod

    def remove_pod(self, name: str, conflist: dict[str, Any]) -> None:
        pod = self.pods.pop(name)
        self._delete(self.runtime(), conflist, pod.container_id, pod.ns, **pod.add_args)

    def _delete(
        self,
        runtime: Runtime,
        conflist: dict[str, Any],
        cid: str,
        ns: netns_mod.Netns,
        **kwargs: Any,
    ) -> None:
        try:
            runtime.delete(conflist, cid, ns.path, "eth0", **kwargs)
            runtime.delete_loopback(cid, ns.path)
        finally:
            ns.delete()

    def destroy(self, conflist: dict[str, Any] | None = None) -> None:
        """Remove the pods (through DEL when a conflist is given), the node and its state."""
        try:
            for name in list(self.pods):
                if conflist is not None:
                    try:
                        self.remove_pod(name, conflist)
                        continue
                    except Exception:
                        pass
                self.pods.pop(name).ns.delete()
        finally:
            self.ns.delete()
            shutil.rmtree(self.state_dir, ignore_errors=True)
