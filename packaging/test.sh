#!/usr/bin/env bash
# The project's test command: build the frozen plugins, lint, type-check, run the test suite.
#
#   packaging/test.sh [pytest arguments...]
#
# Needs .venv (python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'); the netns, frozen
# and reference tests need root, iproute2 and containernetworking-plugins (.ci/run installs
# them). Every step runs even when an earlier one failed (except the build, which the frozen
# tests need); the script then exits 1 naming the failed steps. pytest writes JUnit XML to
# build/test-results/junit.xml and lists failures, errors and skips with their reasons
# (-rfEs); a run that collects no test is a failure. The last line, also written to
# build/test-results/summary.txt, counts passed, failed and skipped tests.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
venv=.venv/bin
[[ -x $venv/python ]] || {
    echo "test.sh: no .venv: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'" >&2
    exit 2
}
junit=build/test-results/junit.xml
failed=()

step() {  # step NAME COMMAND...: run, record a failure, carry on
    local name=$1
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    if "$@"; then
        printf '==> %s: ok\n' "$name"
    else
        local status=$?
        printf '==> %s: FAILED (exit %s)\n' "$name" "$status"
        failed+=("$name")
    fi
}

step build packaging/build.sh
if [[ " ${failed[*]} " == *" build "* ]]; then
    echo "test.sh: the build failed; not running the checks that need it" >&2
    exit 1
fi
step "ruff check" "$venv/ruff" check .
step "ruff format" "$venv/ruff" format --check .
step "mypy" "$venv/mypy"  # pyproject: pycni (with ipam, plugins), tests, bench, packaging

rm -f "$junit"
mkdir -p "$(dirname "$junit")"
pytest_status=0
printf '\n==> pytest\n'
"$venv/python" -m pytest -p no:cacheprovider -rfEs --junitxml="$junit" "$@" || pytest_status=$?
case $pytest_status in
    0) ;;
    5) echo "==> pytest: FAILED: no test ran (pytest exit 5)"; failed+=(pytest) ;;
    *) echo "==> pytest: FAILED (exit $pytest_status)"; failed+=(pytest) ;;
esac

# One line a person (or CI log scraper) can read: counts from the JUnit XML, skips included.
summary=$("$venv/python" - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as err:
    print(f"no JUnit report ({err})")
    raise SystemExit(0)
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
print(f"{count['tests']} tests: {passed} passed, {count['failures']} failed,"
      f" {count['errors']} errors, {count['skipped']} skipped")
EOF
)
if [[ $summary == "0 tests:"* && ! " ${failed[*]} " == *" pytest "* ]]; then
    failed+=(pytest)
fi

if ((${#failed[@]})); then
    line="FAILED ($(IFS=,; echo "${failed[*]}")); pytest: $summary"
else
    line="ok; pytest: $summary"
fi
echo "$line" > build/test-results/summary.txt
printf '\nTEST SUMMARY: %s\n' "$line"
((${#failed[@]} == 0))
