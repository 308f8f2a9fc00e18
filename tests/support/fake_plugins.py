"""Fake CNI plugins, for pycni.lab.runtime's own logic (tests/lab/test_runtime.py).

Fake plugins are one small Python script installed under several names. Each call appends a
JSON line to the file named by its config's `log` (plugin name, command, environment as the
process received it, working directory, pid, netns, stdin config), then behaves as its config's
`behave` says for that command:

    ok            ADD prints prevResult (or an empty result) plus `ips: [{"address": <address>}]`
                  when the config has an `address`; VERSION prints the supported versions
                  (`supportedVersions` in the config, if any); DEL/CHECK/GC/STATUS print nothing.
    error         prints an error object (code `errorCode`, default 7), exits 1
    error-exit-0  prints the same error object, exits 0
    silent-failure  writes to stderr only, exits 2
    garbage       prints text that is not JSON, exits 0
    chatty        prints a JSON object, exits 0 (wrong for DEL/CHECK/GC/STATUS)
    hang          sleeps for a minute
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE_PLUGIN = r"""#!@PYTHON@ -IS
import json, os, sys, time

name = os.path.basename(sys.argv[0])
command = os.environ.get("CNI_COMMAND", "")
raw = sys.stdin.read()
try:
    config = json.loads(raw)
except ValueError:
    config = {}
if not isinstance(config, dict):
    config = {}
with open("/proc/self/environ", "rb") as f:  # as exec'd: Python may add LC_CTYPE to os.environ
    env = dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if item)
if config.get("log"):
    with open(config["log"], "a") as f:
        f.write(json.dumps({
            "plugin": name, "command": command, "env": env, "cwd": os.getcwd(),
            "pid": os.getpid(), "netns": os.readlink("/proc/self/ns/net"), "config": config,
        }) + "\n")
version = config.get("cniVersion", "1.0.0")
behaviour = config.get("behave", {}).get(command, "ok")
error = {"cniVersion": version, "code": config.get("errorCode", 7),
         "msg": f"{name} refuses {command}", "details": "as configured"}
if behaviour == "ok":
    if command == "ADD":
        result = dict(config.get("prevResult") or {"interfaces": [], "ips": []})
        result["cniVersion"] = version
        if "address" in config:
            result["ips"] = [*result.get("ips", []), {"address": config["address"]}]
        print(json.dumps(result))
    elif command == "VERSION":
        supported = config.get("supportedVersions",
                               ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        print(json.dumps({"cniVersion": version, "supportedVersions": supported}))
elif behaviour in ("error", "error-exit-0"):
    print(json.dumps(error))
    sys.exit(1 if behaviour == "error" else 0)
elif behaviour == "silent-failure":
    sys.stderr.write(f"{name}: something broke\n")
    sys.exit(2)
elif behaviour == "garbage":
    print("this is not JSON")
elif behaviour == "chatty":
    print(json.dumps({"cniVersion": version, "said": "hello"}))
elif behaviour == "hang":
    time.sleep(60)
"""


@dataclass
class FakePlugins:
    """A directory of fake plugins and the log they share."""

    directory: Path
    log: Path

    def conf(self, plugin_type: str, **fields: Any) -> dict[str, Any]:
        """A plugin entry for a conflist: `type`, the shared `log`, and `fields`."""
        return {"type": plugin_type, "log": str(self.log), **fields}

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def sequence(self) -> list[tuple[str, str]]:
        """(plugin, command) of every call so far, in order."""
        return [(call["plugin"], call["command"]) for call in self.calls()]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)


def install(directory: Path, log: Path, *names: str) -> FakePlugins:
    """Fake plugins named `names` in `directory` (made if need be), logging to `log`."""
    directory.mkdir(exist_ok=True)
    script = FAKE_PLUGIN.replace("@PYTHON@", sys.executable)
    for name in names:
        path = directory / name
        path.write_text(script)
        path.chmod(0o755)
    return FakePlugins(directory, log)
