"""pycni.lab.runtime: a libcni in Python, checked against fake plugins and the Go reference plugins.

Fake plugins (tests/support/fake_plugins.py) pin down the runtime's own logic -- chain order,
prevResult, runtimeConfig, reverse DEL, the cache, GC, STATUS -- and what `invoke` records about
misbehaving plugins. The Go reference plugins (/usr/lib/cni) check that the runtime drives real
plugins the way libcni does: host-local alone touches no interface, so it carries most of those
tests; the bridge test runs the whole runtime inside a node namespace, never the host's.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pycni.lab import netns as netns_mod
from pycni.lab.runtime import (
    LEGACY_ATTACHMENTS_KEY,
    NO_CODE,
    VALID_ATTACHMENTS_KEY,
    NetconfError,
    PluginError,
    PluginNotFoundError,
    ProblemKind,
    ResultVersionError,
    Runtime,
    VerbNotSupportedError,
    invoke,
    load_network,
    plugin_request,
    select_version,
)
from tests.support.leftovers import leases

if TYPE_CHECKING:
    from tests.support.fake_plugins import FakePlugins

    FakeFactory = Callable[..., FakePlugins]

NETNS = "/run/netns/not-used-by-fakes"
CNI_VARIABLES = {
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def conflist(
    name: str, *plugins: dict[str, Any], version: str = "1.0.0", **top: Any
) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, **top, "plugins": list(plugins)}


def fake_runtime(fakes: FakePlugins, tmp_path: Path, **options: Any) -> Runtime:
    return Runtime([str(fakes.directory)], str(tmp_path / "cache"), **options)


# --- invoke: one exec, and what it records ------------------------------------------------


def test_invoke_passes_only_cni_variables_from_a_neutral_directory(
    fake_plugins: FakeFactory,
) -> None:
    fakes = fake_plugins("a")
    invocation = invoke(
        str(fakes.directory / "a"),
        "ADD",
        container_id="c1",
        netns=NETNS,
        ifname="eth0",
        cni_args={"IgnoreUnknown": "1", "K8S_POD_NAME": "web"},
        cni_path="/x:/y",
        config=fakes.conf("a", cniVersion="1.0.0", name="n"),
    )
    assert invocation.ok and not invocation.problems
    (call,) = fakes.calls()
    assert call["env"] == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web",
        "CNI_PATH": "/x:/y",
    }
    assert call["cwd"] == "/"
    assert invocation.output == {"cniVersion": "1.0.0", "interfaces": [], "ips": []}


def test_extra_env_is_the_only_way_to_add_variables(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path, extra_env={"PATH": "/usr/sbin:/usr/bin"})
    runtime.add(conflist("n", fakes.conf("a")), "c1", NETNS, "eth0")
    assert set(fakes.calls()[0]["env"]) == {*CNI_VARIABLES, "PATH"}


def test_invoke_leaves_out_variables_it_is_not_given(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    invoke(str(fakes.directory / "a"), "VERSION", config=fakes.conf("a", cniVersion="1.0.0"))
    assert fakes.calls()[0]["env"] == {"CNI_COMMAND": "VERSION"}


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
def test_invoke_records_output_on_a_verb_that_must_print_nothing(
    fake_plugins: FakeFactory, command: str
) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.1.0", name="n", behave={command: "chatty"})
    invocation = invoke(str(fakes.directory / "a"), command, config=config)
    assert invocation.ok  # libcni would call this a success...
    assert invocation.problem_kinds() == {ProblemKind.OUTPUT_ON_SILENT_VERB}  # ...we note it


def test_invoke_records_an_error_object_with_exit_status_0(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.0.0", name="n", behave={"DEL": "error-exit-0"})
    invocation = invoke(str(fakes.directory / "a"), "DEL", config=config)
    assert invocation.ok
    assert invocation.problem_kinds() == {ProblemKind.ERROR_WITH_EXIT_0}


def test_invoke_records_a_failure_without_an_error_object(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.0.0", name="n", behave={"ADD": "silent-failure"})
    invocation = invoke(str(fakes.directory / "a"), "ADD", config=config)
    assert invocation.exit_status == 2
    assert invocation.problem_kinds() == {ProblemKind.EXIT_NONZERO_WITHOUT_ERROR}
    with pytest.raises(PluginError) as caught:
        invocation.raise_for_error()
    assert caught.value.code == NO_CODE
    assert "something broke" in caught.value.msg  # stderr is the only clue: keep it


def test_invoke_records_stdout_that_is_not_json(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.0.0", name="n", behave={"ADD": "garbage"})
    invocation = invoke(str(fakes.directory / "a"), "ADD", config=config)
    assert invocation.output is None
    assert invocation.problem_kinds() == {ProblemKind.STDOUT_NOT_JSON, ProblemKind.NO_RESULT}
    with pytest.raises(PluginError, match="no JSON object"):
        invocation.result()


def test_invoke_turns_an_error_object_into_a_typed_plugin_error(
    fake_plugins: FakeFactory,
) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.0.0", name="n", behave={"ADD": "error"}, errorCode=11)
    invocation = invoke(str(fakes.directory / "a"), "ADD", config=config)
    assert not invocation.problems  # a proper failure is not a protocol problem
    error = invocation.error()
    assert error is not None
    assert (error.code, error.msg, error.details) == (11, "a refuses ADD", "as configured")
    assert (error.plugin, error.command) == ("a", "ADD")
    assert str(error) == 'plugin type="a" failed (add): a refuses ADD; as configured'


def test_invoke_kills_a_plugin_that_hangs(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    config = fakes.conf("a", cniVersion="1.0.0", name="n", behave={"ADD": "hang"})
    invocation = invoke(str(fakes.directory / "a"), "ADD", config=config, timeout=1)
    assert invocation.timed_out and not invocation.ok
    assert invocation.problem_kinds() == {ProblemKind.TIMED_OUT}
    assert not os.path.exists(f"/proc/{fakes.calls()[0]['pid']}")
    with pytest.raises(PluginError, match="timed out"):
        invocation.raise_for_error()


def test_invoke_sends_raw_bytes_unchanged(fake_plugins: FakeFactory) -> None:
    fakes = fake_plugins("a")
    invocation = invoke(str(fakes.directory / "a"), "DEL", config=b"{not json")
    assert invocation.stdin == b"{not json"


# --- configuration and version selection ----------------------------------------------------


@pytest.mark.parametrize(
    ("netconf", "ceiling", "expected"),
    [
        ({"cniVersion": "1.0.0"}, "1.1.0", "1.0.0"),
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0"]}, "1.1.0", "1.1.0"),
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0"]}, "1.0.0", "1.0.0"),
        ({"cniVersion": "1.1.0", "cniVersions": ["0.4.0"]}, "1.1.0", "1.1.0"),
        ({"cniVersion": "0.3.1", "cniVersions": ["2.0.0", "0.4.0"]}, "1.1.0", "0.4.0"),
        ({"cniVersion": "1.1.0", "cniVersions": ["0.3.1", "1.0.0"]}, "1.0.0", "1.0.0"),
        # nothing at or below the ceiling: cniVersion stands, the plugin will refuse it
        ({"cniVersion": "2.0.0"}, "1.1.0", "2.0.0"),
        ({"cniVersion": "2.0.0", "cniVersions": ["3.0.0"]}, "1.1.0", "2.0.0"),
        ({"cniVersions": ["0.4.0", "1.0.0"]}, "1.1.0", "1.0.0"),
    ],
)
def test_select_version_takes_the_highest_the_runtime_knows(
    netconf: dict[str, Any], ceiling: str, expected: str
) -> None:
    assert select_version(netconf, ceiling) == expected


@pytest.mark.parametrize(
    "netconf",
    [
        {"name": "n", "plugins": [{"type": "a"}]},  # no cniVersion
        {"name": "n", "cniVersion": "1.0", "plugins": [{"type": "a"}]},
        {"name": "n", "cniVersion": "1.0.0", "cniVersions": "1.1.0", "plugins": [{"type": "a"}]},
        {"cniVersion": "1.0.0", "plugins": [{"type": "a"}]},  # no name
        {"name": "n", "cniVersion": "1.0.0", "plugins": []},
        {"name": "n", "cniVersion": "1.0.0", "plugins": [{"ipam": {}}]},  # no type
        {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "a", "capabilities": []}]},
        {"name": "n", "cniVersion": "1.0.0"},  # neither a conflist nor a conf
        {"name": "n", "cniVersion": "1.0.0", "disableCheck": "yes", "plugins": [{"type": "a"}]},
    ],
)
def test_load_network_refuses_invalid_configs(netconf: dict[str, Any]) -> None:
    with pytest.raises(NetconfError):
        load_network(netconf)


def test_a_single_config_is_a_one_plugin_list() -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "a", "mtu": 1400}
    network = load_network(conf)
    assert network.plugins == (conf,)
    assert plugin_request(network, network.plugins[0]) == conf


def test_disable_flags_accept_strings_as_libcni_does() -> None:
    netconf = conflist("n", {"type": "a"}, disableCheck="True", disableGC=False)
    network = load_network(netconf)
    assert (network.disable_check, network.disable_gc) == (True, False)


def test_request_config_has_runtime_config_from_declared_capabilities_only() -> None:
    network = load_network(conflist("n", {"type": "a"}))
    plugin = {"type": "a", "capabilities": {"portMappings": True, "bandwidth": False, "mac": True}}
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    request = plugin_request(
        network,
        plugin,
        capability_args={"portMappings": ports, "bandwidth": {"ingressRate": 1}, "ips": ["x"]},
    )
    assert request == {
        "type": "a",
        "name": "n",
        "cniVersion": "1.0.0",
        "runtimeConfig": {"portMappings": ports},
    }


# --- Runtime with fake plugins --------------------------------------------------------------


def test_add_runs_the_chain_in_order_passing_each_result_on(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b", "c")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist(
        "chain",
        fakes.conf("a", address="10.0.0.2/24"),
        fakes.conf("b", address="10.0.1.2/24", capabilities={"portMappings": True}),
        fakes.conf("c"),
    )
    result = runtime.add(netconf, "c1", NETNS, "eth0", capability_args={"portMappings": []})
    assert fakes.sequence() == [("a", "ADD"), ("b", "ADD"), ("c", "ADD")]
    first, second, third = (call["config"] for call in fakes.calls())
    assert "prevResult" not in first
    assert second["prevResult"] == {
        "cniVersion": "1.0.0",
        "interfaces": [],
        "ips": [{"address": "10.0.0.2/24"}],
    }
    assert third["prevResult"]["ips"] == [{"address": "10.0.0.2/24"}, {"address": "10.0.1.2/24"}]
    assert result == {**third["prevResult"], "cniVersion": "1.0.0"}
    for config in (first, second, third):
        assert (config["name"], config["cniVersion"]) == ("chain", "1.0.0")
        assert "capabilities" not in config
    assert second["runtimeConfig"] == {"portMappings": []}
    assert "runtimeConfig" not in first and "runtimeConfig" not in third


def test_a_failing_plugin_stops_the_chain_and_nothing_is_cached(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b", "c")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist(
        "n", fakes.conf("a"), fakes.conf("b", behave={"ADD": "error"}), fakes.conf("c")
    )
    with pytest.raises(PluginError) as caught:
        runtime.add(netconf, "c1", NETNS, "eth0")
    assert (caught.value.plugin, caught.value.command, caught.value.code) == ("b", "ADD", 7)
    assert fakes.sequence() == [("a", "ADD"), ("b", "ADD")]
    assert runtime.cached("n", "c1", "eth0") is None


@pytest.mark.parametrize(
    ("netconf", "expected"),
    [
        ({"cniVersion": "1.1.0", "cniVersions": ["0.4.0", "1.0.0"]}, "1.1.0"),
        ({"cniVersion": "1.0.0", "cniVersions": ["0.3.1", "1.0.0", "1.1.0"]}, "1.0.0"),
        ({"cniVersion": "0.4.0", "cniVersions": ["1.0.0"]}, "0.4.0"),
    ],
)
def test_libcni_before_1_2_sends_cni_version_and_ignores_cni_versions(
    netconf: dict[str, Any], expected: str
) -> None:
    assert select_version(netconf, "1.0.0", reads_cni_versions=False) == expected
    with pytest.raises(NetconfError, match="does not read cniVersions"):
        select_version({"cniVersions": ["1.0.0"]}, "1.0.0", reads_cni_versions=False)


def test_a_result_newer_than_the_runtime_fails_the_add(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    """libcni 1.1 on a 1.1.0 list: sent as it is, and the 1.1.0 result cannot be parsed."""
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path, max_version="1.0.0", reads_cni_versions=False)
    netconf = conflist(
        "n", fakes.conf("a"), fakes.conf("b"), version="1.1.0", cniVersions=["1.0.0", "1.1.0"]
    )
    with pytest.raises(ResultVersionError) as caught:
        runtime.add(netconf, "c1", NETNS, "eth0")
    assert str(caught.value) == (
        'plugin type="a" failed (add): unsupported CNI result version "1.1.0"'
    )
    assert fakes.sequence() == [("a", "ADD")]  # the chain stops at the first result
    assert runtime.cached("n", "c1", "eth0") is None
    # the same list at 1.0.0 with 1.1.0 listed: that runtime sends and gets 1.0.0
    netconf["cniVersion"] = "1.0.0"
    assert runtime.add(netconf, "c2", NETNS, "eth0")["cniVersion"] == "1.0.0"


def test_delete_runs_in_reverse_with_the_cached_result_then_drops_the_cache(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b", "c")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist(
        "n", fakes.conf("a", address="10.0.0.2/24"), fakes.conf("b"), fakes.conf("c")
    )
    result = runtime.add(netconf, "c1", NETNS, "eth0", cni_args=[("K8S_POD_NAME", "web")])
    fakes.clear()
    runtime.delete(netconf, "c1", NETNS, "eth0", cni_args=[("K8S_POD_NAME", "web")])
    assert fakes.sequence() == [("c", "DEL"), ("b", "DEL"), ("a", "DEL")]
    for call in fakes.calls():
        assert call["config"]["prevResult"] == result
        assert call["env"]["CNI_ARGS"] == "K8S_POD_NAME=web"
    assert runtime.cached("n", "c1", "eth0") is None
    fakes.clear()
    runtime.delete(netconf, "c1", "", "eth0")  # containerd's second DEL, netns already gone
    assert all("prevResult" not in call["config"] for call in fakes.calls())
    assert fakes.calls()[0]["env"]["CNI_NETNS"] == ""


def test_delete_below_0_4_0_sends_no_prev_result(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a", address="10.0.0.2/24"), version="0.3.1")
    runtime.add(netconf, "c1", NETNS, "eth0")
    runtime.delete(netconf, "c1", NETNS, "eth0")
    assert "prevResult" not in fakes.calls()[-1]["config"]
    assert runtime.cached("n", "c1", "eth0") is None


def test_a_failed_delete_keeps_the_cache_entry(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), fakes.conf("b", behave={"DEL": "error"}))
    runtime.add(netconf, "c1", NETNS, "eth0")
    with pytest.raises(PluginError, match="failed \\(delete\\)"):
        runtime.delete(netconf, "c1", NETNS, "eth0")
    assert fakes.sequence()[-1] == ("b", "DEL")  # a is never reached
    assert runtime.cached("n", "c1", "eth0") is not None


def test_check_runs_in_order_with_the_cached_result(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a", address="10.0.0.2/24"), fakes.conf("b"))
    result = runtime.add(netconf, "c1", NETNS, "eth0")
    fakes.clear()
    runtime.check(netconf, "c1", NETNS, "eth0")
    assert fakes.sequence() == [("a", "CHECK"), ("b", "CHECK")]
    assert all(call["config"]["prevResult"] == result for call in fakes.calls())


def test_check_is_skipped_when_disabled(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), disableCheck=True)
    runtime.check(netconf, "c1", NETNS, "eth0")
    assert fakes.calls() == []


def test_check_is_refused_below_0_4_0_even_when_disabled(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    for flags in ({}, {"disableCheck": True}):
        with pytest.raises(VerbNotSupportedError):
            runtime.check(
                conflist("n", fakes.conf("a"), version="0.3.1", **flags), "c1", NETNS, "eth0"
            )
    assert fakes.calls() == []


def test_results_cache_uses_libcni_format(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("net1", fakes.conf("a", address="10.0.0.2/24"))
    result = runtime.add(
        netconf, "c1", NETNS, "eth0", cni_args={"K": "V"}, capability_args={"mac": "x"}
    )
    path = tmp_path / "cache" / "results" / "net1-c1-eth0"
    entry = json.loads(path.read_text())
    assert entry["kind"] == "cniCacheV1"
    assert (entry["containerId"], entry["ifName"], entry["networkName"]) == ("c1", "eth0", "net1")
    assert entry["netns"] == NETNS
    assert entry["cniArgs"] == [["K", "V"]]
    assert entry["capabilityArgs"] == {"mac": "x"}
    assert json.loads(base64.b64decode(entry["config"])) == netconf
    assert entry["result"] == result
    assert path.stat().st_mode & 0o777 == 0o600
    cached = runtime.cached("net1", "c1", "eth0")
    assert cached is not None and cached.result == result
    assert [a.container_id for a in runtime.cached_attachments("net1")] == ["c1"]
    assert runtime.cached_attachments("other") == []


def test_add_validates_the_attachment_like_libcni(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"))
    for container_id, ifname in [("-bad", "eth0"), ("c1", "x" * 16), ("c1", "a/b"), ("", "e")]:
        with pytest.raises(NetconfError):
            runtime.add(netconf, container_id, NETNS, ifname)
    assert fakes.calls() == []


def test_a_missing_plugin_is_an_error(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    with pytest.raises(PluginNotFoundError, match='"nope"'):
        runtime.add(conflist("n", fakes.conf("a"), {"type": "nope"}), "c1", NETNS, "eth0")
    with pytest.raises(PluginNotFoundError):
        runtime.version("../a")


def test_plugins_are_found_through_every_directory(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = Runtime([str(tmp_path / "empty"), str(fakes.directory)], str(tmp_path / "cache"))
    runtime.add(conflist("n", fakes.conf("a")), "c1", NETNS, "eth0")
    assert fakes.calls()[0]["env"]["CNI_PATH"] == f"{tmp_path / 'empty'}:{fakes.directory}"


def test_gc_deletes_stale_attachments_then_sends_gc_to_every_plugin(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), fakes.conf("b"), version="1.1.0")
    other = conflist("other", fakes.conf("a"), version="1.1.0")
    runtime.add(netconf, "keep", "/run/netns/keep", "eth0")
    runtime.add(netconf, "stale", "/run/netns/stale", "eth0", cni_args={"K": "V"})
    runtime.add(other, "stale", "/run/netns/stale", "eth0")
    fakes.clear()
    runtime.gc(netconf, [("keep", "eth0")])
    assert fakes.sequence() == [("b", "DEL"), ("a", "DEL"), ("a", "GC"), ("b", "GC")]
    deletion = fakes.calls()[0]
    assert deletion["env"]["CNI_CONTAINERID"] == "stale"
    assert deletion["env"]["CNI_NETNS"] == "/run/netns/stale"  # as cached at ADD
    assert deletion["env"]["CNI_ARGS"] == "K=V"
    gc_call = fakes.calls()[2]
    valid = [{"containerID": "keep", "ifname": "eth0"}]
    assert gc_call["config"][VALID_ATTACHMENTS_KEY] == valid
    assert gc_call["config"][LEGACY_ATTACHMENTS_KEY] == valid
    assert gc_call["env"] == {
        "CNI_COMMAND": "GC",
        "CNI_CONTAINERID": "",
        "CNI_NETNS": "",
        "CNI_IFNAME": "",
        "CNI_ARGS": "",
        "CNI_PATH": str(fakes.directory),
    }
    assert [a.container_id for a in runtime.cached_attachments("n")] == ["keep"]
    assert runtime.cached("other", "stale", "eth0") is not None  # another network's


def test_gc_goes_on_after_errors_and_reports_them_all(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist(
        "n",
        fakes.conf("a", behave={"GC": "error"}),
        fakes.conf("b", behave={"GC": "silent-failure", "DEL": "error"}),
        version="1.1.0",
    )
    runtime.add(netconf, "stale", NETNS, "eth0")
    fakes.clear()
    with pytest.raises(ExceptionGroup) as caught:
        runtime.gc(netconf, [])
    assert fakes.sequence() == [("b", "DEL"), ("a", "GC"), ("b", "GC")]
    failures = caught.value.exceptions
    assert [(e.plugin, e.command) for e in failures if isinstance(e, PluginError)] == [
        ("b", "DEL"),
        ("a", "GC"),
        ("b", "GC"),
    ]


def test_gc_below_1_1_0_only_deletes_stale_attachments(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), version="1.0.0")
    runtime.add(netconf, "stale", NETNS, "eth0")
    fakes.clear()
    runtime.gc(netconf, [])
    assert fakes.sequence() == [("a", "DEL")]


def test_gc_does_nothing_when_disabled(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), version="1.1.0", disableGC=True)
    runtime.add(netconf, "stale", NETNS, "eth0")
    fakes.clear()
    runtime.gc(netconf, [])
    assert fakes.calls() == []
    assert runtime.cached("n", "stale", "eth0") is not None


def test_status_asks_every_plugin_from_1_1_0(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    runtime.status(conflist("n", fakes.conf("a"), fakes.conf("b"), version="1.0.0"))
    assert fakes.calls() == []
    runtime.status(conflist("n", fakes.conf("a"), fakes.conf("b"), version="1.1.0"))
    assert fakes.sequence() == [("a", "STATUS"), ("b", "STATUS")]
    fakes.clear()
    not_ready = conflist(
        "n",
        fakes.conf("a", behave={"STATUS": "error"}, errorCode=50),
        fakes.conf("b"),
        version="1.1.0",
    )
    with pytest.raises(PluginError) as caught:
        runtime.status(not_ready)
    assert caught.value.code == 50
    assert fakes.sequence() == [("a", "STATUS")]


def test_version_asks_the_plugin(fake_plugins: FakeFactory, tmp_path: Path) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path, max_version="1.0.0")
    answer = runtime.version("a")
    assert "1.1.0" in answer["supportedVersions"]
    invocation = runtime.invocations[-1]
    assert invocation.command == "VERSION"
    assert json.loads(invocation.stdin) == {"cniVersion": "1.0.0"}


def test_the_runtime_keeps_every_invocation_and_its_problems(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a", behave={"DEL": "chatty"}))
    runtime.add(netconf, "c1", NETNS, "eth0")
    runtime.delete(netconf, "c1", NETNS, "eth0")  # succeeds, as it would with libcni
    assert [i.command for i in runtime.invocations] == ["ADD", "DEL"]
    assert runtime.invocations[1].problem_kinds() == {ProblemKind.OUTPUT_ON_SILENT_VERB}


def test_on_invocation_sees_each_exec_before_the_next_plugin_runs(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    """The conformance harness looks at the node between the plugins of one chain."""
    fakes = fake_plugins("a", "b")
    runtime = fake_runtime(fakes, tmp_path)
    netconf = conflist("n", fakes.conf("a"), fakes.conf("b", behave={"ADD": "error"}))
    seen: list[tuple[str, str, int]] = []
    runtime.on_invocation = lambda i: seen.append((i.plugin, i.command, len(fakes.calls())))
    with pytest.raises(PluginError):
        runtime.add(netconf, "c1", NETNS, "eth0")
    runtime.delete(netconf, "c1", NETNS, "eth0")
    # a failed exec is reported too; each report comes before the next plugin was called
    assert seen == [("a", "ADD", 1), ("b", "ADD", 2), ("b", "DEL", 3), ("a", "DEL", 4)]


def test_loopback_comes_first_on_add_and_last_on_delete(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a", "loopback")
    runtime = fake_runtime(fakes, tmp_path, loopback=True)
    netconf = conflist("n", fakes.conf("a"))
    runtime.add(netconf, "c1", NETNS, "eth0")
    runtime.delete(netconf, "c1", NETNS, "eth0")
    # the fake loopback has no log in its config: only the runtime's record shows it
    assert [(i.plugin, i.command, i.env["CNI_IFNAME"]) for i in runtime.invocations] == [
        ("loopback", "ADD", "lo"),
        ("a", "ADD", "eth0"),
        ("a", "DEL", "eth0"),
        ("loopback", "DEL", "lo"),
    ]
    assert json.loads(runtime.invocations[0].stdin) == {
        "type": "loopback",
        "name": "cni-loopback",
        "cniVersion": "0.3.1",
    }


def test_loopback_is_skipped_without_a_loopback_plugin(
    fake_plugins: FakeFactory, tmp_path: Path
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path, loopback=True)
    runtime.add(conflist("n", fakes.conf("a")), "c1", NETNS, "eth0")
    assert [i.plugin for i in runtime.invocations] == ["a"]


@pytest.mark.netns
def test_in_netns_runs_plugins_inside_that_namespace_with_a_bare_environment(
    fake_plugins: FakeFactory, tmp_path: Path, netns: netns_mod.Netns
) -> None:
    fakes = fake_plugins("a")
    runtime = fake_runtime(fakes, tmp_path, in_netns=netns.path)
    runtime.add(conflist("n", fakes.conf("a")), "c1", NETNS, "eth0")
    (call,) = fakes.calls()
    assert call["netns"] == f"net:[{os.stat(netns.path).st_ino}]"
    assert set(call["env"]) == CNI_VARIABLES


# --- Runtime with the Go reference plugins ---------------------------------------------------


def host_local(data_dir: Path, subnet: str) -> dict[str, Any]:
    """host-local called directly as a plugin: it reads the `ipam` section of its config and
    prints a result without interfaces -- a plugin that touches no interface at all."""
    ranges = [[{"subnet": subnet}]]
    return {
        "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": str(data_dir), "ranges": ranges},
    }


def reference_runtime(reference_dir: Path, tmp_path: Path, **options: Any) -> Runtime:
    return Runtime([str(reference_dir)], str(tmp_path / "cache"), **options)


def assert_no_problems(runtime: Runtime) -> None:
    assert [(i.plugin, i.command, i.problems) for i in runtime.invocations if i.problems] == []


@pytest.mark.netns
@pytest.mark.reference
def test_host_local_add_check_delete_delete_again(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    runtime = reference_runtime(reference_dir, tmp_path)
    name = unique("hl")
    netconf = conflist(name, host_local(tmp_path / "ipam", "10.123.0.0/24"))
    result = runtime.add(netconf, "c1", pod_ns.path, "eth0")
    assert result["cniVersion"] == "1.0.0"
    assert [ip["address"] for ip in result["ips"]] == ["10.123.0.2/24"]
    assert leases(tmp_path / "ipam", name) == {"10.123.0.2": b"c1\r\neth0"}
    assert (tmp_path / "cache" / "results" / f"{name}-c1-eth0").is_file()
    runtime.check(netconf, "c1", pod_ns.path, "eth0")
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")
    assert leases(tmp_path / "ipam", name) == {}
    assert runtime.cached(name, "c1", "eth0") is None
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")  # DEL twice is fine
    runtime.delete(netconf, "c1", "", "eth0")  # and without a netns
    assert_no_problems(runtime)


@pytest.mark.netns
@pytest.mark.reference
def test_host_local_refuses_a_second_add_of_the_same_attachment(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    runtime = reference_runtime(reference_dir, tmp_path)
    netconf = conflist(unique("hl"), host_local(tmp_path / "ipam", "10.123.1.0/24"))
    runtime.add(netconf, "c1", pod_ns.path, "eth0")
    try:
        with pytest.raises(PluginError, match="duplicate allocation"):
            runtime.add(netconf, "c1", pod_ns.path, "eth0")
    finally:
        runtime.delete(netconf, "c1", pod_ns.path, "eth0")


@pytest.mark.netns
@pytest.mark.reference
def test_a_chain_of_two_host_locals_is_added_in_order_and_deleted_in_reverse(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    runtime = reference_runtime(reference_dir, tmp_path)
    name = unique("hl2")
    first, second = tmp_path / "ipam1", tmp_path / "ipam2"
    netconf = conflist(
        name, host_local(first, "10.123.2.0/24"), host_local(second, "10.123.3.0/24")
    )
    result = runtime.add(netconf, "c1", pod_ns.path, "eth0")
    assert [ip["address"] for ip in result["ips"]] == ["10.123.3.2/24"]  # the last plugin's
    add_second = json.loads(runtime.invocations[1].stdin)
    assert add_second["prevResult"]["ips"][0]["address"] == "10.123.2.2/24"
    assert list(leases(first, name)) == ["10.123.2.2"]
    assert list(leases(second, name)) == ["10.123.3.2"]
    runtime.check(netconf, "c1", pod_ns.path, "eth0")
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")
    deletes = [json.loads(i.stdin) for i in runtime.invocations if i.command == "DEL"]
    assert [d["ipam"]["dataDir"] for d in deletes] == [str(second), str(first)]
    assert all(d["prevResult"] == result for d in deletes)
    assert leases(first, name) == leases(second, name) == {}
    assert_no_problems(runtime)


@pytest.mark.netns
@pytest.mark.reference
def test_version_negotiation_against_a_plugin_that_stops_at_1_0_0(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    name = unique("hlv")
    netconf = conflist(
        name,
        host_local(tmp_path / "ipam", "10.123.4.0/24"),
        version="0.4.0",
        cniVersions=["0.4.0", "1.0.0", "1.1.0"],
    )
    runtime = reference_runtime(reference_dir, tmp_path, max_version="1.0.0")
    assert "1.1.0" not in runtime.version("host-local")["supportedVersions"]
    result = runtime.add(netconf, "c1", pod_ns.path, "eth0")
    assert result["cniVersion"] == "1.0.0"
    assert json.loads(runtime.invocations[-1].stdin)["cniVersion"] == "1.0.0"
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")

    newer = reference_runtime(reference_dir, tmp_path)  # ceiling 1.1.0: the plugin refuses it
    with pytest.raises(PluginError) as caught:
        newer.add(netconf, "c2", pod_ns.path, "eth0")
    assert caught.value.code == 1
    assert leases(tmp_path / "ipam", name) == {}


@pytest.mark.netns
@pytest.mark.reference
def test_a_0_3_1_network_gets_no_check_and_no_prev_result_on_delete(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    runtime = reference_runtime(reference_dir, tmp_path)
    name = unique("hl031")
    netconf = conflist(name, host_local(tmp_path / "ipam", "10.123.5.0/24"), version="0.3.1")
    result = runtime.add(netconf, "c1", pod_ns.path, "eth0")
    assert result["cniVersion"] == "0.3.1"
    assert result["ips"][0]["version"] == "4"  # 0.3.x results carry ips[].version
    with pytest.raises(VerbNotSupportedError):
        runtime.check(netconf, "c1", pod_ns.path, "eth0")
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")
    assert "prevResult" not in json.loads(runtime.invocations[-1].stdin)
    assert leases(tmp_path / "ipam", name) == {}


@pytest.mark.netns
@pytest.mark.reference
def test_gc_releases_the_addresses_of_stale_attachments(
    reference_dir: Path, tmp_path: Path, pod_ns: netns_mod.Netns
) -> None:
    runtime = reference_runtime(reference_dir, tmp_path)
    name = unique("hlgc")
    netconf = conflist(name, host_local(tmp_path / "ipam", "10.123.6.0/24"))
    runtime.add(netconf, "keep", pod_ns.path, "eth0")
    runtime.add(netconf, "stale", pod_ns.path, "eth0")
    assert sorted(leases(tmp_path / "ipam", name).values()) == [b"keep\r\neth0", b"stale\r\neth0"]
    runtime.gc(netconf, [("keep", "eth0")])
    assert list(leases(tmp_path / "ipam", name).values()) == [b"keep\r\neth0"]
    assert [a.container_id for a in runtime.cached_attachments(name)] == ["keep"]
    # 1.0.0: no GC verb (the Go plugins would refuse it anyway), only the synthesized DEL
    assert [i.command for i in runtime.invocations[2:]] == ["DEL"]
    runtime.delete(netconf, "keep", pod_ns.path, "eth0")
    assert leases(tmp_path / "ipam", name) == {}


def _host_link_names() -> set[str]:
    listing = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True)
    return {link["ifname"] for link in json.loads(listing.stdout)}


@pytest.mark.netns
@pytest.mark.reference
def test_bridge_in_a_node_namespace_add_check_delete(
    reference_dir: Path,
    tmp_path: Path,
    netns: netns_mod.Netns,
    pod_ns: netns_mod.Netns,
) -> None:
    """The whole runtime runs inside `netns`, as containerd runs inside a kind node: the
    bridge and the host-side veth appear there, never in the host's own namespace."""
    bridge = f"pbr{uuid.uuid4().hex[:6]}"
    name = unique("br")
    netconf = conflist(
        name,
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "dataDir": str(tmp_path / "ipam"),
                "ranges": [[{"subnet": "10.123.7.0/24"}]],
            },
        },
    )
    runtime = reference_runtime(reference_dir, tmp_path, in_netns=netns.path, loopback=True)
    host_links = _host_link_names()

    result = runtime.add(netconf, "c1", pod_ns.path, "eth0")

    interfaces = {i["name"]: i for i in result["interfaces"]}
    assert interfaces["eth0"]["sandbox"] == pod_ns.path
    assert bridge in interfaces
    address = result["ips"][0]["address"]
    (eth0,) = pod_ns.ip_json("addr", "show", "dev", "eth0")
    assert f"{eth0['addr_info'][0]['local']}/{eth0['addr_info'][0]['prefixlen']}" == address
    (lo,) = pod_ns.ip_json("link", "show", "dev", "lo")
    assert "UP" in lo["flags"]  # the loopback plugin ran first
    (node_bridge,) = netns.ip_json("addr", "show", "dev", bridge)
    assert node_bridge["addr_info"][0]["local"] == "10.123.7.1"
    assert bridge not in _host_link_names()
    assert _host_link_names() == host_links

    runtime.check(netconf, "c1", pod_ns.path, "eth0")
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")

    assert "eth0" not in pod_ns.link_names()
    assert set(netns.link_names()) == {"lo", bridge}  # the host-side veth went with eth0
    assert leases(tmp_path / "ipam", name) == {}
    runtime.delete(netconf, "c1", pod_ns.path, "eth0")
    runtime.delete(netconf, "c1", "", "eth0")
    assert_no_problems(runtime)
    assert _host_link_names() == host_links
