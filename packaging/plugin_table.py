"""Read the plugin registry (pycni/cni/registry.py) for the build: which executables the bundle
holds, and what they run.

Used by packaging/pycni.spec (what to freeze) and by the frozen-bundle and start-up tests (what
to check). The registry module imports nothing, so it is loaded here by path, without importing
pycni (PyInstaller executes the spec before pycni is importable); its rows are checked here, so
a bad row fails the build with its reason. Standard library only.
"""

from __future__ import annotations

import importlib.util
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pycni.cni.registry import Entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = os.path.join(REPO, "pycni", "cni", "registry.py")


class TableError(ValueError):
    pass


def read(path: str = REGISTRY) -> list[Entry]:
    """The rows of the registry at `path` (the checkout's by default; the spec passes the
    installed tree's), checked."""
    spec = importlib.util.spec_from_file_location("_pycni_registry", path)
    if spec is None or spec.loader is None:
        raise TableError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # a missing file, a syntax error, a bad row
        raise TableError(f"{path}: cannot be loaded: {type(err).__name__}: {err}") from err
    entries: list[Entry] = list(getattr(module, "PLUGINS", ()))
    if not entries:
        raise TableError(f"{path} lists no plugins (PLUGINS)")
    seen_types: set[str] = set()
    seen_modules: set[str] = set()
    for entry in entries:
        where = f"{path}: {entry!r}"
        if not entry.cni_type or not all(
            c.isascii() and (c.isalnum() or c == "-") for c in entry.cni_type
        ):
            raise TableError(f"{where}: the name must be letters, digits and '-'")
        for name in (entry.module, *sorted(entry.allowed_imports)):
            if not all(part.isidentifier() for part in name.split(".")):
                raise TableError(f"{where}: {name!r} is not a dotted module name")
        if not entry.schema or "/" in entry.schema or entry.schema.startswith("."):
            raise TableError(f"{where}: schema {entry.schema!r} must be a schema's name")
        if entry.in_process and not entry.ipam:
            raise TableError(
                f"{where}: in_process without ipam: only IPAM plugins are delegated to"
            )
        if entry.cni_type in seen_types:
            raise TableError(f"{where}: name {entry.cni_type!r} is listed twice")
        if entry.module in seen_modules:
            raise TableError(f"{where}: module {entry.module!r} is listed twice")
        seen_types.add(entry.cni_type)
        seen_modules.add(entry.module)
    return entries
