"""Bring this node's VXLAN overlay to exactly its peer set, without a pod ADD.

    pycni reconcile --conf /etc/cni/net.d/10-overlay.conflist

Run it on the node (in the node's network namespace: `ip netns exec NODE pycni reconcile ...`
for an emulated one) whenever the peer set changes — a node joined or left, the peers file was
rewritten — or to repair drift. FILE is a conflist (its pycni-vxlan plugin is used) or a single
plugin config. Prints each change made ("add route 10.244.3.0/24 via 10.244.3.0", ...), or
nothing when the overlay already matches. Exit status 0 on success, 1 on failure (the error
in the plugin's words, with its CNI code).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COMMAND = "reconcile"
HELP = "bring this node's VXLAN overlay (routes, neighbours, FDB) to exactly its peer set"
PLUGIN_TYPE = "pycni-vxlan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conf", type=Path, required=True, help="a conflist, or a pycni-vxlan plugin config"
    )


def run(args: argparse.Namespace) -> int:
    from pycni.errors import CniError
    from pycni.plugins import vxlan

    try:
        plugin = network_config(json.loads(args.conf.read_text()))
        changes = vxlan.reconcile(vxlan.parse_conf(plugin))
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


def network_config(document: Any) -> dict[str, Any]:
    """The pycni-vxlan plugin object of a conflist, with cniVersion and name inserted as a
    runtime inserts them; or the document itself if it is a single plugin config."""
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    if "plugins" not in document:
        return document
    for plugin in document["plugins"]:
        if isinstance(plugin, dict) and plugin.get("type") == PLUGIN_TYPE:
            return {
                **plugin,
                "cniVersion": document.get("cniVersion"),
                "name": document.get("name"),
            }
    raise ValueError(f"the conflist has no {PLUGIN_TYPE} plugin")
