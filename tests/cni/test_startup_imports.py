"""The start-up budget, checked deterministically: which modules a plugin call loads.

Every CNI call is a fresh process, so every module on the call path is paid for on every ADD,
DEL, CHECK, STATUS (containerd: every 5 s) and VERSION. Timing is noisy; the set of modules
loaded is not. Each check runs one call in a fresh interpreter the way the frozen executable
does -- `python -I -S` (no site, so nothing is preloaded by .pth files or the editable finder),
the plugin imported as its entry script imports it, then `pycni.cni.skel.run` with the call's
environment and the config on stdin -- and then reads `sys.modules`.

- No call may load a FORBIDDEN module (each costs milliseconds; see pycni/cni/jsonio.py, ip.py,
  record.py, errors.py). A plugin that needs one on its path (`subprocess` to exec an IPAM
  delegate) says so in its row of the plugin registry, pycni/cni/registry.py (allowed_imports).
- VERSION (the frozen executable's path: import the plugin, answer from a constant) may load no
  module outside pycni beyond what `import pycni.cni.skel` loads.

The sources are imported through a throwaway directory of symlinks laid out as the installed
distribution (pyproject's [tool.setuptools] packages and package-dir), so the check needs no
build.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.ci import unavailable
from tests.support.paths import REPO, plugin_table

# Modules no per-call path may load (the package and its submodules), with what they cost.
FORBIDDEN = {
    "re": "pulls enum, functools and the sre compiler",
    "enum": "~4 ms",
    "typing": "~9 ms",
    "dataclasses": "~13 ms; pulls inspect",
    "json": "~8 ms; use pycni.cni.jsonio (json.decoder only on error paths)",
    "ipaddress": "~4 ms; use pycni.cni.ip",
    "socket": "~7.5 ms; use _socket",
    "logging": "pulls re, threading, traceback",
    "inspect": "pulls ast, dis, tokenize",
    "ast": "large",
    "asyncio": "~70 ms",
    "pyroute2": "150-280 ms",
    "jsonschema": "120-130 ms; use the generated pycni.validators",
    "subprocess": "only for plugins that exec a delegate (the registry's allowed_imports)",
    "traceback": "error paths only (pycni.cni.skel imports it on an unexpected failure)",
}

DRIVER = r"""
import io, os, sys
root, mode, module = sys.argv[1:4]
env = dict(arg.split("=", 1) for arg in sys.argv[4:])
sys.path.insert(0, root)
import pycni.cni.skel
if mode == "call":
    # Exactly what the frozen entry script runs: pycni.cni.entry.main("<module>").
    os.environ.clear()
    os.environ.update(env)
    real_stdout, real_stderr = sys.stdout, sys.stderr
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sys.stderr = io.StringIO()
    try:
        import pycni.cni.entry
        pycni.cni.entry.main(module)
    except SystemExit as exit:
        status = exit.code
    sys.stdout.flush()
    out, err = sys.stdout.buffer.getvalue(), sys.stderr.getvalue()
    sys.stdout, sys.stderr = real_stdout, real_stderr
    print(status)
    print(repr(out))
    print(repr(err))
print(" ".join(sorted(sys.modules)))
"""


PLUGINS = plugin_table().read()


class Loaded:
    """What one call loaded: the modules, the call's outcome, who imported what."""

    def __init__(
        self,
        modules: set[str],
        importers: dict[str, str],
        status: int | None = None,
        stdout: bytes = b"",
        stderr: str = "",
    ) -> None:
        self.modules = modules
        self.importers = importers
        self.status = status
        self.stdout = stdout
        self.stderr = stderr

    def chain(self, module: str) -> str:
        """'fcntl <- pycni.ipam.host_local.store <- pycni.ipam.host_local.plugin'."""
        if module not in self.importers:
            return f"{module} (imported inside a function, during the call)"
        links = [module]
        while links[-1] in self.importers and len(links) < 20:
            links.append(self.importers[links[-1]])
        return " <- ".join(links)


@pytest.fixture(scope="session")
def installed_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources as the wheel lays them out, as symlinks: every package in pyproject's
    [tool.setuptools] `packages`, found through its `package-dir` mapping."""
    root = tmp_path_factory.mktemp("layout")
    with open(REPO / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools.get("package-dir", {})

    def source(package: str) -> Path:
        parts = package.split(".")
        for n in range(len(parts), -1, -1):
            key = ".".join(parts[:n])
            if key in mapping:
                return REPO.joinpath(mapping[key], *parts[n:])
        return REPO.joinpath(*parts)

    for package in setuptools["packages"]:
        target = root.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for child in source(package).iterdir():
            if child.is_file():
                target.joinpath(child.name).symlink_to(child)
    return root


def load(
    layout: Path,
    module: str = "",
    env: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Loaded:
    """Run one call (or, without `module`, just `import pycni.cni.skel`) in a fresh interpreter."""
    mode = "call" if module else "skel"
    argv = [sys.executable, "-I", "-S", "-B", "-X", "importtime", "-c", DRIVER]
    argv += [str(layout), mode, module, *(f"{k}={v}" for k, v in (env or {}).items())]
    done = subprocess.run(
        argv,
        input=json.dumps(config).encode() if config is not None else b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"the driver failed:\n{stderr}"
    lines = done.stdout.decode().splitlines()
    modules = set(lines[-1].split())
    if mode == "skel":
        return Loaded(modules, _importers(stderr))
    out, err = ast.literal_eval(lines[1]), ast.literal_eval(lines[2])
    return Loaded(modules, _importers(stderr), int(lines[0]), out, err)


def _importers(importtime: str) -> dict[str, str]:
    """Who imported whom, from `-X importtime`: a nested import is listed before its importer,
    indented two spaces more."""
    stack: list[tuple[int, str]] = []
    importers: dict[str, str] = {}
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        field = line.rsplit("|", 1)[1]
        name = field.strip()
        if name == "imported package":  # the header line
            continue
        depth = len(field) - len(field.lstrip())
        while stack and stack[-1][0] > depth:
            importers[stack.pop()[1]] = name
        stack.append((depth, name))
    return importers


def forbidden_loaded(loaded: Loaded, allowed: frozenset[str] = frozenset()) -> list[str]:
    """One line per forbidden package loaded: how it got imported, and what it costs."""
    packages = {name.split(".")[0] for name in loaded.modules}
    return [
        f"{loaded.chain(name)}  [{FORBIDDEN[name]}]"
        for name in sorted(packages & FORBIDDEN.keys() - allowed)
    ]


def test_table_exceptions_name_forbidden_modules() -> None:
    for entry in PLUGINS:
        unknown = entry.allowed_imports - FORBIDDEN.keys()
        assert not unknown, (
            f"pycni/cni/registry.py allows {entry.executable} {sorted(unknown)}, which are not"
            " budgeted here: list only names from FORBIDDEN"
        )


# --- the protocol boundary alone ---------------------------------------------------------


def test_skel_alone_loads_nothing_forbidden(installed_layout: Path) -> None:
    loaded = load(installed_layout)
    assert not forbidden_loaded(loaded), "\n".join(forbidden_loaded(loaded))


# --- every plugin's VERSION --------------------------------------------------------------


@pytest.mark.parametrize("entry", PLUGINS, ids=lambda e: e.executable)
def test_version_loads_nothing_beyond_skel(installed_layout: Path, entry: Any) -> None:
    skel = load(installed_layout)
    loaded = load(installed_layout, entry.module, {"CNI_COMMAND": "VERSION"})
    assert loaded.status == 0, loaded.stderr
    assert json.loads(loaded.stdout)["supportedVersions"], loaded.stdout

    assert not forbidden_loaded(loaded), "VERSION loads forbidden modules:\n" + "\n".join(
        forbidden_loaded(loaded)
    )
    extra = sorted(
        m for m in loaded.modules - skel.modules if m != "pycni" and not m.startswith("pycni.")
    )
    assert not extra, (
        f"{entry.executable} VERSION loads modules that `import pycni.cni.skel` does not"
        " (the entry script imports the plugin module before VERSION is answered, so its"
        " top-level imports are paid by every VERSION call; import them where they are used):\n"
        + "\n".join(loaded.chain(m) for m in extra)
    )


# --- a whole host-local attachment --------------------------------------------------------


HOST_LOCAL = next((e for e in PLUGINS if e.cni_type == "host-local"), None)


def _host_local_config(data_dir: Path, version: str) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "budget",
        "type": "pycni-host-local",
        "ipam": {
            "type": "pycni-host-local",
            "ranges": [[{"subnet": "10.123.0.0/24"}], [{"subnet": "fd12:3::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(data_dir),
        },
    }


def test_host_local_attachment_stays_within_budget(installed_layout: Path, tmp_path: Path) -> None:
    if HOST_LOCAL is None:
        unavailable("host-local is not in packaging/plugins.table")
    conf = _host_local_config(tmp_path / "leases", "1.1.0")
    attachment = {
        "CNI_CONTAINERID": "budget-1",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/proc/self/ns/net",  # exists; host-local never enters it
        "CNI_PATH": "/opt/cni/bin",
    }
    add = load(installed_layout, HOST_LOCAL.module, {"CNI_COMMAND": "ADD", **attachment}, conf)
    assert add.status == 0, f"ADD failed: {add.stdout!r}\n{add.stderr}"
    with_prev = {**conf, "prevResult": json.loads(add.stdout)}
    gc_conf = {**conf, "cni.dev/valid-attachments": [{"containerID": "budget-1", "ifname": "eth0"}]}
    calls: list[tuple[str, dict[str, str], dict[str, Any]]] = [
        ("CHECK", attachment, with_prev),
        ("STATUS", {}, conf),
        ("GC", {}, gc_conf),
        ("DEL", attachment, with_prev),
        ("DEL", attachment, with_prev),  # again: the lease is gone, still success
    ]
    failures = [f"ADD: {line}" for line in forbidden_loaded(add, HOST_LOCAL.allowed_imports)]
    for command, env, config in calls:
        loaded = load(installed_layout, HOST_LOCAL.module, {"CNI_COMMAND": command, **env}, config)
        assert loaded.status == 0, f"{command} failed: {loaded.stdout!r}\n{loaded.stderr}"
        failures += [
            f"{command}: {line}" for line in forbidden_loaded(loaded, HOST_LOCAL.allowed_imports)
        ]
    assert not failures, "host-local loads forbidden modules:\n" + "\n".join(failures)
