"""`pycni validate`, run the way an operator runs it: the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pycni.conformance import validate
from tests.support.paths import EXAMPLES, REPO

EXAMPLE_FILES = sorted(EXAMPLES.iterdir())
PYCNI = Path(sys.executable).parent / "pycni"

BRIDGE_WITH_HOST_LOCAL: dict[str, Any] = {
    "type": "bridge",
    "bridge": "cni0",
    "ipam": {
        "type": "pycni-host-local",
        "ranges": [[{"subnet": "10.244.0.0/24"}]],
        "dataDir": "/run/cni-ipam-state",
    },
}


def pycni(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    if not PYCNI.exists():
        pytest.fail(f"{PYCNI} is missing: install the project (pip install -e .)")
    return subprocess.run(
        [str(PYCNI), *args], input=stdin, capture_output=True, text=True, check=False
    )


def conflist(*plugins: object, **top: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "pod-net", **top, "plugins": list(plugins)}


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_the_examples_are_valid() -> None:
    done = pycni("validate", *map(str, EXAMPLE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # no warning: older runtimes can run every example
    lines = done.stdout.splitlines()
    for path in EXAMPLE_FILES:
        assert f"{path}: OK" in lines
    assert any("(portmap): not checked (not a pycni plugin)" in line for line in lines)


def test_every_error_is_reported_with_its_path_and_code(tmp_path: Path) -> None:
    ipam = {
        "type": "pycni-host-local",
        "subnets": ["10.0.0.0/8"],
        "ranges": [[{"subnet": "10.0.0.0/33"}], []],
        "dataDir": "relative",
    }
    path = write(tmp_path, "bad.conflist", conflist({"type": "bridge", "ipam": ipam}))
    done = pycni("validate", path)
    assert done.returncode == 1
    out = done.stdout
    assert f"{path}: error 2: unsupported field $.plugins[0].ipam.subnets = ['10.0.0.0/8']" in out
    assert (
        f"{path}: error 7: invalid network config: $.plugins[0].ipam.ranges[0][0].subnet:"
        " '10.0.0.0/33' is not a valid CIDR: prefix length exceeds 32"
    ) in out
    assert "error 7: invalid network config: $.plugins[0].ipam.ranges[1]: must not be empty" in out
    assert "$.plugins[0].ipam.dataDir: 'relative' is not an absolute path" in out
    assert f"{path}: INVALID (4 errors)" in out.splitlines()


@pytest.mark.parametrize(
    ("name", "top"),
    [
        ("at-1.1.0.conflist", {"cniVersion": "1.1.0"}),
        # a lower cniVersions entry does not help: libcni < 1.2 never reads the list
        ("listing-1.0.0.conflist", {"cniVersion": "1.1.0", "cniVersions": ["0.4.0", "1.0.0"]}),
    ],
)
def test_a_version_older_runtimes_cannot_run_is_a_warning(
    tmp_path: Path, name: str, top: dict[str, Any]
) -> None:
    path = write(tmp_path, name, conflist(BRIDGE_WITH_HOST_LOCAL, **top))
    done = pycni("validate", path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"{path}: OK"
    assert done.stderr.splitlines() == [
        f"{path}: warning: cniVersion 1.1.0: runtimes on libcni < 1.2 (containerd 1.6/1.7,"
        " CRI-O < 1.31, cnitool 1.1) ignore cniVersions, send 1.1.0 and cannot parse the result:"
        ' they cannot run this network; set "cniVersion": "1.0.0" and list "1.1.0" in'
        ' "cniVersions" (libcni 1.2+ selects it from there)'
    ]


def test_a_single_config_at_1_1_0_is_a_warning_too(tmp_path: Path) -> None:
    path = write(
        tmp_path, "single.conf", {"cniVersion": "1.1.0", "name": "n", **BRIDGE_WITH_HOST_LOCAL}
    )
    done = pycni("validate", path)
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert "libcni < 1.2" in line and 'use "cniVersion": "1.0.0"' in line


def test_no_warning_at_1_0_0_with_1_1_0_listed(tmp_path: Path) -> None:
    top = {"cniVersion": "1.0.0", "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    path = write(tmp_path, "ok.conflist", conflist(BRIDGE_WITH_HOST_LOCAL, **top))
    done = pycni("validate", path)
    assert (done.returncode, done.stderr) == (0, "")


def test_envelope_errors_come_from_netconf_schema(tmp_path: Path) -> None:
    doc = conflist(BRIDGE_WITH_HOST_LOCAL, {"capabilities": []}, 7, disableCheck="true")
    path = write(tmp_path, "envelope.conflist", doc)
    done = pycni("validate", path)
    assert done.returncode == 1
    assert "$.disableCheck: expected a boolean, found a string" in done.stdout
    assert "$.plugins[1].type: is required" in done.stdout
    assert "$.plugins[1].capabilities: expected an object, found an array" in done.stdout
    assert "$.plugins[2]: expected an object, found a number" in done.stdout


def test_keys_the_runtime_inserts_are_reported_where_they_are_written(tmp_path: Path) -> None:
    doc = conflist(BRIDGE_WITH_HOST_LOCAL, {"type": "pycni-host-local", "ipam": {"type": ""}})
    doc["name"] = "pod net"
    done = pycni("validate", write(tmp_path, "names.conflist", doc))
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if "error" in line]
    # One error for the name, though the envelope and both plugins' configs carry it.
    assert sum("$.name: 'pod net' is not a valid name" in line for line in errors) == 1
    assert any("$.plugins[1].ipam.type: must not be empty" in line for line in errors)


def test_an_empty_list_and_missing_keys(tmp_path: Path) -> None:
    done = pycni("validate", write(tmp_path, "empty.conflist", {"plugins": []}))
    assert done.returncode == 1
    for complaint in ("$.cniVersion: is required", "$.name: is required", "$.plugins: must not"):
        assert complaint in done.stdout


def test_a_single_network_config(tmp_path: Path) -> None:
    good = {"cniVersion": "0.4.0", "name": "one", **BRIDGE_WITH_HOST_LOCAL}
    bad = {**good, "ipam": {**good["ipam"], "ranges": [[{"subnet": "10.0.0.0/8", "x": 1}]]}}
    done = pycni("validate", write(tmp_path, "good.conf", good), write(tmp_path, "bad.json", bad))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert f"{tmp_path}/good.conf: OK" in lines
    assert f"{tmp_path}/bad.json: error 2: unsupported field $.ipam.ranges[0][0].x = 1" in lines


def test_a_list_in_a_conf_file_gets_a_hint(tmp_path: Path) -> None:
    done = pycni("validate", write(tmp_path, "list.conf", conflist(BRIDGE_WITH_HOST_LOCAL)))
    assert done.returncode == 1
    assert "runtimes read only *.conflist files as lists" in done.stdout
    assert "$.type: is required" in done.stdout


def test_plugins_that_are_not_ours_are_listed_not_checked(tmp_path: Path) -> None:
    doc = conflist({"type": "macvlan", "ipam": {"type": "dhcp", "anything": True}})
    done = pycni("validate", write(tmp_path, "other.conflist", doc))
    assert done.returncode == 0
    assert "$.plugins[0] (macvlan): not checked (not a pycni plugin)" in done.stdout


def test_stdin(tmp_path: Path) -> None:
    done = pycni("validate", "-", stdin=json.dumps(conflist(BRIDGE_WITH_HOST_LOCAL)))
    assert (done.returncode, done.stdout) == (0, "-: OK\n")


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.conflist")
    broken = write(tmp_path, "broken.conflist", '{"cniVersion": ')
    done = pycni("validate", missing, broken)
    assert done.returncode == 1
    assert f"{missing}: error 5: cannot read the file: No such file or directory" in done.stdout
    assert f"{broken}: error 6: not a JSON document:" in done.stdout


def test_usage_errors() -> None:
    assert pycni().returncode == 2
    assert pycni("validate").returncode == 2
    assert "validate" in pycni("--help").stdout


def test_plan_sends_what_the_runtime_would_send() -> None:
    plugin = {**BRIDGE_WITH_HOST_LOCAL, "capabilities": {"ips": True}, "name": "ignored"}
    checks, notes = validate.plan(conflist(plugin, {"type": "portmap"}), True)
    assert notes == ["$.plugins[1] (portmap): not checked (not a pycni plugin)"]
    [check] = checks
    assert check.schema == "host-local"
    assert check.prefix == "$.plugins[0]"
    assert check.doc["name"] == "pod-net" and check.doc["cniVersion"] == "1.0.0"
    assert "capabilities" not in check.doc


@pytest.mark.slow
def test_schemas_are_found_in_a_regular_install(tmp_path: Path) -> None:
    """A wheel install (not editable): pycni.schemas must carry the schema files."""
    # Build from a copy, so that setuptools' scratch files (build/, *.egg-info) stay out of
    # the checkout.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("pycni", "ipam", "plugins", "conf/schemas"):
        shutil.copytree(REPO / part, source / part, ignore=skip)
    for part in ("pyproject.toml", "README.md"):
        if (REPO / part).exists():
            shutil.copy(REPO / part, source / part)
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "."],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, f"pip install failed:\n{build.stdout}{build.stderr}"
    assert (target / "pycni" / "schemas" / "host-local.schema.json").exists()
    site_packages = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env = {**os.environ, "PYTHONPATH": f"{target}:{site_packages}"}
    # -S: no site, so the editable install's finder does not load; jsonschema comes from
    # PYTHONPATH. The program checks which pycni it runs.
    program = (
        "import sys, pycni; assert pycni.__file__.startswith(sys.argv[1]), pycni.__file__;"
        " from pycni.cli import main; sys.exit(main(['validate', *sys.argv[2:]]))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", program, str(target), *map(str, EXAMPLE_FILES)],
        cwd=tmp_path,  # not the checkout: `-c` puts the working directory on sys.path
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": OK") == len(EXAMPLE_FILES)
