#!/usr/bin/env bash
# Build dist/cni/bin/: exactly what an operator copies into /opt/cni/bin.
#
#   dist/cni/bin/pycni-<name>     one executable per row of the plugin registry,
#                                 pycni/cni/registry.py
#   dist/cni/bin/pycni-runtime/   the frozen Python runtime they all share (PyInstaller onedir)
#   dist/pycni-agent/             the node agent (packaging/agent.spec), never in /opt/cni/bin
#
# Steps: check the generated config validators for drift (packaging/gen_validator.py --check,
# when present); install the checkout, NOT editable, into build/site (PyInstaller must see real
# files, the way a wheel lays them out, not the editable finder's mapping); freeze with
# packaging/pycni.spec; fail if the bundle lacks a module pycni imports; smoke-test every
# executable with VERSION in an empty environment.
#
# Uses the repository's .venv when there is one (pip install -e '.[dev]'), else creates
# build/venv with PyInstaller from Debian's python3 (or $PYCNI_PYTHON; see setup.sh).
# Usage: packaging/build.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
started=$(date +%s%N)

say() { printf '==> %s\n' "$*"; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# --- the build interpreter ----------------------------------------------------------------
if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
    "$python" -c 'import PyInstaller' 2>/dev/null \
        || die ".venv has no PyInstaller: run .venv/bin/pip install -e '.[dev]'"
else
    python=build/venv/bin/python
    if ! [[ -x $python ]] || ! "$python" -c 'import PyInstaller' 2>/dev/null; then
        say "no .venv: creating build/venv"
        "${PYCNI_PYTHON:-/usr/bin/python3}" -m venv build/venv  # why this one: setup.sh
        # The project's runtime dependencies (gen_validator.py --check needs jsonschema) and
        # PyInstaller as pyproject's dev extra pins it; not pycni itself.
        mapfile -t requirements < <(python3 -c '
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
dev = project["optional-dependencies"]["dev"]
print("\n".join([*project["dependencies"], *(r for r in dev if r.lower().startswith("pyinstaller"))]))')
        build/venv/bin/pip install --disable-pip-version-check -q "${requirements[@]}"
    fi
fi
say "python: $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])')," \
    "PyInstaller $("$python" -c 'import PyInstaller; print(PyInstaller.__version__)')"

# --- generated validators must match their schemas ----------------------------------------
if [[ -f packaging/gen_validator.py ]]; then
    say "checking generated validators (packaging/gen_validator.py --check)"
    "$python" packaging/gen_validator.py --check \
        || die "packaging/gen_validator.py --check failed (above); if the validators are stale," \
            "regenerate them: $python packaging/gen_validator.py"
fi

# --- a non-editable install of the checkout ------------------------------------------------
# build/lib and build/bdist.* are setuptools' own scratch space for the wheel; stale files
# there could end up in the install, so they go too.
rm -rf build/site build/pyinstaller build/pyinstaller-agent build/lib build/bdist.* dist/cni \
    dist/pycni-agent
say "installing the checkout into build/site"
"$python" -m pip install --disable-pip-version-check -q --no-deps --no-compile \
    --target build/site .

# --- freeze ----------------------------------------------------------------------------
say "freezing packaging/pycni.spec"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist/cni --workpath build/pyinstaller packaging/pycni.spec
"$python" packaging/check_imports.py build/pyinstaller/pycni/warn-pycni.txt

# The node agent (kind nodes and the DaemonSet image have no Python): a bundle of its own.
say "freezing packaging/agent.spec"
"$python" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller-agent packaging/agent.spec
(cd / && env -i "$repo/dist/pycni-agent/pycni-agent" --help >/dev/null) \
    || die "dist/pycni-agent/pycni-agent --help failed"

# --- smoke test: what a runtime does first ----------------------------------------------
bin=dist/cni/bin
mapfile -t executables < <(find "$bin" -maxdepth 1 -type f -name 'pycni-*' -printf '%f\n' | sort)
((${#executables[@]})) || die "$bin holds no pycni-* executable"
for exe in "${executables[@]}"; do
    answer=$(cd / && env -i CNI_COMMAND=VERSION "$repo/$bin/$exe") \
        || die "$exe VERSION failed (exit $?)"
    [[ $answer == '{"cniVersion": '* ]] || die "$exe VERSION answered: $answer"
done

# --- what was built ----------------------------------------------------------------------
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
say "built $bin in $((elapsed_ms / 1000)).$(((elapsed_ms % 1000) / 100)) s:"
for exe in "${executables[@]}"; do
    printf '    %-28s %8s\n' "$exe" "$(du -h --apparent-size "$bin/$exe" | cut -f1)"
done
printf '    %-28s %8s  (%s files, shared)\n' "pycni-runtime/" \
    "$(du -sh --apparent-size "$bin/pycni-runtime" | cut -f1)" \
    "$(find "$bin/pycni-runtime" -type f | wc -l)"
printf '    %-28s %8s\n' "total" "$(du -sh --apparent-size "$bin" | cut -f1)"
