"""Hostile input: whatever arrives on stdin and in CNI_*, a plugin answers with success or the
spec's error JSON (a plausible code, a message, exit status 1), never a traceback on stdout,
never an internal error (code 100: a bug), never a hang, and writes only under its dataDir."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from pycni.cni import skel
from pycni.ipam.host_local import plugin as host_local
from pycni.lab.netns import Netns
from tests.support.hostile import (
    FROZEN_EXAMPLES,
    PEERS,
    aimed_at,
    as_json,
    check_outcome,
    configs,
    envs,
    give_uplink,
    invoke_hostile,
    text_env,
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(stdin=configs(), env=envs)
def test_host_local_answers_any_input_in_the_spec_form(
    tmp_path: Path, stdin: bytes, env: dict[str, str]
) -> None:
    data_root = tmp_path / "data"
    # every config's dataDir is pinned below tmp_path, so that "writes only under dataDir" can
    # be checked: nothing may appear in tmp_path outside data/
    doc = as_json(stdin)
    if isinstance(doc, dict) and isinstance(doc.get("ipam"), dict):
        doc["ipam"]["dataDir"] = str(data_root)
        stdin = json.dumps(doc).encode()
    out, err = io.BytesIO(), io.StringIO()
    status = skel.run(
        host_local, env=text_env(env), stdin=io.BytesIO(stdin), stdout=out, stderr=err
    )
    check_outcome(status, out.getvalue())
    assert {p.name for p in tmp_path.iterdir()} <= {"data"}


@pytest.mark.frozen
@pytest.mark.netns
@FROZEN_EXAMPLES
@given(stdin=configs(), env=envs)
def test_frozen_bridge_answers_any_input_in_the_spec_form(
    bundle: Path, netns: Netns, tmp_path: Path, stdin: bytes, env: dict[str, str]
) -> None:
    """The frozen bridge plugin inside a node namespace: hostile configs never leave a link."""
    stdin = aimed_at(stdin, "pycni-bridge", tmp_path / "data")
    before = set(netns.link_names())
    inv = invoke_hostile(bundle, "pycni-bridge", env, stdin, netns)
    check_outcome(inv.exit_status, inv.stdout)
    if inv.exit_status == 1:  # a refused call leaves nothing behind in the node
        assert set(netns.link_names()) - before <= {"cbr0", "pycni0"}, netns.link_names()
    assert not os.path.exists("/run/netns/pycni-none")


@pytest.mark.frozen
@pytest.mark.netns
@FROZEN_EXAMPLES
@given(stdin=configs(), env=envs)
def test_frozen_vxlan_answers_any_input_in_the_spec_form(
    bundle: Path, netns: Netns, tmp_path: Path, stdin: bytes, env: dict[str, str]
) -> None:
    """The frozen overlay plugin in a node namespace with an underlay link and a default
    route (so hostile configs get past underlay detection), peers inline."""
    give_uplink(netns)
    stdin = aimed_at(stdin, "pycni-vxlan", tmp_path / "data", peers=PEERS)
    inv = invoke_hostile(bundle, "pycni-vxlan", env, stdin, netns)
    check_outcome(inv.exit_status, inv.stdout)


@pytest.mark.frozen
@pytest.mark.netns
@FROZEN_EXAMPLES
@given(stdin=configs(), env=envs)
def test_frozen_ipip_answers_any_input_in_the_spec_form(
    bundle: Path, netns: Netns, tmp_path: Path, stdin: bytes, env: dict[str, str]
) -> None:
    """The frozen routed plugin in a node namespace with an underlay link and a default route,
    peers inline, encapsulation Never unless the input says otherwise (this kernel has no IPIP:
    Always is a plain 50); a refused call leaves no veth."""
    give_uplink(netns)
    stdin = aimed_at(stdin, "pycni-ipip", tmp_path / "data", encapsulation="Never", peers=PEERS)
    before = set(netns.link_names())
    inv = invoke_hostile(bundle, "pycni-ipip", env, stdin, netns)
    check_outcome(inv.exit_status, inv.stdout)
    if inv.exit_status == 1:  # a refused call leaves no link behind in the node
        assert set(netns.link_names()) <= before, netns.link_names()
