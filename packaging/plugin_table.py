"""Read packaging/plugins.table: which executables the bundle holds, and what they run.

Used by packaging/pycni.spec (what to freeze), the frozen-bundle and start-up tests (what to
check) and bench/startup.py. Standard library only: PyInstaller executes the spec with it.
"""

from __future__ import annotations

import os

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins.table")


class TableError(ValueError):
    pass


class Entry:
    """One line: the CNI type, the module, the budget exceptions."""

    __slots__ = ("allowed_imports", "cni_type", "module")

    def __init__(self, cni_type: str, module: str, allowed_imports: frozenset[str]) -> None:
        self.cni_type = cni_type
        self.module = module
        self.allowed_imports = allowed_imports

    @property
    def executable(self) -> str:
        return f"pycni-{self.cni_type}"

    def __repr__(self) -> str:
        return f"Entry({self.cni_type!r}, {self.module!r}, {sorted(self.allowed_imports)!r})"


def read(path: str = TABLE) -> list[Entry]:
    entries: list[Entry] = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{path}:{lineno}"
            fields = line.split()
            if len(fields) not in (2, 3):
                raise TableError(f"{where}: expected '<type> <module> [<imports>]', found {line!r}")
            cni_type, module = fields[0], fields[1]
            allowed = frozenset(fields[2].split(",")) if len(fields) == 3 else frozenset()
            if not all(c.isascii() and (c.isalnum() or c == "-") for c in cni_type):
                raise TableError(f"{where}: type {cni_type!r} must be letters, digits and '-'")
            for name in (module, *allowed):
                if not all(part.isidentifier() for part in name.split(".")):
                    raise TableError(f"{where}: {name!r} is not a dotted module name")
            if any(e.cni_type == cni_type for e in entries):
                raise TableError(f"{where}: type {cni_type!r} is listed twice")
            entries.append(Entry(cni_type, module, allowed))
    if not entries:
        raise TableError(f"{path} lists no plugins")
    return entries
