#!/usr/bin/env bash
# Build cnitool, the CNI project's own reference client (libcni), into build/cnitool: the
# tests drive pycni through it to show the plugins work under a runtime that is not ours.
#
# cnitool ships in no binary package; its source is in Debian's source package
# golang-github-appc-cni. It builds offline in GOPATH mode against Debian's Go packages
# (module mode would try to fetch ginkgo). Needs root for apt; `apt-get source` needs deb-src
# entries, derived here from the machine's own apt sources.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$repo/build/cnitool
[[ -x $out ]] && { echo "==> cnitool: $out (already built)"; exit 0; }
export DEBIAN_FRONTEND=noninteractive

src_list=/etc/apt/sources.list.d/pycni-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    echo "==> cnitool: adding deb-src entries ($src_list) from debian.sources"
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$src_list"
    timeout 600 apt-get update -q
fi
timeout 600 apt-get install -y -q --no-install-recommends golang-go golang-github-appc-cni-dev dpkg-dev

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && timeout 600 apt-get source -q golang-github-appc-cni >/dev/null)
source_dir=$(find "$work" -maxdepth 1 -type d -name 'golang-github-appc-cni-*' | head -n1)
[[ -n $source_dir ]] || { echo "cnitool.sh: apt-get source gave no source tree" >&2; exit 1; }
mkdir -p "$work/gopath/src/github.com/containernetworking" "$(dirname "$out")"
ln -s "$source_dir" "$work/gopath/src/github.com/containernetworking/cni"
(cd "$work/gopath/src/github.com/containernetworking/cni/cnitool" \
    && GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" CGO_ENABLED=0 \
       GOCACHE="$work/cache" go build -o "$out" .)
echo "==> cnitool: built $out ($(basename "$source_dir"))"
