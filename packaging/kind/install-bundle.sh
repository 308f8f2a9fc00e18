#!/bin/sh
# Copy a frozen pycni bundle (dist/cni/bin) into a CNI bin directory (/opt/cni/bin) without
# ever writing into a file containerd may be executing at that moment:
#
#   install-bundle.sh SOURCE_DIR TARGET_DIR
#
# The bundle is first copied into TARGET_DIR/.pycni-staging (same filesystem); then the shared
# runtime directory is swapped in (old one renamed aside, new one renamed in, old one removed)
# and each pycni-* launcher is renamed over its old copy. Used by the DaemonSet's init
# container and, inside each node, by packaging/kind-install.sh. POSIX sh: kind's node image
# and debian:bookworm-slim have no bash guarantee beyond /bin/sh.
set -eu
src=${1:?usage: install-bundle.sh SOURCE_DIR TARGET_DIR}
dst=${2:?usage: install-bundle.sh SOURCE_DIR TARGET_DIR}
[ -x "$src/pycni-host-local" ] || { echo "install-bundle.sh: $src holds no pycni bundle" >&2; exit 1; }
mkdir -p "$dst"
staging="$dst/.pycni-staging"
rm -rf "$staging" "$dst/.pycni-runtime.old"
mkdir "$staging"
cp -a "$src/." "$staging/"
if [ -d "$dst/pycni-runtime" ]; then
    mv "$dst/pycni-runtime" "$dst/.pycni-runtime.old"
fi
mv "$staging/pycni-runtime" "$dst/pycni-runtime"
for exe in "$staging"/pycni-*; do
    mv -f "$exe" "$dst/${exe##*/}"
done
rm -rf "$staging" "$dst/.pycni-runtime.old"
echo "install-bundle.sh: installed $(ls "$dst" | grep -c '^pycni-') pycni entries into $dst"
