#!/usr/bin/env bash
# A real Kubernetes cluster on one machine, pycni as its CNI (issue 17).
#
#   packaging/k8s.sh build                      Kubernetes v1.20.2 from Debian's source package,
#                                               e2e.test, agnhost and pause images (cached in
#                                               /var/cache/pycni/k8s/<version>/; once per machine)
#   packaging/k8s.sh up [--nodes N] [--datapath bridge|vxlan|ipip-never]
#   packaging/k8s.sh down
#   packaging/k8s.sh kubectl ARGS...
#   packaging/k8s.sh exec NODE CMD...
#   packaging/k8s.sh e2e [--focus RE] [--skip RE]
#
# Needs root and .venv; the implementation is pycni/lab/k8s (python -m pycni.lab.k8s).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ -x .venv/bin/python ]] || {
    echo "k8s.sh: no .venv: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'" >&2
    exit 2
}
exec .venv/bin/python -m pycni.lab.k8s "$@"
