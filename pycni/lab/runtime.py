"""A small libcni in Python: drive CNI plugins exactly as libcni-based runtimes do.

Operator and test path (the test suite, the conformance harness, the demo); nothing a plugin
invocation loads, so it uses the standard library freely.

Two layers:

- `invoke` runs one plugin once the way libcni's `pkg/invoke` does -- JSON on stdin, the
  attachment in `CNI_*` variables -- but stricter: a *bare* environment, a neutral working
  directory and a timeout. It returns an `Invocation` that records what a conformance harness
  cares about (stdout that is not JSON, output where the spec wants none, an error object with
  exit status 0, a failure without an error object).
- `Runtime` strings invocations together as libcni's `CNIConfig` does (`AddNetworkList`,
  `CheckNetworkList`, `DelNetworkList`, `GCNetworkList`, `GetStatusNetworkList`,
  `GetVersionInfo`), including its results cache, so that cached state written here reads the
  same as containerd's or cnitool's.

The environment of a plugin. libcni hands plugins the runtime's own environment plus `CNI_*`;
`invoke` hands them *only* `CNI_*` (plus `extra_env`, empty by default). There is no `PATH`: a
plugin must find its delegates (IPAM) through `CNI_PATH`, as the spec says, and a plugin that
quietly relies on `PATH` or `HOME` fails here instead of in a kind node. Go plugins that shell
out (portmap and firewall run `iptables`) do need `PATH`: pass it in `extra_env`.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.cni import versions
from pycni.cni.errors import CniError

JSONObject = dict[str, Any]
CniArgs = str | Mapping[str, str] | Sequence[tuple[str, str]]

DEFAULT_TIMEOUT = 60.0
SILENT_VERBS = frozenset({"DEL", "CHECK", "GC", "STATUS"})  # print nothing on success
NO_CODE = 0  # PluginError.code when the plugin gave no error object (libcni leaves it 0 too)
CACHE_KIND = "cniCacheV1"
VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"  # libcni sends both: cni#1101
# containerd (go-cni) attaches this network first, on interface "lo", in every sandbox.
LOOPBACK_NETWORK: JSONObject = {
    "cniVersion": "0.3.1",
    "name": "cni-loopback",
    "plugins": [{"type": "loopback"}],
}
LOOPBACK_IFNAME = "lo"

_CNI_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_TEXT_BUSY_RETRIES = 5  # libcni retries an exec that fails with "text file busy"
_TEXT_BUSY_PAUSE = 0.2
_REAP_TIMEOUT = 5.0
_VERB_WORDS = {"ADD": "add", "DEL": "delete", "CHECK": "check", "GC": "gc", "STATUS": "status"}


# --- errors --------------------------------------------------------------------------------


class PluginError(CniError):
    """A plugin failed: its error object (code, msg, details) as received, plus who and what.

    `code` is NO_CODE (0) when the plugin exited non-zero without a usable error object, timed
    out, or succeeded without the result ADD needs. `str()` reads like containerd's message:
    `plugin type="bridge" failed (add): <msg>; <details>`.
    """

    def __init__(
        self,
        code: int,
        msg: str,
        details: str = "",
        *,
        plugin: str = "",
        command: str = "",
        invocation: Invocation | None = None,
    ) -> None:
        super().__init__(code, msg, details)
        self.plugin = plugin
        self.command = command
        self.invocation = invocation

    def __str__(self) -> str:
        verb = _VERB_WORDS.get(self.command, self.command.lower())
        text = f'plugin type="{self.plugin}" failed ({verb}): {self.msg}'
        return f"{text}; {self.details}" if self.details else text


class CniRuntimeError(Exception):
    """The runtime itself refused or could not do something; no plugin said so."""


class NetconfError(CniRuntimeError, ValueError):
    """An invalid network configuration or attachment parameter (caught before any exec)."""


class PluginNotFoundError(CniRuntimeError, LookupError):
    """No executable named by a plugin's `type` in the plugin directories."""


class VerbNotSupportedError(CniRuntimeError):
    """The configuration's version does not have the verb (libcni: CHECK below 0.4.0)."""


class ResultVersionError(CniRuntimeError):
    """A plugin's ADD result is in a version newer than the runtime's ceiling: libcni cannot
    parse it ("unsupported CNI result version"), and the ADD fails."""


class CacheError(CniRuntimeError):
    """A results-cache entry that cannot be read."""


# --- one invocation ------------------------------------------------------------------------


class ProblemKind(enum.StrEnum):
    """Protocol violations `invoke` notices; libcni tolerates most of them silently."""

    TIMED_OUT = "timed-out"
    STDOUT_NOT_JSON = "stdout-not-json"
    OUTPUT_ON_SILENT_VERB = "output-on-silent-verb"  # DEL/CHECK/GC/STATUS printed on success
    ERROR_WITH_EXIT_0 = "error-with-exit-0"
    EXIT_NONZERO_WITHOUT_ERROR = "exit-nonzero-without-error"
    NO_RESULT = "no-result"  # ADD or VERSION succeeded without a JSON object on stdout


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Invocation:
    """What one exec of a plugin did. `exit_status` is negative when a signal ended it."""

    executable: str
    command: str
    env: dict[str, str]
    stdin: bytes
    exit_status: int
    stdout: bytes
    stderr: str
    output: Any  # stdout parsed as JSON; None when empty or not JSON
    timed_out: bool
    duration: float
    problems: tuple[Problem, ...] = ()

    @property
    def plugin(self) -> str:
        return os.path.basename(self.executable)

    @property
    def ok(self) -> bool:
        """Success as libcni judges it: exit status 0, whatever was printed."""
        return self.exit_status == 0 and not self.timed_out

    def problem_kinds(self) -> set[ProblemKind]:
        return {p.kind for p in self.problems}

    def error(self) -> PluginError | None:
        """The failure as a PluginError (built like libcni's `pluginErr`), or None if ok."""
        if self.ok:
            return None
        if self.timed_out:
            return self._error(NO_CODE, f"timed out after {self.duration:.1f}s and was killed")
        if _is_valid_error(self.output):
            details = self.output.get("details")
            return self._error(
                self.output["code"], self.output["msg"], details if isinstance(details, str) else ""
            )
        status = _describe_status(self.exit_status)
        if self.stdout.strip():
            msg = f"{status}, and its stdout is not an error object: {_clip(self.stdout)!r}"
        elif self.stderr.strip():
            msg = f"{status} without an error object; stderr: {_clip(self.stderr)!r}"
        else:
            msg = f"{status} without any error message"
        return self._error(NO_CODE, msg)

    def raise_for_error(self) -> None:
        error = self.error()
        if error is not None:
            raise error

    def result(self) -> JSONObject:
        """The JSON object printed by a successful ADD or VERSION; PluginError otherwise."""
        self.raise_for_error()
        if not isinstance(self.output, dict):
            raise self._error(
                NO_CODE, f"succeeded but printed no JSON object: {_clip(self.stdout)!r}"
            )
        return self.output

    def _error(self, code: int, msg: str, details: str = "") -> PluginError:
        return PluginError(
            code, msg, details, plugin=self.plugin, command=self.command, invocation=self
        )


def plugin_env(
    command: str,
    *,
    container_id: str | None = None,
    netns: str | None = None,
    ifname: str | None = None,
    cni_args: CniArgs | None = None,
    cni_path: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a plugin: `CNI_COMMAND`, each other `CNI_*` variable that is
    not None (an empty string is passed as empty, as libcni does), then `extra_env`."""
    env = {"CNI_COMMAND": command}
    optional = {
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": None if cni_args is None else format_cni_args(cni_args),
        "CNI_PATH": cni_path,
    }
    env.update({key: value for key, value in optional.items() if value is not None})
    env.update(extra_env or {})
    return env


def format_cni_args(cni_args: CniArgs) -> str:
    """`CNI_ARGS` text, "K=V;K2=V2", from pairs or a mapping (a string passes unchanged)."""
    if isinstance(cni_args, str):
        return cni_args
    pairs = cni_args.items() if isinstance(cni_args, Mapping) else cni_args
    return ";".join(f"{key}={value}" for key, value in pairs)


def invoke(
    executable: str,
    command: str,
    *,
    container_id: str | None = None,
    netns: str | None = None,
    ifname: str | None = None,
    cni_args: CniArgs | None = None,
    cni_path: str | None = None,
    config: Mapping[str, Any] | bytes,
    timeout: float = DEFAULT_TIMEOUT,
    in_netns: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Invocation:
    """Run `executable` once, as libcni's `RawExec.ExecPlugin` does, and record what happened.

    - The environment is `plugin_env(...)` and nothing else (see the module docstring).
    - `config` goes to stdin as JSON (bytes are sent unchanged, to test malformed input).
    - The working directory is `/`; the plugin runs in its own session, and on timeout its
      whole process group is killed (`timed_out` is then True).
    - `in_netns` (a netns path) runs the plugin inside that network namespace through
      `nsenter --net=...`, the way a runtime runs inside a node's namespace; the environment
      stays bare (nsenter is found on the caller's PATH).
    - Like libcni, an exec failing with "text file busy" is retried a few times. Other exec
      failures (no such file, not executable) raise OSError: the runtime, not the plugin, failed.
    """
    env = plugin_env(
        command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        cni_args=cni_args,
        cni_path=cni_path,
        extra_env=extra_env,
    )
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    argv = _argv(executable, in_netns)
    started = time.monotonic()
    exit_status, stdout, stderr, timed_out = _run(argv, env, stdin, timeout)
    output, parse_error = _parse_json(stdout)
    return Invocation(
        executable=executable,
        command=command,
        env=env,
        stdin=stdin,
        exit_status=exit_status,
        stdout=stdout,
        stderr=stderr.decode(errors="replace"),
        output=output,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        problems=_diagnose(
            command,
            exit_status,
            timed_out=timed_out,
            stdout=stdout,
            output=output,
            parse_error=parse_error,
        ),
    )


def _argv(executable: str, in_netns: str | None) -> list[str]:
    if in_netns is None:
        return [executable]
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    return [nsenter, f"--net={in_netns}", "--", executable]


def _run(
    argv: list[str], env: dict[str, str], stdin: bytes, timeout: float
) -> tuple[int, bytes, bytes, bool]:
    """Exec, feed stdin, collect stdout/stderr; on timeout kill the plugin's process group."""
    process = _spawn(argv, env)
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
        return process.returncode, stdout, stderr, False
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # a descendant left the group and holds the pipes
            process.kill()
            process.wait()
            stdout, stderr = b"", b""
        return process.returncode, stdout, stderr, True


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    for attempt in range(_TEXT_BUSY_RETRIES + 1):
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        except OSError as err:
            if err.errno != errno.ETXTBSY or attempt == _TEXT_BUSY_RETRIES:
                raise
            time.sleep(_TEXT_BUSY_PAUSE)
    raise AssertionError("unreachable")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
        os.killpg(process.pid, signal.SIGKILL)


def _parse_json(stdout: bytes) -> tuple[Any, str]:
    """(value, "") for JSON, (None, reason) for anything else, (None, "") for no output."""
    if not stdout.strip():
        return None, ""
    try:
        return json.loads(stdout, parse_constant=_reject_constant), ""
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, str(err)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _diagnose(
    command: str,
    exit_status: int,
    *,
    timed_out: bool,
    stdout: bytes,
    output: Any,
    parse_error: str,
) -> tuple[Problem, ...]:
    if timed_out:
        return (Problem(ProblemKind.TIMED_OUT, "the plugin did not finish and was killed"),)
    problems = []
    if parse_error:
        problems.append(
            Problem(ProblemKind.STDOUT_NOT_JSON, f"{parse_error}; stdout: {_clip(stdout)!r}")
        )
    if exit_status == 0:
        if _is_error_object(output):
            problems.append(
                Problem(ProblemKind.ERROR_WITH_EXIT_0, f"exit status 0 with {_clip(stdout)!r}")
            )
        elif command in SILENT_VERBS and stdout:
            problems.append(
                Problem(
                    ProblemKind.OUTPUT_ON_SILENT_VERB,
                    f"{command} must print nothing on success; printed {_clip(stdout)!r}",
                )
            )
        elif command in ("ADD", "VERSION") and not isinstance(output, dict):
            problems.append(Problem(ProblemKind.NO_RESULT, f"{command} printed {_clip(stdout)!r}"))
    elif not _is_valid_error(output):
        problems.append(
            Problem(
                ProblemKind.EXIT_NONZERO_WITHOUT_ERROR,
                f"{_describe_status(exit_status)}; stdout: {_clip(stdout)!r}",
            )
        )
    return tuple(problems)


def _is_error_object(output: Any) -> bool:
    return isinstance(output, dict) and "code" in output


def _is_valid_error(output: Any) -> bool:
    """The spec's error structure: an integer `code` and a string `msg`."""
    return (
        _is_error_object(output)
        and type(output["code"]) is int
        and isinstance(output.get("msg"), str)
    )


def _describe_status(exit_status: int) -> str:
    if exit_status < 0:
        return f"killed by signal {-exit_status}"
    return f"exited with status {exit_status}"


def _clip(data: bytes | str, limit: int = 300) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- network configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """A network configuration as libcni reads it (`NetworkConfFromBytes`): name, the selected
    version, the plugin list, and the flags the runtime honours. `source` is the configuration
    as given; it is what the results cache keeps."""

    name: str
    cni_version: str
    plugins: tuple[JSONObject, ...]
    disable_check: bool
    disable_gc: bool
    source: JSONObject = field(repr=False)


def load_network(
    netconf: Mapping[str, Any],
    max_version: str = versions.CURRENT,
    reads_cni_versions: bool = True,
) -> Network:
    """Read a conflist (with `plugins`) or a single network config (with `type`; libcni's
    `ConfListFromConf` makes it a one-plugin list). Raises NetconfError. `reads_cni_versions`
    False is libcni before 1.2, which knows no `cniVersions`."""
    name = netconf.get("name")
    if not isinstance(name, str) or not name:
        raise NetconfError(f"network config has no valid name: {name!r}")
    if "plugins" in netconf:
        plugins = netconf["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise NetconfError(f"network '{name}': 'plugins' must be a non-empty list")
    elif "type" in netconf:
        plugins = [dict(netconf)]
    else:
        raise NetconfError(f"network '{name}': neither 'plugins' (conflist) nor 'type' (conf)")
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            raise NetconfError(f"network '{name}': plugin {index} has no string 'type'")
        if not isinstance(plugin.get("capabilities", {}), dict):
            raise NetconfError(f"network '{name}': plugin {index}: 'capabilities' is no object")
    return Network(
        name=name,
        cni_version=select_version(netconf, max_version, reads_cni_versions),
        plugins=tuple(plugins),
        disable_check=_read_bool(netconf, "disableCheck"),
        disable_gc=_read_bool(netconf, "disableGC"),
        source=dict(netconf),
    )


def select_version(
    netconf: Mapping[str, Any],
    max_version: str = versions.CURRENT,
    reads_cni_versions: bool = True,
) -> str:
    """libcni's choice: of `cniVersion` and `cniVersions` together, drop versions newer than the
    runtime's own (`max_version`), take the highest. If none is left, `cniVersion` stands
    unchanged (libcni does the same; the plugin will then refuse it with code 1). Unlike
    libcni, which would send `"cniVersion": ""`, a config with no version at all is refused.

    Without `reads_cni_versions` (libcni before 1.2: containerd 1.6/1.7, CRI-O before 1.31)
    `cniVersion` is sent as it is, whatever the ceiling and whatever `cniVersions` lists."""
    declared = netconf.get("cniVersion", "")
    extra = netconf.get("cniVersions", [])
    if not isinstance(declared, str):
        raise NetconfError(f"cniVersion must be a string, found {declared!r}")
    if not reads_cni_versions:
        if not declared:
            raise NetconfError(
                "network config has no cniVersion (a runtime on libcni before 1.2 does not"
                " read cniVersions)"
            )
        _parse_version(declared)
        return declared
    if not isinstance(extra, list) or not all(isinstance(v, str) for v in extra):
        raise NetconfError(f"cniVersions must be a list of strings, found {extra!r}")
    candidates: list[str] = [declared, *extra] if declared else list(extra)
    if not candidates:
        raise NetconfError("network config has neither cniVersion nor cniVersions")
    ceiling = _parse_version(max_version)
    usable = [v for v in candidates if _parse_version(v) <= ceiling]
    if not usable:
        return declared or max(candidates, key=_parse_version)
    return max(usable, key=_parse_version)


def _parse_version(version: str) -> tuple[int, int, int]:
    try:
        return versions.parse(version)
    except ValueError as err:
        raise NetconfError(str(err)) from None


def _read_bool(netconf: Mapping[str, Any], key: str) -> bool:
    """libcni's `readBool`: a JSON boolean, or the strings "true"/"false" in any case."""
    value = netconf.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise NetconfError(f"{key} must be a boolean, found {value!r}")


def plugin_request(
    network: Network,
    plugin: Mapping[str, Any],
    *,
    prev_result: JSONObject | None = None,
    capability_args: Mapping[str, Any] | None = None,
) -> JSONObject:
    """The request config for ADD/DEL/CHECK (SPEC section 3, libcni `buildOneConfig`): the
    plugin's config with the network's `name` and selected `cniVersion`, `prevResult` when there
    is one, `runtimeConfig` = the capability args the plugin declares in `capabilities` (set only
    when not empty, as libcni does), and `capabilities` removed (the spec says so; libcni leaves
    it in)."""
    request = dict(plugin)
    declared = request.pop("capabilities", None) or {}
    request["name"] = network.name
    request["cniVersion"] = network.cni_version
    if prev_result is not None:
        request["prevResult"] = prev_result
    args = capability_args or {}
    runtime_config = {
        key: args[key] for key, enabled in declared.items() if enabled is True and key in args
    }
    if runtime_config:
        request["runtimeConfig"] = runtime_config
    return request


def _network_request(
    network: Network, plugin: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> JSONObject:
    """The request config for GC and STATUS (libcni `InjectConf`): the plugin's config with the
    network's name and version (and, for GC, the valid attachments); nothing removed."""
    return {**plugin, "name": network.name, "cniVersion": network.cni_version, **(extra or {})}


# --- the results cache ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Attachment:
    """The per-attachment parameters of one ADD/CHECK/DEL (SPEC section 3)."""

    container_id: str
    netns: str
    ifname: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: Mapping[str, Any]


_NO_ATTACHMENT = _Attachment("", "", "", (), {})  # GC and STATUS: libcni passes empty CNI_*


@dataclass(frozen=True)
class CachedAttachment:
    """One entry of the results cache, `<cache_dir>/results/<network>-<containerID>-<ifname>`,
    in libcni's `cniCacheV1` format (the config is base64, as Go marshals []byte)."""

    network: str
    container_id: str
    ifname: str
    netns: str
    cni_args: tuple[tuple[str, str], ...]
    capability_args: JSONObject
    config: bytes
    result: JSONObject | None
    path: Path


def _cache_entry(network: Network, attachment: _Attachment, result: JSONObject) -> JSONObject:
    entry: JSONObject = {
        "kind": CACHE_KIND,
        "containerId": attachment.container_id,
        "config": base64.b64encode(json.dumps(network.source).encode()).decode(),
        "ifName": attachment.ifname,
        "networkName": network.name,
    }
    # libcni's `omitempty` fields
    if attachment.netns:
        entry["netns"] = attachment.netns
    if attachment.cni_args:
        entry["cniArgs"] = [list(pair) for pair in attachment.cni_args]
    if attachment.capability_args:
        entry["capabilityArgs"] = dict(attachment.capability_args)
    entry["result"] = result
    return entry


def _read_cache_file(path: Path) -> CachedAttachment:
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
            raise CacheError(f"cache entry {path} is not of kind {CACHE_KIND}")
        result = data.get("result")
        return CachedAttachment(
            network=str(data["networkName"]),
            container_id=str(data["containerId"]),
            ifname=str(data["ifName"]),
            netns=str(data.get("netns", "")),
            cni_args=tuple((str(k), str(v)) for k, v in data.get("cniArgs") or ()),
            capability_args=dict(data.get("capabilityArgs") or {}),
            config=base64.b64decode(data.get("config") or ""),
            result=result if isinstance(result, dict) else None,
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(f"cannot read cache entry {path}: {err}") from err


def _as_pairs(
    cni_args: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...]:
    if cni_args is None:
        return ()
    pairs = cni_args.items() if isinstance(cni_args, Mapping) else cni_args
    return tuple((str(key), str(value)) for key, value in pairs)


# --- the runtime ---------------------------------------------------------------------------


class Runtime:
    """A libcni `CNIConfig`: plugin directories, a cache directory and a version ceiling.

    Every exec is appended to `invocations`, so a harness can inspect each one (its problems
    included) even when the runtime, like libcni, judged it a success; `on_invocation`, when
    set, is called with each one as soon as it ends (before the next plugin of the chain runs),
    so a harness can look at the node between the plugins of one chain. `in_netns` runs every
    plugin inside that network namespace (a stand-in for a node); `loopback=True` attaches the
    `loopback` plugin before each `add` and detaches it after each `delete`, as containerd does,
    when a `loopback` executable is present.
    """

    def __init__(
        self,
        plugin_dirs: Sequence[str],
        cache_dir: str,
        *,
        max_version: str = versions.CURRENT,
        reads_cni_versions: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        in_netns: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        loopback: bool = False,
    ) -> None:
        versions.parse(max_version)
        self.plugin_dirs = list(plugin_dirs)
        self.cache_dir = Path(cache_dir)
        self.max_version = max_version
        self.reads_cni_versions = reads_cni_versions
        self.timeout = timeout
        self.in_netns = in_netns
        self.extra_env = dict(extra_env or {})
        self.loopback = loopback
        self.invocations: list[Invocation] = []
        self.on_invocation: Callable[[Invocation], None] | None = None

    @property
    def cni_path(self) -> str:
        return ":".join(self.plugin_dirs)

    def load(self, netconf: Mapping[str, Any]) -> Network:
        return load_network(netconf, self.max_version, self.reads_cni_versions)

    def find_plugin(self, plugin_type: str) -> str:
        """libcni `FindInPath`: the first regular file named `plugin_type` in the plugin dirs."""
        if not plugin_type or "/" in plugin_type:
            raise PluginNotFoundError(f"invalid plugin name: {plugin_type!r}")
        for directory in self.plugin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate):
                return candidate
        raise PluginNotFoundError(f'failed to find plugin "{plugin_type}" in {self.plugin_dirs}')

    # -- verbs --

    def add(
        self,
        netconf: Mapping[str, Any],
        container_id: str,
        netns: str,
        ifname: str,
        *,
        cni_args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> JSONObject:
        """libcni `AddNetworkList`: ADD each plugin in order, each getting the previous
        plugin's result as `prevResult`; the first failure stops the chain and raises
        PluginError (nothing is cached, and nothing is undone: the caller must DEL). The final
        result is cached and returned."""
        network = self.load(netconf)
        _validate_attachment(network.name, container_id, ifname)
        if self.loopback:
            self.add_loopback(container_id, netns)
        attachment = _Attachment(
            container_id, netns, ifname, _as_pairs(cni_args), capability_args or {}
        )
        return self._add(network, attachment)

    def check(
        self,
        netconf: Mapping[str, Any],
        container_id: str,
        netns: str,
        ifname: str,
        *,
        cni_args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """libcni `CheckNetworkList`: refused (VerbNotSupportedError) below 0.4.0 -- before
        `disableCheck` is even looked at, as in libcni; nothing is sent when `disableCheck`;
        otherwise CHECK each plugin in order with the cached result as `prevResult` (absent
        when nothing is cached); the first failure raises."""
        network = self.load(netconf)
        if not versions.at_least(network.cni_version, versions.VERB_SINCE["CHECK"]):
            raise VerbNotSupportedError(
                f'configuration version "{network.cni_version}" does not support the CHECK'
                " command (it needs 0.4.0 or later)"
            )
        if network.disable_check:
            return
        attachment = _Attachment(
            container_id, netns, ifname, _as_pairs(cni_args), capability_args or {}
        )
        cached = self.cached(network.name, container_id, ifname)
        prev_result = cached.result if cached else None
        for plugin in network.plugins:
            request = plugin_request(
                network,
                plugin,
                prev_result=prev_result,
                capability_args=attachment.capability_args,
            )
            self._exec("CHECK", plugin, request, attachment)

    def delete(
        self,
        netconf: Mapping[str, Any],
        container_id: str,
        netns: str,
        ifname: str,
        *,
        cni_args: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        capability_args: Mapping[str, Any] | None = None,
    ) -> None:
        """libcni `DelNetworkList`: DEL each plugin in REVERSE order; from 0.4.0 each gets the
        cached result as `prevResult` (an unreadable entry is dropped and DEL goes on without
        one); the first failure raises and keeps the cache entry; success removes it. `netns`
        may be "" (containerd's second DEL, after the sandbox is gone)."""
        network = self.load(netconf)
        attachment = _Attachment(
            container_id, netns, ifname, _as_pairs(cni_args), capability_args or {}
        )
        self._delete(network, attachment)
        if self.loopback:
            self.delete_loopback(container_id, netns)

    def gc(self, netconf: Mapping[str, Any], valid_attachments: Sequence[tuple[str, str]]) -> None:
        """libcni `GCNetworkList`. Nothing when `disableGC`. First DEL every cached attachment
        of this network that is not in `valid_attachments` ((containerID, ifname) pairs), with
        the netns, CNI_ARGS and capability args cached at ADD; then, from 1.1.0, GC every plugin
        with the valid list under `cni.dev/valid-attachments` and the legacy
        `cni.dev/attachments`. Every step runs even when an earlier one failed; all failures
        are raised together as an ExceptionGroup."""
        network = self.load(netconf)
        if network.disable_gc:
            return
        valid = {(cid, ifname) for cid, ifname in valid_attachments}
        errors: list[Exception] = []
        for stale in self.cached_attachments(network.name):
            if (stale.container_id, stale.ifname) in valid:
                continue
            attachment = _Attachment(
                stale.container_id,
                stale.netns,
                stale.ifname,
                stale.cni_args,
                stale.capability_args,
            )
            try:
                self._delete(network, attachment)
            except (PluginError, CniRuntimeError) as err:
                errors.append(err)
        if versions.at_least(network.cni_version, versions.VERB_SINCE["GC"]):
            listed = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid_attachments]
            extra = {VALID_ATTACHMENTS_KEY: listed, LEGACY_ATTACHMENTS_KEY: listed}
            for plugin in network.plugins:
                try:
                    request = _network_request(network, plugin, extra)
                    self._exec("GC", plugin, request, _NO_ATTACHMENT)
                except (PluginError, CniRuntimeError) as err:
                    errors.append(err)
        if errors:
            raise ExceptionGroup(f"GC of network '{network.name}' failed", errors)

    def status(self, netconf: Mapping[str, Any]) -> None:
        """libcni `GetStatusNetworkList`: nothing below 1.1.0; otherwise STATUS each plugin in
        order; the first failure raises PluginError (code 50/51 mean not ready)."""
        network = self.load(netconf)
        if not versions.at_least(network.cni_version, versions.VERB_SINCE["STATUS"]):
            return
        for plugin in network.plugins:
            self._exec("STATUS", plugin, _network_request(network, plugin), _NO_ATTACHMENT)

    def version(self, plugin_type: str) -> JSONObject:
        """libcni `GetVersionInfo`: the plugin's VERSION answer (stdin names our ceiling)."""
        executable = self.find_plugin(plugin_type)
        request = {"cniVersion": self.max_version}
        return self._invoke(executable, "VERSION", request, _NO_ATTACHMENT).result()

    # -- loopback, as containerd (go-cni) does it --

    def add_loopback(self, container_id: str, netns: str) -> JSONObject | None:
        """ADD the `cni-loopback` network on "lo"; None (nothing done) without a `loopback`
        plugin."""
        if not self._has_plugin("loopback"):
            return None
        attachment = _Attachment(container_id, netns, LOOPBACK_IFNAME, (), {})
        return self._add(self.load(LOOPBACK_NETWORK), attachment)

    def delete_loopback(self, container_id: str, netns: str) -> None:
        if self._has_plugin("loopback"):
            attachment = _Attachment(container_id, netns, LOOPBACK_IFNAME, (), {})
            self._delete(self.load(LOOPBACK_NETWORK), attachment)

    # -- the results cache --

    def cache_path(self, network_name: str, container_id: str, ifname: str) -> Path:
        """libcni `getCacheFilePath`: all three parts are required."""
        parts = (network_name, container_id, ifname)
        if not all(parts) or any("/" in part or part in (".", "..") for part in parts):
            raise NetconfError(
                "a cache entry needs a network name, container ID and interface name without"
                f" '/': {parts!r}"
            )
        return self.cache_dir / "results" / f"{network_name}-{container_id}-{ifname}"

    def cached(self, network_name: str, container_id: str, ifname: str) -> CachedAttachment | None:
        """The cache entry of one attachment, None if there is none; CacheError if unreadable."""
        path = self.cache_path(network_name, container_id, ifname)
        return _read_cache_file(path) if path.exists() else None

    def cached_attachments(self, network_name: str | None = None) -> list[CachedAttachment]:
        """libcni `GetCachedAttachments`: every readable entry (of one network, if named);
        entries that do not parse, or lack a network or interface name, are skipped."""
        results = self.cache_dir / "results"
        found = []
        for path in sorted(results.iterdir()) if results.is_dir() else ():
            if path.name.startswith("."):  # a half-written entry of _write_cache
                continue
            try:
                entry = _read_cache_file(path)
            except CacheError:
                continue
            if entry.network and entry.ifname and network_name in (None, entry.network):
                found.append(entry)
        return found

    # -- internals --

    def _add(self, network: Network, attachment: _Attachment) -> JSONObject:
        result: JSONObject | None = None
        for plugin in network.plugins:
            request = plugin_request(
                network, plugin, prev_result=result, capability_args=attachment.capability_args
            )
            result = self._exec("ADD", plugin, request, attachment).result()
            self._check_result_version(plugin, result)
        assert result is not None  # load_network refuses an empty plugin list
        self._write_cache(network, attachment, result)
        return result

    def _delete(self, network: Network, attachment: _Attachment) -> None:
        prev_result = None
        if versions.at_least(network.cni_version, versions.PREV_RESULT_ON_DEL_SINCE):
            prev_result = self._cached_result_or_drop(network.name, attachment)
        for plugin in reversed(network.plugins):
            request = plugin_request(
                network,
                plugin,
                prev_result=prev_result,
                capability_args=attachment.capability_args,
            )
            self._exec("DEL", plugin, request, attachment)
        self._remove_cache(network.name, attachment)

    def _exec(
        self,
        command: str,
        plugin: Mapping[str, Any],
        request: JSONObject,
        attachment: _Attachment,
    ) -> Invocation:
        executable = self.find_plugin(plugin["type"])
        invocation = self._invoke(executable, command, request, attachment)
        invocation.raise_for_error()
        return invocation

    def _invoke(
        self,
        executable: str,
        command: str,
        request: JSONObject,
        attachment: _Attachment,
    ) -> Invocation:
        invocation = invoke(
            executable,
            command,
            container_id=attachment.container_id,
            netns=attachment.netns,
            ifname=attachment.ifname,
            cni_args=attachment.cni_args,
            cni_path=self.cni_path,
            config=request,
            timeout=self.timeout,
            in_netns=self.in_netns,
            extra_env=self.extra_env,
        )
        self.invocations.append(invocation)
        if self.on_invocation is not None:
            self.on_invocation(invocation)
        return invocation

    def _check_result_version(self, plugin: Mapping[str, Any], result: JSONObject) -> None:
        """libcni parses every ADD result and knows no version newer than its own: a result
        above the ceiling fails the ADD, as "unsupported CNI result version" (libcni 1.1's
        words; the runtime then DELs the attachment)."""
        version = result.get("cniVersion")
        try:
            newer = isinstance(version, str) and not versions.at_least(self.max_version, version)
        except ValueError:
            return
        if newer:
            raise ResultVersionError(
                f'plugin type="{plugin["type"]}" failed (add): unsupported CNI result version'
                f' "{version}"'
            )

    def _has_plugin(self, plugin_type: str) -> bool:
        try:
            self.find_plugin(plugin_type)
        except PluginNotFoundError:
            return False
        return True

    def _cached_result_or_drop(
        self, network_name: str, attachment: _Attachment
    ) -> JSONObject | None:
        try:
            cached = self.cached(network_name, attachment.container_id, attachment.ifname)
        except CacheError:
            self._remove_cache(network_name, attachment)
            return None
        return cached.result if cached else None

    def _write_cache(self, network: Network, attachment: _Attachment, result: JSONObject) -> None:
        path = self.cache_path(network.name, attachment.container_id, attachment.ifname)
        entry = _cache_entry(network, attachment, result)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(entry, stream)
        os.replace(temporary, path)

    def _remove_cache(self, network_name: str, attachment: _Attachment) -> None:
        path = self.cache_path(network_name, attachment.container_id, attachment.ifname)
        path.unlink(missing_ok=True)


def _validate_attachment(network_name: str, container_id: str, ifname: str) -> None:
    """What libcni's `addNetwork` validates before exec (`pkg/utils`)."""
    if not _CNI_NAME.match(container_id):
        raise NetconfError(f"invalid container ID {container_id!r}")
    if not _CNI_NAME.match(network_name):
        raise NetconfError(f"invalid network name {network_name!r}")
    if (
        not ifname
        or len(ifname) > 15
        or ifname in (".", "..")
        or any(c in "/:" or c.isspace() for c in ifname)
    ):
        raise NetconfError(f"invalid interface name {ifname!r}")
