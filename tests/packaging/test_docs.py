"""The documentation (README.md, docs/) against the tree it describes.

- Each plugin page's key table is what packaging/gen_docs.py makes of the plugin's schema: the
  schema is the one source, and a page that disagrees fails here.
- Every relative link resolves to a file, and its #anchor to a heading there.
- Every repository path and pycni module named in `code` exists, so a moved module or test
  shows up here instead of in a reader's 404.
- The pages speak to a reader on their own machine: the project's CI box is "the CI VM", never
  "this machine".
- The README stays a front page, and keeps the two set-up commands a newcomer pastes.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
README_MAX_LINES = 200
SETUP_COMMANDS = (
    "bash packaging/setup.sh && packaging/build.sh && .venv/bin/pycni demo",
    "bash packaging/setup.sh && packaging/test.sh",
)
# The folders a `path` in the docs may start with (dist/ and build/ are made by the build).
REPO_FOLDERS = ("pycni", "plugins", "ipam", "tests", "packaging", "conf", "bench", "benchmarks")
# Facts about the project's CI or development box, worded as if the reader sat at it.
MACHINE_RELATIVE = re.compile(
    r"\bthis (machine|vm|kernel|cpu|host)\b|\b(verified|measured|timings|tested) here\b",
    re.IGNORECASE,
)

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_MODULE = re.compile(r"pycni(\.[A-Za-z_]\w*)+")
PACKAGES = {p.stem for p in (REPO / "pycni").iterdir() if p.suffix == ".py" or p.is_dir()}


def _gen_docs() -> ModuleType:
    """packaging/gen_docs.py, loaded by path (`packaging` is also a PyPI package's name)."""
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "packaging" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of `page` outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").split("\n"), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives `page`'s headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose(page):
        heading = re.match(r"#{1,6} (.+)", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_plugin_pages_match_their_schemas() -> None:
    problems = _gen_docs().problems()
    assert not problems, "\n".join(problems) + "\nrun: python packaging/gen_docs.py"


def test_a_page_whose_table_drifted_from_its_schema_is_caught() -> None:
    gen_docs = _gen_docs()
    page = (REPO / "docs" / "plugins" / "bridge.md").read_text(encoding="utf-8")
    schema = gen_docs._load(gen_docs.schema_path("bridge"))
    block = gen_docs.table(schema, "conf/schemas/bridge.schema.json")
    assert gen_docs.render(page, block) == page
    described = schema["properties"]["hairpinMode"]["description"]
    schema["properties"]["hairpinMode"]["description"] = described + " Changed."
    changed = gen_docs.table(schema, "conf/schemas/bridge.schema.json")
    assert gen_docs.render(page, changed) != page
    assert gen_docs.render(page.replace(gen_docs.END, ""), block) is None


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for number, line in _prose(page):
            for target in _LINK.findall(line):
                if re.match(r"[a-z]+:", target):  # https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                linked = (page.parent / path).resolve() if path else page
                where = f"{_name(page)}:{number}: {target}"
                if not linked.exists():
                    broken.append(f"{where}: no such file")
                elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                    broken.append(f"{where}: no heading with that anchor in {_name(linked)}")
    assert not broken, "\n".join(broken)


def _expand(path: str) -> list[str]:
    """`conf/kind/00-pycni-{bridge,vxlan}.conflist` -> each name it stands for."""
    brace = re.search(r"\{([^{}]*)\}", path)
    if brace is None:
        return [path]
    return [
        name
        for part in brace.group(1).split(",")
        for name in _expand(path[: brace.start()] + part + path[brace.end() :])
    ]


def test_every_path_named_exists() -> None:
    missing = []
    for page in PAGES:
        for number, line in _prose(page):
            for span in _CODE_SPAN.findall(line):
                path = span.split("::")[0].rstrip("/")
                if path.split("/")[0] not in REPO_FOLDERS or "/" not in path:
                    continue
                if re.search(r"[\s<>…]|\.\.\.", path):  # a pattern, not a path
                    continue
                for name in _expand(path):
                    found = list(REPO.glob(name)) if "*" in name else [REPO / name]
                    if not found or not all(p.exists() for p in found):
                        missing.append(f"{_name(page)}:{number}: {name}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_pycni_module_named_exists() -> None:
    missing = []
    for page in PAGES:
        for number, line in _prose(page):
            for span in _CODE_SPAN.findall(line):
                # pycni.ipip, pycni.<vni> are device names: only pycni's packages count
                if _MODULE.fullmatch(span) is None or span.split(".")[1] not in PACKAGES:
                    continue
                module, _, attribute = span.rpartition(".")
                try:
                    importlib.import_module(span)
                except ImportError:
                    try:
                        found = hasattr(importlib.import_module(module), attribute)
                    except ImportError:
                        found = False
                    if not found:
                        missing.append(f"{_name(page)}:{number}: {span}")
    assert not missing, "modules named in the docs that do not exist:\n" + "\n".join(missing)


def test_the_pages_speak_to_a_reader_on_their_own_machine() -> None:
    found = [
        f"{_name(page)}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in _prose(page)
        if MACHINE_RELATIVE.search(line)
    ]
    assert not found, (
        "say which machine (e.g. 'the project's CI VM: Debian 12, Linux 6.x'), not 'this':\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize("command", SETUP_COMMANDS)
def test_the_readme_keeps_the_set_up_commands(command: str) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    assert any(block.strip() == command for block in blocks), f"README.md lost: {command}"


def test_the_readme_is_a_front_page() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move detail into docs/"
