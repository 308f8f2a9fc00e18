"""pycni-bandwidth under what real nodes do to it: calls killed at random moments followed by
the runtime's DEL, hostile input, and its config validator held to its JSON schema."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycni.conformance import validate
from pycni.lab.netns import Netns
from pycni.lab.runtime import invoke
from pycni.lab.testbed import Node
from pycni.validators import bandwidth as bandwidth_validator
from tests.support.bandwidth import LIMITS, conflist, host_veth, ifbs, qdiscs
from tests.support.hostile import (
    FROZEN_EXAMPLES,
    as_json,
    check_outcome,
    configs,
    envs,
    invoke_hostile,
)
from tests.support.kill import kill_after, start_call
from tests.support.storm import FULL
from tests.support.validators import assert_same_verdict

KILLS = 100 if FULL else 15


@pytest.mark.frozen
@pytest.mark.netns
@pytest.mark.slow
def test_adds_killed_anywhere_leave_nothing_after_the_runtimes_del(
    node: Node, bundle: Path
) -> None:
    """SIGKILL pycni-bandwidth at a random moment of its ADD, KILLS times, then do what a
    runtime does: DEL (with the prevResult it has). No IFB, tbf or ingress qdisc is left on the
    pod's veth, and a new ADD then passes CHECK."""
    conf = node.conf(conflist())
    pod = node.add_pod("a", conf)  # shaped below by pycni-bandwidth alone
    veth = host_veth(pod)
    config = {"cniVersion": "1.1.0", "name": "kubenet", "type": "pycni-bandwidth", **LIMITS}
    config["prevResult"] = pod.result
    rng = random.Random(4321)

    def call(verb: str) -> Any:
        cid, where = pod.container_id, node.ns.path
        return invoke(str(bundle / "pycni-bandwidth"), verb, container_id=cid,
                      netns=pod.ns.path, ifname="eth0", config=config, in_netns=where)  # fmt: skip

    timed = [call("ADD").duration, call("DEL").duration]  # how long a whole ADD takes here
    interrupted = 0  # kills that left something for the DEL to remove
    for run in range(KILLS):
        process = start_call(bundle / "pycni-bandwidth", "ADD", config,
                             container_id=pod.container_id, netns=pod.ns.path,
                             in_netns=node.ns.path)  # fmt: skip
        kill_after(process, rng.uniform(0.3, 2.0) * timed[0])  # its kernel work comes last
        interrupted += bool(ifbs(node)) or qdiscs(node, veth)["root"]["kind"] == "tbf"
        done = call("DEL")
        assert done.ok, (run, done.error())
        assert ifbs(node) == {}, f"run {run}"
        assert set(qdiscs(node, veth)) == {"root"}, f"run {run}"
        assert qdiscs(node, veth)["root"]["kind"] == "noqueue", f"run {run}"
    for verb in ("ADD", "CHECK", "DEL"):
        done = call(verb)
        assert done.ok, (verb, done.error())
    print(f"{interrupted} of {KILLS} kills left shaping behind; DEL removed it each time")


@pytest.mark.frozen
@pytest.mark.netns
@FROZEN_EXAMPLES
@given(stdin=configs(), env=envs, limits=st.dictionaries(
    st.sampled_from(["ingressRate", "ingressBurst", "egressRate", "egressBurst"]),
    st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=5) | st.none(),
))  # fmt: skip
def test_frozen_bandwidth_answers_any_input_in_the_spec_form(
    bundle: Path, netns: Netns, stdin: bytes, env: dict[str, str], limits: dict[str, Any]
) -> None:
    """In a node namespace that holds no veth (nothing can be shaped by accident)."""
    doc = as_json(stdin)
    if isinstance(doc, dict):
        doc.setdefault("type", "pycni-bandwidth")
        target = doc if len(limits) % 2 else {"bandwidth": limits}
        if target is doc:
            doc.update(limits)
        else:
            doc["runtimeConfig"] = target
        stdin = json.dumps(doc).encode()
    inv = invoke_hostile(bundle, "pycni-bandwidth", env, stdin, netns)
    check_outcome(inv.exit_status, inv.stdout)


BANDWIDTH = (bandwidth_validator.validate, validate.validator("bandwidth"))
limit_values: st.SearchStrategy[Any] = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
limit_dicts = st.dictionaries(
    st.sampled_from(["ingressRate", "ingressBurst", "egressRate", "egressBurst", "other"]),
    limit_values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {"cniVersion": st.just("1.1.0"), "name": st.just("net"), "type": st.just("x")},
        optional={
            "ingressRate": limit_values,
            "egressBurst": limit_values,
            "runtimeConfig": st.fixed_dictionaries({}, optional={"bandwidth": limit_dicts})
            | limit_values,
            "capabilities": st.just({"bandwidth": True}) | limit_values,
        },
    )
)
def test_bandwidth_validators_agree_on_plausible_shapes(doc: dict[str, Any]) -> None:
    assert_same_verdict(BANDWIDTH, doc)
