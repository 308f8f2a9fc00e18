#!/usr/bin/env bash
# The benchmarks, one command, as root on a Debian machine (a fresh one too):
#
#   sudo packaging/bench.sh                 # full run: ./BENCHMARKS.md and ./benchmarks/*.png
#   sudo packaging/bench.sh --smoke --out /tmp/bench      # tiny sizes, a minute
#   sudo packaging/bench.sh --only bridge,dataplane-vxlan # some suites (--help lists them)
#
# Sets the machine up with packaging/setup.sh when something the benchmark needs is missing
# (the Go reference plugins, iperf3, nft, .venv with the `bench` extra: matplotlib), builds
# the frozen bundle when dist/ has none or the sources are newer, then runs `python -m bench` (bench/run.py) with the
# arguments given. A full run takes a few minutes; it never fails on a figure.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ $(id -u) == 0 ]] || { echo "bench.sh: run as root (sudo): it creates network namespaces" >&2; exit 1; }

ready() {
    [[ -x /usr/lib/cni/bridge ]] && command -v iperf3 nft ip >/dev/null &&
        .venv/bin/python -c 'import matplotlib, pycni' 2>/dev/null
}
if ! ready; then
    echo "==> packaging/setup.sh (something the benchmark needs is missing)"
    bash packaging/setup.sh
fi
bundle=dist/cni/bin/pycni-bridge
if [[ ! -x $bundle ]]; then
    echo "==> packaging/build.sh (no frozen bundle in dist/)"
    packaging/build.sh
elif newer=$(find pycni/ plugins/ ipam/ conf/ packaging/ -newer "$bundle" -type f \
    -not -path '*/__pycache__/*' -print -quit) &&
    [[ -n $newer ]]; then
    echo "==> packaging/build.sh (the bundle is older than $newer)"
    packaging/build.sh
fi
echo "==> python -m bench $*"
exec .venv/bin/python -m bench "$@"
