"""Bring this node's multi-node datapath to exactly its peer set, without a pod ADD.

    pycni reconcile --conf /etc/cni/net.d/10-overlay.conflist

Run it on the node (in the node's network namespace: `ip netns exec NODE pycni reconcile ...`
for an emulated one) whenever the peer set changes — a node joined or left, the peers file was
rewritten — or to repair drift. FILE is a conflist (its pycni-vxlan or pycni-ipip plugin is used,
the first of them) or a single plugin config of either. pycni-vxlan: the VXLAN device, routes,
neighbours and FDB entries; pycni-ipip: the `pycni.ipip` tunnel (made or removed as the peers
need it) and the peer routes (protocol 112). Prints each change made ("add route 10.244.3.0/24
via 10.244.3.0", ...), or nothing when the node already matches. Exit status 0 on success, 1
on failure (the error in the plugin's words, with its CNI code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pycni.cni import registry

COMMAND = "reconcile"
HELP = "bring this node's VXLAN overlay or IPIP routes to exactly its peer set"
# The plugins with a node reconciler (pycni.cni.registry), in the registry's order.
PLUGIN_TYPES = tuple(entry.executable for entry in registry.PLUGINS if entry.reconciler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conf",
        type=Path,
        required=True,
        help="a conflist, or a pycni-vxlan or pycni-ipip plugin config",
    )


def run(args: argparse.Namespace) -> int:
    from pycni.cni.errors import CniError

    try:
        plugin = network_config(json.loads(args.conf.read_text()))
        changes = reconcile_plugin(plugin)
    except (OSError, ValueError) as err:
        print(f"pycni reconcile: failed to read '{args.conf}': {err}", file=sys.stderr)
        return 1
    except CniError as err:
        details = f" ({err.details})" if err.details else ""
        print(f"pycni reconcile: error {err.code}: {err.msg}{details}", file=sys.stderr)
        return 1
    for change in changes:
        print(change)
    return 0


def reconcile_plugin(plugin: dict[str, Any]) -> list[str]:
    """Reconcile with one plugin config (a `reconciler` row of the registry: its module parses
    the config, `reconcile` there brings the node's datapath to it); the changes made."""
    import importlib

    from pycni.cni import registry

    entry = registry.BY_EXECUTABLE[str(plugin.get("type"))]
    module = importlib.import_module(entry.module)
    changes: list[str] = module.reconcile(plugin)
    return changes


def network_config(document: Any) -> dict[str, Any]:
    """The pycni-vxlan or pycni-ipip plugin object of a conflist, with cniVersion and name
    inserted as a runtime inserts them; or the document itself if it is a single plugin
    config."""
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    if "plugins" not in document:
        return document
    for plugin in document["plugins"]:
        if isinstance(plugin, dict) and plugin.get("type") in PLUGIN_TYPES:
            return {
                **plugin,
                "cniVersion": document.get("cniVersion"),
                "name": document.get("name"),
            }
    raise ValueError(f"the conflist has no {' or '.join(PLUGIN_TYPES)} plugin")
