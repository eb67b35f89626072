#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's
# `kubernetes` source package (the full upstream tree with vendor/, builds offline) and
# installs etcd, once per machine. Prints the directory holding the binaries.
#
# No registry carries a prebuilt kube-apiserver; Debian's source package is the one real
# API server we can build here. The build takes ~15 minutes on a 2-core machine; the
# result is cached under ~/.cache/tollgate, outside any clone.
set -euo pipefail
VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tollgate
# The suffix names the local patches applied; a new patch gets a new directory.
OUT=${TOLLGATE_KUBE_BIN:-$CACHE/kube-$VERSION-p1}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$CACHE"

need_apt=()
command -v go >/dev/null || need_apt+=(golang-go)
command -v make >/dev/null || need_apt+=(make)
command -v rsync >/dev/null || need_apt+=(rsync)
command -v etcd >/dev/null || need_apt+=(etcd-server etcd-client)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v patch >/dev/null || need_apt+=(patch)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
fi

(
  flock 9
  # The marker is written last: a half-finished build is redone.
  if [ ! -f "$OUT/.installed" ]; then
    work=$CACHE/kube-src-$VERSION
    rm -rf "$work" "$OUT"
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$OUT"
    # A private apt configuration with a deb-src line: the machine's /etc/apt is left alone.
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
      >"$work/apt/sources.list"
    cat >"$work/apt/apt.conf" <<CONF
Dir::Etc::sourcelist "$work/apt/sources.list";
Dir::Etc::sourceparts "/nonexistent";
Dir::State::Lists "$work/apt/lists";
Dir::Cache "$work/apt/cache";
CONF
    export APT_CONFIG=$work/apt/apt.conf
    apt-get update -qq >&2
    (cd "$work" && apt-get source --download-only "kubernetes=$DEB_VERSION" >&2)
    tar -C "$work" -xzf "$work"/kubernetes_*.orig.tar.gz
    src=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
    # The vendored modern-go/reflect2 v1.0.1 predates Go 1.18's reflect.mapiterinit
    # signature: built with bookworm's Go 1.19, the API server segfaults the first time it
    # encodes a custom resource. This is the upstream v1.0.2 fix.
    patch -d "$src" -p1 <"$HERE/reflect2-go1.18-mapiter.patch" >&2
    (
      cd "$src"
      export CGO_ENABLED=0 GOFLAGS=-mod=vendor GOPROXY=off
      make WHAT=cmd/kube-apiserver >&2
      make WHAT=cmd/kube-controller-manager >&2
    )
    cp "$src"/_output/local/bin/linux/*/kube-apiserver "$src"/_output/local/bin/linux/*/kube-controller-manager "$OUT/"
    rm -rf "$work"
    touch "$OUT/.installed"
  fi
) 9>"$CACHE/.kube-install.lock"
echo "$OUT"
