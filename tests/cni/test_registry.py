"""The plugin registry (pycni/cni/registry.py) against the modules, the schemas and its readers.

Adding a plugin is its module, its schema and one row; these tests are what make the row
enough: mypy (strict, the project's configuration) checks every row's module against the
pycni.cni.plugin.Plugin Protocol, from a check generated out of the rows, so a new row is
type-checked with no other edit; each row's module answers to the row's executable name and
validates with the row's schema; every plugin module and every schema has its row; and what
the registry's readers (delegate, validate, reconcile, the agent, the build) derive from it is
what the rows say.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from pycni.agent import agent, reconcile
from pycni.cni import delegate, registry
from pycni.conformance import validate
from tests.support.interpreter import python_output
from tests.support.paths import REPO, plugin_table

ROWS = registry.PLUGINS


def _validator_module(schema: str) -> str:
    """conf/schemas/host-local.schema.json -> pycni.validators.host_local
    (packaging/gen_validator.py's naming)."""
    return "pycni.validators." + schema.replace("-", "_")


# --- mypy: every row's module is a Plugin --------------------------------------------------


# Where the generated check goes: a fixed place, so that mypy's cache (shared with the mypy
# step of packaging/test.sh, which makes this run take a second) keeps naming the right file.
CHECK_DIR = REPO / "build" / "registry-check"

_LACKING_PLUGIN = """from __future__ import annotations

from typing import Any

from pycni.cni.result import Result
from pycni.cni.skel import Call

NAME = "pycni-lacking"


def parse_config(call: Call) -> Any:
    return None


def cmd_add(call: Call, conf: Any) -> Result:
    return Result()


def cmd_del(call: Call, conf: Any) -> None:
    pass
"""


def _mypy_errors(files: list[Path]) -> tuple[dict[tuple[str, int], str], str]:
    """mypy as packaging/test.sh runs it (pyproject's strict configuration, its cache), on
    `files` only: its errors by (file name, line), and its whole output."""
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")]
        + [str(f) for f in files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    errors: dict[tuple[str, int], str] = {}
    for line in done.stdout.splitlines():
        path, _, rest = line.partition(":")
        number, _, message = rest.partition(": error: ")
        if message and number.isdigit():
            errors[Path(path).name, int(number)] = message
    assert errors or done.returncode == 0, f"mypy failed:\n{done.stdout}{done.stderr}"
    return errors, done.stdout + done.stderr


def test_mypy_checks_every_module_against_the_plugin_protocol() -> None:
    """One assignment per row, `plugin_<n>: Plugin = <module>`, generated from the rows; and,
    so that a pass means something, a module lacking cmd_check that mypy must refuse."""
    CHECK_DIR.mkdir(parents=True, exist_ok=True)
    check = CHECK_DIR / "registry_plugins_check.py"
    lines = ["from __future__ import annotations", "", "from pycni.cni.plugin import Plugin"]
    lines += [f"import {row.module} as module_{n}" for n, row in enumerate(ROWS)]
    lines.append("")
    first = len(lines) + 1  # the line number of plugin_0
    lines += [f"plugin_{n}: Plugin = module_{n}" for n in range(len(ROWS))]
    check.write_text("\n".join(lines) + "\n")
    lacking = CHECK_DIR / "registry_lacking_plugin.py"
    lacking.write_text(_LACKING_PLUGIN)
    control = CHECK_DIR / "registry_control_check.py"
    control.write_text(
        "from __future__ import annotations\n\n"
        "import registry_lacking_plugin\n\n"
        "from pycni.cni.plugin import Plugin\n\n"
        "lacking: Plugin = registry_lacking_plugin\n"
    )

    errors, output = _mypy_errors([check, lacking, control])
    refused = [
        f"{ROWS[line - first].module}: {message}"
        for (name, line), message in errors.items()
        if name == check.name and line >= first
    ]
    assert not refused, (
        "modules in pycni/cni/registry.py that do not satisfy pycni.cni.plugin.Plugin:\n"
        + "\n".join(refused)
        + f"\n\n{output}"
    )
    assert set(errors) == {(control.name, 7)}, output
    assert '"Plugin"' in errors[control.name, 7] and "cmd_check" in output, output


# --- rows against modules and schemas -------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.executable)
def test_the_module_answers_to_the_rows_name(row: Any) -> None:
    module = importlib.import_module(row.module)
    assert row.executable == module.NAME, (
        f"{row.module}.NAME is {module.NAME!r}; its row in pycni/cni/registry.py makes the"
        f" executable {row.executable!r}"
    )


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.executable)
def test_the_module_validates_with_the_rows_schema(row: Any) -> None:
    """The schema file exists, its generated validator exists, and importing the plugin (in a
    fresh interpreter) loads that validator."""
    assert (REPO / "conf" / "schemas" / f"{row.schema}.schema.json").is_file(), row.schema
    validator = _validator_module(row.schema)
    assert importlib.util.find_spec(validator) is not None, (
        f"{validator} is missing: run packaging/gen_validator.py"
    )
    program = f"import sys, {row.module}\nprint({validator!r} in sys.modules)"
    assert python_output(program).split() == ["True"], (
        f"importing {row.module} does not load {validator}: is the row's schema"
        f" ({row.schema!r}) the one the plugin validates its config with?"
    )


def _plugin_modules() -> set[str]:
    """Every plugin module in the tree: plugins/<name>.py and ipam/<name>/plugin.py."""
    found = {
        f"pycni.plugins.{path.stem}"
        for path in (REPO / "plugins").glob("*.py")
        if not path.name.startswith("_")
    }
    found |= {
        f"pycni.ipam.{path.parent.name}.plugin" for path in (REPO / "ipam").glob("*/plugin.py")
    }
    return found


def test_every_plugin_module_has_a_row() -> None:
    missing = _plugin_modules() - {row.module for row in ROWS}
    assert not missing, (
        f"plugin modules without a row in pycni/cni/registry.py (so not built): {sorted(missing)}"
    )


def test_every_schema_has_a_row() -> None:
    schemas = {
        path.name.removesuffix(".schema.json")
        for path in (REPO / "conf" / "schemas").glob("*.schema.json")
    }
    orphans = schemas - {row.schema for row in ROWS} - {validate.ENVELOPE_SCHEMA}
    assert not orphans, f"schemas no row of pycni/cni/registry.py names: {sorted(orphans)}"


def test_in_process_rows_are_ipam_plugins() -> None:
    for row in ROWS:
        assert row.ipam or not row.in_process, row


# --- the readers -----------------------------------------------------------------------------


def test_the_build_reads_the_same_rows() -> None:
    read = plugin_table().read()
    assert [(e.cni_type, e.module, e.schema, e.allowed_imports) for e in read] == [
        (e.cni_type, e.module, e.schema, e.allowed_imports) for e in ROWS
    ]


def test_validate_checks_every_row_with_its_schema() -> None:
    assert {row.executable: row.schema for row in ROWS} == validate.PLUGIN_SCHEMAS
    assert {row.executable: row.schema for row in ROWS if row.ipam} == validate.IPAM_SCHEMAS
    for row in ROWS:
        checks, notes = validate.plan({"type": row.executable}, is_list=False)
        assert [check.schema for check in checks] == [row.schema] and not notes


def test_reconcile_and_the_agent_take_the_reconciler_rows() -> None:
    wanted = tuple(row.executable for row in ROWS if row.reconciler)
    assert wanted, "no row has a node reconciler: `pycni reconcile` would accept nothing"
    assert wanted == reconcile.PLUGIN_TYPES
    assert wanted == agent.PEER_PLUGINS
    for row in ROWS:
        conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": row.executable}]}
        if row.reconciler:
            assert reconcile.network_config(conflist)["type"] == row.executable
            # `pycni reconcile` calls the row's module: it must have the node reconciler
            assert callable(getattr(importlib.import_module(row.module), "reconcile", None))
        else:
            with pytest.raises(ValueError, match="has no"):
                reconcile.network_config(conflist)


class _InProcess(Exception):
    pass


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.executable)
def test_delegate_runs_in_process_exactly_the_in_process_rows(
    row: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which way delegate.ipam goes for an ipam.type naming each row: in this process (its
    module), or exec'd from CNI_PATH."""
    seen: list[tuple[str, str]] = []

    def in_process(call: Any, command: str, module: str) -> None:
        seen.append(("in-process", module))
        raise _InProcess

    def exec_(call: Any, command: str, kind: str) -> None:
        seen.append(("exec", kind))
        raise _InProcess

    monkeypatch.setattr(delegate, "_in_process", in_process)
    monkeypatch.setattr(delegate, "_exec", exec_)

    call: Any = SimpleNamespace(config={"ipam": {"type": row.executable}})
    with pytest.raises(_InProcess):
        delegate.ipam(call, "ADD")
    assert seen == [("in-process", row.module) if row.in_process else ("exec", row.executable)]


# --- the build's checks of the rows ----------------------------------------------------------

_ROW_OF = {
    "bad name": 'Entry("host_local!", "pycni.x", "x")',
    "not a module name": 'Entry("x", "pycni.x-y", "x")',
    "schema path": 'Entry("x", "pycni.x", "../x")',
    "in process, not ipam": 'Entry("x", "pycni.x", "x", in_process=True)',
    "name twice": 'Entry("x", "pycni.x", "x"), Entry("x", "pycni.y", "y")',
    "module twice": 'Entry("x", "pycni.x", "x"), Entry("y", "pycni.x", "y")',
}


def _registry_with(tmp_path: Path, rows: str) -> Path:
    """pycni/cni/registry.py with `rows` in place of its PLUGINS."""
    source = (REPO / "pycni" / "cni" / "registry.py").read_text()
    start = source.index("PLUGINS = (\n")
    end = source.index("\n)\n", start) + len("\n)\n")
    path = tmp_path / "registry.py"
    path.write_text(source[:start] + f"PLUGINS = ({rows},)\n" + source[end:])
    return path


@pytest.mark.parametrize("problem", _ROW_OF)
def test_the_build_refuses_a_bad_row(tmp_path: Path, problem: str) -> None:
    table: ModuleType = plugin_table()
    path = _registry_with(tmp_path, _ROW_OF[problem])
    with pytest.raises(table.TableError):
        table.read(str(path))


def test_the_build_reads_a_good_row(tmp_path: Path) -> None:
    """The rewriting above is sound: a good row passes."""
    path = _registry_with(tmp_path, 'Entry("x", "pycni.x", "x", allowed_imports=("subprocess",))')
    (row,) = plugin_table().read(str(path))
    assert (row.executable, row.allowed_imports) == ("pycni-x", frozenset({"subprocess"}))


def test_the_build_refuses_a_registry_it_cannot_load(tmp_path: Path) -> None:
    table: ModuleType = plugin_table()
    with pytest.raises(table.TableError, match="cannot be loaded"):
        table.read(str(tmp_path / "missing.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("PLUGINS = (\n")
    with pytest.raises(table.TableError, match="cannot be loaded"):
        table.read(str(broken))
