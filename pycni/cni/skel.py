"""The protocol boundary: env + stdin in, a typed call to a plugin, result or error JSON out.

Everything the CNI spec says about the invocation protocol lives here, once:
- VERSION answers from a constant (no imports beyond this module's);
- stdin is read (code 5) and decoded (code 6); cniVersion checked (code 1); the verb gated on it
  (CHECK from 0.4.0, STATUS and GC from 1.1.0; code 1); the CNI_* variables validated (3, 4);
- the plugin parses its config (7, 2) and runs the verb;
- ADD's result is printed in the request's cniVersion; DEL, CHECK, STATUS and GC print nothing;
- every exception becomes the spec's error JSON `{cniVersion, code, msg, details}` on stdout
  with exit status 1; diagnostics and tracebacks go to stderr and, if the config names one, to
  `logFile` (pycni.cni.log: the plugins' own diagnostics go there too).

Plugins never read os.environ, print, or exit: `run` takes env and streams as values.
"""

from __future__ import annotations

import os
import sys

from pycni.cni import jsonio, versions
from pycni.cni.errors import CniError, Code, ConfigError, EnvError, VersionError
from pycni.cni.log import Log
from pycni.cni.record import Record
from pycni.cni.result import Result
from pycni.validators import formats as schema_formats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO, TextIO

    from pycni.cni.plugin import Plugin

VERBS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
MAX_STDIN = 1 << 20  # 1 MiB: a network config is a few hundred bytes; refuse to buffer a flood
K8S_ARGS = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


class Attachment(Record):
    """A (container ID, interface name) pair: the key of everything a plugin creates."""

    __slots__ = ("container_id", "ifname")
    container_id: str
    ifname: str

    def __init__(self, container_id: str, ifname: str) -> None:
        self._init(container_id=container_id, ifname=ifname)


class Call(Record):
    """One invocation, validated: what the runtime asked for, typed."""

    __slots__ = (
        "args",
        "cni_args",
        "cni_path",
        "cni_version",
        "command",
        "config",
        "container_id",
        "env",
        "ifname",
        "name",
        "netns",
        "prev_result",
        "runtime_config",
        "stdin",
        "valid_attachments",
    )
    command: str
    cni_version: str
    name: str
    container_id: str
    netns: str
    ifname: str
    cni_args: dict[str, str]
    cni_path: list[str]
    config: dict[str, object]
    stdin: bytes
    prev_result: Result | None
    runtime_config: dict[str, object]
    args: dict[str, object]
    valid_attachments: list[Attachment] | None
    env: Mapping[str, str]

    def __init__(self, **fields: object) -> None:
        self._init(**fields)

    @property
    def attachment(self) -> Attachment:
        return Attachment(self.container_id, self.ifname)

    def for_command(self, command: str) -> Call:
        """The same call with another verb (a main plugin driving its IPAM delegate)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields["command"] = command
        return Call(**fields)


def main(plugin: Plugin) -> None:
    """Serve one call of the process (see pycni.cni.entry for the frozen executables)."""
    status = run(
        plugin, env=os.environ, stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, stderr=sys.stderr
    )
    sys.stdout.flush()
    sys.exit(status)


def run(
    plugin: Plugin, *, env: Mapping[str, str], stdin: BinaryIO, stdout: BinaryIO, stderr: TextIO
) -> int:
    """Serve one CNI invocation; returns the process exit status."""
    log = Log(stderr, plugin.NAME)
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        stdout.write(versions.VERSION_ANSWER.encode())
        return 0
    error_version = versions.CURRENT
    log.context = command
    log.activate()  # plugins and Rollback write through pycni.cni.log for the rest of the call
    try:
        if command not in VERBS:
            raise EnvError(
                "CNI_COMMAND",
                f"'{command}' is not a CNI command; expected one of VERSION, {', '.join(VERBS)}"
                if command
                else "is not set",
            )
        raw = _read_stdin(stdin)
        config = _decode(raw)
        version = _config_version(config, plugin)
        error_version = version
        log.open_file(config.get("logFile"))
        _gate(command, version)
        call = _make_call(command, version, config, raw, env, plugin)
        log.context = f"{command} {call.container_id}/{call.ifname}".rstrip("/ ")
        conf = plugin.parse_config(call)
        handler = getattr(plugin, f"cmd_{command.lower()}", None)
        if handler is None:
            if command in ("STATUS", "GC"):  # the plugin has nothing to check or collect
                return 0
            raise CniError(Code.INTERNAL, f"plugin {plugin.NAME} does not implement {command}")
        result = handler(call, conf)
        if command == "ADD":
            if not isinstance(result, Result):
                raise CniError(Code.INTERNAL, f"plugin {plugin.NAME} returned no result for ADD")
            stdout.write((jsonio.dumps(result.to_json(version)) + "\n").encode())
        return 0
    except CniError as err:
        log.write(f"error {err.code}: {err}")
        _print_error(stdout, error_version, err.code, err.msg, err.details)
    except Exception as err:  # a bug: say so on stdout, tell the whole story in the log
        import traceback

        log.write("unexpected failure:\n" + traceback.format_exc())
        _print_error(
            stdout,
            error_version,
            Code.INTERNAL,
            f"internal error in {plugin.NAME}: {type(err).__name__}: {err}",
            "a traceback was written to the plugin's stderr (and logFile, if configured)",
        )
    except BaseException:  # KeyboardInterrupt, SystemExit from a bug: still answer in JSON
        _print_error(stdout, error_version, Code.INTERNAL, f"{plugin.NAME} was interrupted", "")
    finally:
        log.close()
    return 1


def _print_error(stdout: BinaryIO, version: str, code: int, msg: str, details: str) -> None:
    error: dict[str, object] = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        error["details"] = details
    stdout.write((jsonio.dumps(error) + "\n").encode())


# --- input ---------------------------------------------------------------------------------


def _read_stdin(stdin: BinaryIO) -> bytes:
    try:
        data = stdin.read(MAX_STDIN + 1)
    except OSError as err:
        raise CniError(
            Code.IO_FAILURE, f"failed to read the network config from stdin: {err}"
        ) from err
    if data is None:
        raise CniError(Code.IO_FAILURE, "failed to read the network config from stdin: no data")
    if len(data) > MAX_STDIN:
        raise CniError(
            Code.DECODE_FAILURE, f"network config on stdin is larger than {MAX_STDIN} bytes"
        )
    return bytes(data)


def _decode(raw: bytes) -> dict[str, object]:
    if not raw.strip():
        raise CniError(Code.DECODE_FAILURE, "no network config on stdin (expected a JSON object)")
    try:
        config = jsonio.loads(raw)
    except jsonio.JSONError as err:
        raise CniError(Code.DECODE_FAILURE, f"failed to decode the network config: {err}") from None
    if not isinstance(config, dict):
        raise CniError(
            Code.DECODE_FAILURE,
            f"the network config must be a JSON object, found {type(config).__name__}",
        )
    return config


def _config_version(config: dict[str, object], plugin: Plugin) -> str:
    supported = getattr(plugin, "SUPPORTED_VERSIONS", versions.SUPPORTED)
    version = config.get("cniVersion")
    if version is None:
        raise VersionError(
            "incompatible CNI versions: the network config has no cniVersion (that means 0.1.0,"
            f" which {plugin.NAME} does not support); supported: {', '.join(supported)}",
            "set cniVersion in the network config",
        )
    if not isinstance(version, str):
        raise ConfigError("$.cniVersion", f"expected a string, found {type(version).__name__}")
    if version not in supported:
        raise VersionError(
            f"incompatible CNI versions: config is '{version}', {plugin.NAME} supports"
            f" {', '.join(supported)}",
            "use one of the supported versions in cniVersion",
        )
    return version


def _gate(command: str, version: str) -> None:
    since = versions.VERB_SINCE[command]
    if not versions.at_least(version, since):
        raise VersionError(
            f"config version does not allow {command}: cniVersion is {version}, {command}"
            f" needs {since} or later",
        )


def _make_call(
    command: str,
    version: str,
    config: dict[str, object],
    raw: bytes,
    env: Mapping[str, str],
    plugin: Plugin,
) -> Call:
    container_id = netns = ifname = ""
    if command in ("ADD", "DEL", "CHECK"):
        container_id = _required(env, "CNI_CONTAINERID")
        if not _is_cni_name(container_id):
            raise EnvError(
                "CNI_CONTAINERID",
                f"'{container_id}' is invalid: it must start with a letter or digit and hold only"
                " letters, digits, '_', '.' and '-'",
            )
        ifname = _required(env, "CNI_IFNAME")
        _validate_ifname(ifname)
        netns = env.get("CNI_NETNS", "")
        if command != "DEL":
            if not netns:
                raise EnvError("CNI_NETNS", f"is not set (required for {command})")
            if not os.path.exists(netns):
                raise CniError(
                    Code.UNKNOWN_CONTAINER,
                    f"container network namespace '{netns}' does not exist",
                    "CNI_NETNS",
                )
    name = config.get("name")
    if name is None:
        raise ConfigError("$.name", "is required: the network's name")
    if not isinstance(name, str) or not _is_cni_name(name):
        raise ConfigError(
            "$.name",
            f"{name!r} is not a valid network name: it must start with a letter or digit and"
            " hold only letters, digits, '_', '.' and '-'",
        )
    prev_result = None
    raw_prev = config.get("prevResult")
    if raw_prev is not None and (
        command != "DEL" or versions.at_least(version, versions.PREV_RESULT_ON_DEL_SINCE)
    ):
        prev_result = Result.from_json(raw_prev, "$.prevResult")
    return Call(
        command=command,
        cni_version=version,
        name=name,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        cni_args=parse_cni_args(env.get("CNI_ARGS", ""), getattr(plugin, "CNI_ARGS_KEYS", ())),
        cni_path=[p for p in env.get("CNI_PATH", "").split(":") if p],
        config=config,
        stdin=raw,
        prev_result=prev_result,
        runtime_config=_canonical_capabilities(_object_or_empty(config, "runtimeConfig")),
        args=_object_or_empty(config, "args"),
        valid_attachments=_valid_attachments(config) if command == "GC" else None,
        env=env,
    )


def _required(env: Mapping[str, str], variable: str) -> str:
    value = env.get(variable, "")
    if not value:
        raise EnvError(variable, "is not set")
    return value


def _is_cni_name(text: str) -> bool:
    return schema_formats.cni_name_problem(text) is None


def _validate_ifname(ifname: str) -> None:
    problem = schema_formats.ifname_problem(ifname)
    if problem:
        raise EnvError("CNI_IFNAME", problem)


def parse_cni_args(text: str, plugin_keys: tuple[str, ...] = ()) -> dict[str, str]:
    """CNI_ARGS "K=V;K2=V2". Unknown keys are an error unless IgnoreUnknown is true."""
    pairs: dict[str, str] = {}
    for item in text.split(";") if text else ():
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value:
            raise EnvError("CNI_ARGS", f"'{item}' is not a KEY=VALUE pair")
        pairs[key] = value
    ignore_unknown = pairs.get("IgnoreUnknown", "").lower() in ("1", "t", "true")
    known = ("IgnoreUnknown", *K8S_ARGS, *plugin_keys)
    unknown = [k for k in pairs if k not in known]
    if unknown and not ignore_unknown:
        raise EnvError(
            "CNI_ARGS",
            f"unknown key '{unknown[0]}' (known: {', '.join(known)});"
            " add IgnoreUnknown=1 to ignore keys this plugin does not know",
        )
    return pairs


# Capability arguments as runtimes send them. containerd (go-cni, 1.6 to 2.1) declares
# PortMapping, BandWidth, IPRanges and DNS without JSON tags, so it marshals them with Go's
# field names ("HostPort", "IngressRate"); the Go plugins read them because encoding/json
# matches field names case-insensitively. These are the conventions' spellings
# (CONVENTIONS.md), and each capability's shape: "items" a list of objects, "object" one object,
# "sets" a list of lists of objects.
CAPABILITY_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "portMappings": ("items", ("hostPort", "containerPort", "protocol", "hostIP")),
    "bandwidth": ("object", ("ingressRate", "ingressBurst", "egressRate", "egressBurst")),
    "ipRanges": ("sets", ("subnet", "rangeStart", "rangeEnd", "gateway")),
    "dns": ("object", ("servers", "searches", "options", "domain")),
}


def _canonical_capabilities(runtime_config: dict[str, object]) -> dict[str, object]:
    """`runtime_config` with the known capabilities' keys in the conventions' spelling, matched
    as Go matches them: an exact name, else the same letters in another case; of two that
    match one field, the later wins (encoding/json's order). Rewritten in place, so the config
    the plugin validates says the same. Keys that match no field are left for the schema."""
    for capability, (shape, fields) in CAPABILITY_KEYS.items():
        value = runtime_config.get(capability)
        if shape == "object":
            _canonical_keys(value, fields)
            continue
        for item in value if isinstance(value, list) else ():
            if shape == "items":
                _canonical_keys(item, fields)
            elif isinstance(item, list):
                for member in item:
                    _canonical_keys(member, fields)
    return runtime_config


def _canonical_keys(obj: object, fields: tuple[str, ...]) -> None:
    if not isinstance(obj, dict) or all(key in fields for key in obj):
        return  # the common case (the conventions' spelling): nothing to do
    folded = {name.lower(): name for name in fields}
    out: dict[str, object] = {}
    for key, value in obj.items():
        name = (
            key if key in fields else folded.get(key.lower(), key) if isinstance(key, str) else key
        )
        out.pop(name, None)  # the later of two spellings wins, and takes its place
        out[name] = value
    obj.clear()
    obj.update(out)


def _object_or_empty(config: dict[str, object], key: str) -> dict[str, object]:
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"$.{key}", f"expected an object, found {type(value).__name__}")
    return value


def _valid_attachments(config: dict[str, object]) -> list[Attachment]:
    for key in VALID_ATTACHMENTS_KEYS:
        if key in config:
            break
    else:
        raise ConfigError(
            f'$["{VALID_ATTACHMENTS_KEYS[0]}"]',
            "is required for GC: the list of attachments that are still in use",
        )
    raw = config[key]
    path = f'$["{key}"]'
    if not isinstance(raw, list):
        raise ConfigError(path, "expected an array of {containerID, ifname} objects")
    out = []
    for n, item in enumerate(raw):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("containerID"), str)
            and isinstance(item.get("ifname"), str)
        ):
            raise ConfigError(f"{path}[{n}]", "expected an object with containerID and ifname")
        out.append(Attachment(item["containerID"], item["ifname"]))
    return out
