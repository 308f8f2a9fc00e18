"""Fail the build when the frozen bundle lacks a module that pycni code imports.

PyInstaller writes what it could not bundle to `warn-<spec>.txt`, one line per module:

    missing module named X - imported by A (top-level), B (delayed, conditional)
    excluded module named Y - imported by C (top-level)

Most lines are the standard library's own optional imports (on other platforms, or behind
try/except) and are harmless. A line whose importers include a pycni module or an entry script
(pycni-<type>) is not: that import would fail inside the frozen executable, on whatever path
reaches it. The spec excludes heavy packages on purpose (packaging/pycni.spec, EXCLUDES); this
check proves that nothing of ours needs one of them.

Usage: python packaging/check_imports.py build/pyinstaller/pycni/warn-pycni.txt
"""

from __future__ import annotations

import sys


def ours(importer: str) -> bool:
    name = importer.split(" ", 1)[0]
    return name == "pycni" or name.startswith(("pycni.", "pycni-"))


def problems(warn_text: str) -> list[str]:
    found = []
    for line in warn_text.splitlines():
        kind, sep, rest = line.partition(" module named ")
        if not sep or kind not in ("missing", "excluded"):
            continue
        module, _, importers = rest.partition(" - imported by ")
        needing = [i for i in importers.split(", ") if ours(i)]
        if needing:
            found.append(f"{kind} module {module!r} is imported by {', '.join(needing)}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} WARN_FILE", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    found = problems(text)
    if found:
        print(
            f"check_imports: the frozen bundle lacks modules that pycni imports (from {argv[1]}):",
            file=sys.stderr,
        )
        for line in found:
            print(f"  {line}", file=sys.stderr)
        print(
            "  Code that a plugin bundles must not import these, not even lazily: move the"
            " import out of the plugin's modules, or (if a plugin really needs the module)"
            " remove it from EXCLUDES in packaging/pycni.spec.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
