"""The protocol boundary, with env and streams injected (no processes, no kernel)."""

from __future__ import annotations

import io
import json
import types
from pathlib import Path
from typing import Any

import pytest

from pycni.cni import skel, versions
from pycni.cni.errors import CniError, Code, ConfigError
from pycni.cni.ip import Prefix
from pycni.cni.result import IPConfig, Result

NETNS = "/proc/self/ns/net"  # exists; the fake plugin never enters it


def fake_plugin(**overrides: Any) -> types.SimpleNamespace:
    calls: list[tuple[str, skel.Call]] = []

    def record(verb: str, ret: Any = None) -> Any:
        def handler(call: skel.Call, conf: Any) -> Any:
            calls.append((verb, call))
            return ret

        return handler

    result = Result(
        ips=[IPConfig(Prefix.parse("10.1.0.5/24")), IPConfig(Prefix.parse("fd00::5/64"))]
    )
    plugin = types.SimpleNamespace(
        NAME="fake",
        calls=calls,
        parse_config=lambda call: None,
        cmd_add=record("ADD", result),
        cmd_del=record("DEL"),
        cmd_check=record("CHECK"),
        cmd_status=record("STATUS"),
        cmd_gc=record("GC"),
    )
    for key, value in overrides.items():
        setattr(plugin, key, value)
    return plugin


def invoke(
    plugin: Any, env: dict[str, str], config: Any = None, stdin: bytes | None = None
) -> tuple[int, str, str]:
    if stdin is None:
        stdin = json.dumps(
            config if config is not None else {"cniVersion": "1.0.0", "name": "net"}
        ).encode()
    out, err = io.BytesIO(), io.StringIO()
    status = skel.run(plugin, env=env, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue().decode(), err.getvalue()


def env(command: str = "ADD", **extra: str) -> dict[str, str]:
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c1",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": NETNS,
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "net", **extra}


def error_of(status: int, out: str) -> dict[str, Any]:
    assert status == 1
    error: dict[str, Any] = json.loads(out)
    assert set(error) <= {"cniVersion", "code", "msg", "details"}
    assert isinstance(error["msg"], str) and error["msg"]
    return error


def test_version_answers_from_a_constant() -> None:
    status, out, _ = invoke(fake_plugin(), {"CNI_COMMAND": "VERSION"}, stdin=b"")
    assert status == 0
    assert json.loads(out) == {"cniVersion": "1.1.0", "supportedVersions": list(versions.SUPPORTED)}


@pytest.mark.parametrize("command", ["", "add", "FOO"])
def test_bad_command_is_code_4_naming_the_variable(command: str) -> None:
    e = error_of(*invoke(fake_plugin(), {"CNI_COMMAND": command} if command else {})[:2])
    assert e["code"] == Code.INVALID_ENV and "CNI_COMMAND" in e["msg"]


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"  \n",
        b"{not json",
        b"[1, 2]",
        b'"str"',
        b"\xff\xfe",
        b"{" * 10_000,
        b"{}" + b" " * (1 << 20),
    ],
)
def test_undecodable_stdin_is_code_6(stdin: bytes) -> None:
    e = error_of(*invoke(fake_plugin(), env(), stdin=stdin)[:2])
    assert e["code"] == Code.DECODE_FAILURE
    assert e["cniVersion"] == versions.CURRENT


def test_unreadable_stdin_is_code_5() -> None:
    class Broken(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    out, err = io.BytesIO(), io.StringIO()
    status = skel.run(fake_plugin(), env=env(), stdin=Broken(), stdout=out, stderr=err)  # type: ignore[arg-type]
    assert error_of(status, out.getvalue().decode())["code"] == Code.IO_FAILURE


@pytest.mark.parametrize("version", [None, "0.1.0", "0.2.0", "2.0.0", "1.0", "banana"])
def test_unsupported_version_is_code_1(version: str | None) -> None:
    config = {"name": "net"} if version is None else conf(version)
    e = error_of(*invoke(fake_plugin(), env(), config)[:2])
    assert e["code"] == Code.INCOMPATIBLE_VERSION
    assert "1.1.0" in e["msg"]  # says what is supported


def test_non_string_version_is_code_7() -> None:
    e = error_of(*invoke(fake_plugin(), env(), {"cniVersion": 1, "name": "n"})[:2])
    assert e["code"] == Code.INVALID_CONFIG and e["details"] == "$.cniVersion"


@pytest.mark.parametrize(
    ("command", "version"),
    [("CHECK", "0.3.1"), ("CHECK", "0.3.0"), ("STATUS", "1.0.0"), ("GC", "0.4.0")],
)
def test_verb_gating_is_code_1(command: str, version: str) -> None:
    e = error_of(*invoke(fake_plugin(), env(command), conf(version))[:2])
    assert e["code"] == Code.INCOMPATIBLE_VERSION and command in e["msg"]
    assert e["cniVersion"] == version  # errors are in the request's version once it is known


@pytest.mark.parametrize("variable", ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"])
def test_missing_env_is_code_4_naming_it(variable: str) -> None:
    e = error_of(*invoke(fake_plugin(), env(**{variable: ""}))[:2])
    assert e["code"] == Code.INVALID_ENV and variable in e["msg"]


@pytest.mark.parametrize(
    "ifname", ["a" * 16, ".", "..", "eth/0", "eth:0", "eth 0", "eth\t0", "é" * 8]
)
def test_invalid_ifname_is_code_4(ifname: str) -> None:
    e = error_of(*invoke(fake_plugin(), env(CNI_IFNAME=ifname))[:2])
    assert e["code"] == Code.INVALID_ENV and "CNI_IFNAME" in e["msg"]


def test_ifname_of_15_bytes_is_fine() -> None:
    assert invoke(fake_plugin(), env(CNI_IFNAME="a" * 15))[0] == 0


@pytest.mark.parametrize("cid", ["-abc", "a/b", "../x", "a b", "ä"])
def test_invalid_container_id_is_code_4(cid: str) -> None:
    e = error_of(*invoke(fake_plugin(), env(CNI_CONTAINERID=cid))[:2])
    assert e["code"] == Code.INVALID_ENV and "CNI_CONTAINERID" in e["msg"]


def test_missing_netns_for_add_is_code_3() -> None:
    e = error_of(*invoke(fake_plugin(), env(CNI_NETNS="/run/netns/does-not-exist-pycni"))[:2])
    assert e["code"] == Code.UNKNOWN_CONTAINER and "/run/netns/does-not-exist-pycni" in e["msg"]


@pytest.mark.parametrize("netns", ["", "/run/netns/does-not-exist-pycni"])
def test_del_without_or_with_a_gone_netns_reaches_the_plugin(netns: str) -> None:
    plugin = fake_plugin()
    status, out, _ = invoke(plugin, env("DEL", CNI_NETNS=netns))
    assert (status, out) == (0, "")
    assert plugin.calls[0][1].netns == netns


@pytest.mark.parametrize("name", [None, "", "-net", "a/b", "../../etc", "net work", 5])
def test_invalid_network_name_is_code_7(name: object) -> None:
    config: dict[str, Any] = {"cniVersion": "1.0.0"}
    if name is not None:
        config["name"] = name
    e = error_of(*invoke(fake_plugin(), env(), config)[:2])
    assert e["code"] == Code.INVALID_CONFIG and e["details"] == "$.name"


def test_cni_args_are_parsed_and_unknown_keys_refused_without_ignoreunknown() -> None:
    plugin = fake_plugin()
    assert invoke(plugin, env(CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar"))[0] == 0
    assert plugin.calls[0][1].cni_args["K8S_POD_NAME"] == "web"
    e = error_of(*invoke(fake_plugin(), env(CNI_ARGS="FOO=bar"))[:2])
    assert e["code"] == Code.INVALID_ENV and "FOO" in e["msg"] and "IgnoreUnknown" in e["msg"]
    e = error_of(*invoke(fake_plugin(), env(CNI_ARGS="novalue"))[:2])
    assert e["code"] == Code.INVALID_ENV and "CNI_ARGS" in e["msg"]


@pytest.mark.parametrize("version", versions.SUPPORTED)
def test_add_result_is_in_the_request_version(version: str) -> None:
    status, out, _ = invoke(fake_plugin(), env(), conf(version))
    assert status == 0
    result = json.loads(out)
    assert result["cniVersion"] == version
    has_version = versions.parse(version) < (1, 0, 0)
    assert [("version" in ip) for ip in result["ips"]] == [has_version, has_version]
    if has_version:
        assert [ip["version"] for ip in result["ips"]] == ["4", "6"]


@pytest.mark.parametrize("command", ["DEL", "CHECK", "STATUS", "GC"])
def test_other_verbs_print_nothing(command: str) -> None:
    config = conf("1.1.0", **{"cni.dev/valid-attachments": []})
    status, out, _ = invoke(fake_plugin(), env(command), config)
    assert (status, out) == (0, "")


def test_gc_reads_both_attachment_keys_and_requires_one() -> None:
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        plugin = fake_plugin()
        config = conf("1.1.0", **{key: [{"containerID": "a", "ifname": "eth0"}]})
        assert invoke(plugin, env("GC"), config)[0] == 0
        assert plugin.calls[0][1].valid_attachments == [skel.Attachment("a", "eth0")]
    e = error_of(*invoke(fake_plugin(), env("GC"), conf("1.1.0"))[:2])
    assert e["code"] == Code.INVALID_CONFIG and "valid-attachments" in e["details"]


def test_prev_result_on_del_only_from_0_4_0() -> None:
    prev = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.5/24"}]}
    for version, expected in (("0.3.1", False), ("0.4.0", True)):
        plugin = fake_plugin()
        assert invoke(plugin, env("DEL"), conf(version, prevResult=prev))[0] == 0
        assert (plugin.calls[0][1].prev_result is not None) is expected


def test_malformed_prev_result_is_code_7_with_its_path() -> None:
    prev = {"ips": [{"address": "10.1.0.500/24"}]}
    e = error_of(*invoke(fake_plugin(), env(), conf(prevResult=prev))[:2])
    assert e["code"] == Code.INVALID_CONFIG and e["details"] == "$.prevResult.ips[0].address"


def test_plugin_errors_keep_their_code() -> None:
    def fail(call: skel.Call) -> None:
        raise ConfigError("$.ipam.subnet", "bad")

    e = error_of(*invoke(fake_plugin(parse_config=fail), env())[:2])
    assert (e["code"], e["details"]) == (Code.INVALID_CONFIG, "$.ipam.subnet")

    def busy(call: skel.Call, conf: Any) -> None:
        raise CniError(Code.TRY_AGAIN_LATER, "locked")

    assert error_of(*invoke(fake_plugin(cmd_add=busy), env())[:2])["code"] == 11


def test_a_bug_is_code_100_with_the_traceback_on_stderr_only(tmp_path: Path) -> None:
    def boom(call: skel.Call, conf: Any) -> None:
        raise ZeroDivisionError("oops")

    log = tmp_path / "plugin.log"
    status, out, err = invoke(fake_plugin(cmd_add=boom), env(), conf(logFile=str(log)))
    e = error_of(status, out)
    assert e["code"] == Code.INTERNAL and "ZeroDivisionError" in e["msg"]
    assert "Traceback" not in out
    assert "Traceback" in err and "Traceback" in log.read_text()


def test_missing_optional_verbs_succeed() -> None:
    plugin = fake_plugin()
    del plugin.cmd_status, plugin.cmd_gc
    assert invoke(plugin, env("STATUS"), conf("1.1.0"))[:2] == (0, "")
