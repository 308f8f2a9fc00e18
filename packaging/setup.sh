#!/usr/bin/env bash
# Set up a Debian machine for pycni, as root: the system packages the plugins, tests, demo and
# benchmarks use, and .venv (the project, editable, with its dev tools and the `pycni` command).
#
#   sudo bash packaging/setup.sh
#
# Idempotent: run it again after pulling. .ci/run starts with it, so CI and a newcomer's
# machine are set up by the same lines.
set -euo pipefail

# What pycni needs from Debian, and why.
APT_PACKAGES=(
    containernetworking-plugins  # the Go reference plugins (/usr/lib/cni): compat tests, bench
    iproute2                     # ip netns / link / addr: namespaces and what tests assert on
    nftables iptables            # what the plugins program (ipMasq, portmap), tests inspect
    python3 python3-venv         # .venv
    python3-dev                  # libpython3.x.so, which PyInstaller bundles
    binutils                     # objdump and strip, used by PyInstaller
    tcpdump iperf3               # packets and throughput between namespaces
    openssl                      # the agent tests' cluster CA and certificates
    util-linux                   # unshare: kind-node and offline-validation tests
    containerd runc              # containerd 1.6 (libcni 1.1.2) drives the kind conflist
                                 # through CRI, as the kubelet does on older nodes (gcc below
                                 # builds the pause image it runs)
    user-mode-linux kmod         # the kernel lane (pycni/lab/uml.py): a Linux kernel with the ipip
    gcc libc6-dev                # module, run as a process, for what this host's kernel lacks;
                                 # kmod's modprobe loads its modules inside the guest; gcc
                                 # compiles the lane's ptrace shim (AMX hosts, see pycni/lab/uml.py)
)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ $(id -u) == 0 ]] || { echo "setup.sh: run as root (sudo): it installs packages" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

echo "==> apt-get install ${APT_PACKAGES[*]}"
timeout 600 apt-get update -q
timeout 600 apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"

echo "==> cnitool (the CNI project's reference client, for the runtime-compatibility tests)"
bash packaging/cnitool.sh

# The interpreter .venv, and so the frozen bundle, is built from: Debian's python3 (installed
# above). Its libpython, which PyInstaller bundles, has the modules every plugin start loads
# (_struct, zlib, _socket, ...) compiled in, where other builds (pyenv's, say) load each from a
# shared object: ~6% of every plugin call, measured (docs/design.md). A .venv made from another
# interpreter is made again. PYCNI_PYTHON=/path/to/python3 overrides.
python=${PYCNI_PYTHON:-/usr/bin/python3}
if [[ -x .venv/bin/python ]]; then
    venv_base=$(.venv/bin/python -c 'import os, sys; print(os.path.realpath(sys._base_executable))')
    if [[ $venv_base != "$(readlink -f "$python")" ]]; then
        echo "==> .venv was made from $venv_base, not $python: making it again"
        rm -rf .venv
    fi
fi
echo "==> .venv from $python (pip install -e '.[dev,bench]')"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
timeout 600 .venv/bin/pip install -q -e '.[dev,bench]'
echo "==> ready: .venv/bin/pycni --help"
