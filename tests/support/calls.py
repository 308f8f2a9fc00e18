"""Plugin calls a runtime makes, written out where a test makes them itself (outside
pycni.lab.runtime's bookkeeping): the config a runtime sends one plugin of a conflist, the DEL
a runtime repeats; a call refused with the error a user must see, and a pod namespace that
makes an ADD fail half-way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pycni.lab.netns import Netns
from pycni.lab.runtime import PluginError, invoke
from pycni.lab.testbed import Pod


def plugin_config(conflist: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """The config a runtime sends the conflist's plugin `index`: its entry with the list's
    cniVersion and name."""
    return {
        **conflist["plugins"][index],
        "cniVersion": conflist["cniVersion"],
        "name": conflist["name"],
    }


def assert_deleted_again(
    executable: Path, conflist: Mapping[str, Any], pod: Pod, *, in_netns: str, cni_path: Path
) -> None:
    """DEL of a pod that is gone already, as runtimes repeat it: with the pod's netns path, then
    with an empty one (containerd's second DEL once the sandbox is gone); both succeed and
    print nothing."""
    for netns in (pod.ns.path, ""):
        inv = invoke(
            str(executable),
            "DEL",
            container_id=pod.container_id,
            netns=netns,
            ifname="eth0",
            config=plugin_config(conflist),
            in_netns=in_netns,
            cni_path=str(cni_path),
        )
        assert (inv.exit_status, inv.stdout) == (0, b""), inv.stderr


def assert_refused(call: Callable[[], object], code: int, words: list[str]) -> PluginError:
    """`call` (an ADD through pycni.lab.runtime, say) fails with error `code`, and its message
    or details hold each of `words` (the field, the value, what to do)."""
    with pytest.raises(PluginError) as err:
        call()
    assert err.value.code == code, err.value
    for word in words:
        assert word in f"{err.value.msg} {err.value.details}", err.value
    return err.value


def taken_default_route(pod: Netns) -> None:
    """The pod namespace gets a link of its own ("other", 192.0.2.9/24) and a default route
    through it: an ADD fails half-way, at the pod's default route, after its veth and lease
    were made (so its rollback is what the test sees)."""
    pod.ip("link", "add", "other", "type", "veth", "peer", "name", "other1")
    pod.ip("addr", "add", "192.0.2.9/24", "dev", "other")
    pod.ip("link", "set", "other", "up")
    pod.ip("route", "add", "default", "via", "192.0.2.1")
