"""Paths of the checkout the tests read, and modules loaded from a file path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "dist" / "cni" / "bin"  # packaging/build.sh's frozen plugins
AGENT_DIR = REPO / "dist" / "pycni-agent"  # packaging/build.sh's frozen agent
REFERENCE = Path("/usr/lib/cni")  # the Go reference plugins (Debian containernetworking-plugins)
CONF = REPO / "conf"
KIND = CONF / "kind"  # the conflists a kind user installs
EXAMPLES = CONF / "examples"


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """A Python file loaded by path, as module `name` (default: the file's stem). For scripts
    that are not in a package (packaging/*.py: `packaging` is also a PyPI package's name)."""
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plugin_table() -> ModuleType:
    """packaging/plugin_table.py: the plugins the build freezes."""
    return load_module(REPO / "packaging" / "plugin_table.py")
