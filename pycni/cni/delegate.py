"""Delegating to the IPAM plugin named in `ipam.type`, as the spec says a main plugin does.

An IPAM plugin of ours that the registry (pycni.cni.registry) marks `in_process`, host-local,
is called in-process (identical behaviour: the same module serves the frozen
`pycni-host-local`; one interpreter start saved per call). Any other type is exec'd from
CNI_PATH with the same stdin and CNI_* variables, and its error code reaches the runtime
unchanged. Exec uses os.posix_spawn and pipes, not `subprocess` (which imports `signal`,
`threading`, `selectors`... on every call): see pycni.cni.spawn.
"""

from __future__ import annotations

import os

from pycni.cni import jsonio, registry
from pycni.cni.errors import CniError, Code, ConfigError, EnvError
from pycni.cni.result import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycni.cni.skel import Call


def ipam_type(call: Call) -> str:
    ipam = call.config.get("ipam")
    if not isinstance(ipam, dict) or not isinstance(ipam.get("type"), str) or not ipam["type"]:
        raise ConfigError("$.ipam.type", "is required: the IPAM plugin to get addresses from")
    return str(ipam["type"])


def ipam(call: Call, command: str) -> Result | None:
    """Run the IPAM plugin's `command` for this call; ADD returns its result."""
    kind = ipam_type(call)
    entry = registry.BY_EXECUTABLE.get(kind)
    if entry is not None and entry.in_process:
        return _in_process(call, command, entry.module)
    return _exec(call, command, kind)


def ipam_add(call: Call) -> Result:
    """The IPAM plugin's ADD, which must give at least one address."""
    result = ipam(call, "ADD")
    if result is None or not result.ips:
        raise CniError(Code.DELEGATE_FAILED, f"IPAM plugin '{ipam_type(call)}' returned no address")
    return result


def _in_process(call: Call, command: str, module_name: str) -> Result | None:
    __import__(module_name)
    import sys

    plugin = sys.modules[module_name]
    sub_call = call.for_command(command)
    conf = plugin.parse_config(sub_call)
    handler = getattr(plugin, f"cmd_{command.lower()}", None)
    if handler is None:
        return None
    result = handler(sub_call, conf)
    return result if isinstance(result, Result) else None


def _exec(call: Call, command: str, kind: str) -> Result | None:
    executable = find_plugin(call, kind)
    env = delegate_env(call.env, command)
    from pycni.cni import spawn  # only for foreign IPAM plugins

    status, out = spawn.run([executable], env, call.stdin)
    if status != 0:
        error = _decode(out)
        if isinstance(error, dict) and isinstance(error.get("code"), int):
            raise CniError(
                error["code"],
                str(error.get("msg", "")) or f"{kind} {command} failed",
                str(error.get("details", "")),
            )
        raise CniError(
            Code.DELEGATE_FAILED,
            f"IPAM plugin {kind} {command} failed with exit status {status} and no error JSON",
            out.decode(errors="replace")[-400:] or "its diagnostics are on this plugin's stderr",
        )
    if command != "ADD":
        return None
    return Result.from_json(_decode(out), f"(result of {kind})")


def delegate_env(env: Mapping[str, str], command: str) -> dict[str, str]:
    """What libcni gives a plugin: the runtime's environment with CNI_COMMAND set; minus what
    the frozen launcher added for itself (its LD_LIBRARY_PATH would load our libraries into a
    foreign plugin)."""
    out = {k: v for k, v in env.items() if not k.startswith("_PYI") and k != "LD_LIBRARY_PATH"}
    original = out.pop("LD_LIBRARY_PATH_ORIG", None)
    if original:
        out["LD_LIBRARY_PATH"] = original
    out["CNI_COMMAND"] = command
    return out


def find_plugin(call: Call, kind: str) -> str:
    if "/" in kind or kind in (".", ".."):
        raise ConfigError("$.ipam.type", f"'{kind}' must be a plugin name, not a path")
    if not call.cni_path:
        raise EnvError("CNI_PATH", f"is not set: needed to find the IPAM plugin '{kind}'")
    for directory in call.cni_path:
        candidate = os.path.join(directory, kind)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    raise CniError(
        Code.DELEGATE_FAILED,
        f"failed to find IPAM plugin '{kind}' in CNI_PATH {':'.join(call.cni_path)}",
        "install it there, or fix ipam.type",
    )


def _decode(out: bytes) -> object:
    try:
        return jsonio.loads(out)
    except jsonio.JSONError:
        return None
