#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for the `k8s`-marked tests (no Docker needed).
#
#   scripts/k8s-test-cluster.sh build          build kube-apiserver + kube-controller-manager once
#                                              (Debian's `kubernetes` source, Debian's Go), cache them
#   scripts/k8s-test-cluster.sh up   STATE_DIR start etcd, the API server, the controller manager and the
#                                              test node agent; writes STATE_DIR/kubeconfig and admin token
#   scripts/k8s-test-cluster.sh down STATE_DIR stop everything `up` started (by recorded pid) and clean up
#   scripts/k8s-test-cluster.sh run  -- CMD... up, run CMD with KUBECONFIG set, down (even on failure)
#   scripts/k8s-test-cluster.sh bin-dir        print where the cached binaries live
#
# Every step is idempotent: `build` reuses cached binaries (first build about 10-15 minutes of CPU
# on a 2-core box), `up` on a running state dir is refused, `down` on a stopped one is a no-op.
# The node agent (scripts/k8s_node_agent.py) stands in for a kubelet: it runs pod commands as
# local processes. Only for tests: the API server has token auth on 127.0.0.1 and no admission
# plugins that need a real node network.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${OPENRL_AGENT_CACHE:-$HOME/.cache/openrl-agent}/k8s"
BIN="$CACHE/bin"
K8S_SRC_PKG=kubernetes
NICE="nice -n 10"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"

log() { echo "[k8s-test-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root_for_apt() {
  if [ "$(id -u)" != 0 ]; then die "installing Debian packages needs root (or install: $*)"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root_for_apt "${missing[*]}"
  log "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_deb_src() {
  # `apt-get source` needs a deb-src line; derive one from the deb entries already configured.
  if apt-cache showsrc "$K8S_SRC_PKG" 2>/dev/null | grep -q '^Package:'; then return 0; fi
  need_root_for_apt "a deb-src entry"
  local src=/etc/apt/sources.list.d/openrl-agent-deb-src.sources
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$src"
  elif [ -f /etc/apt/sources.list ]; then
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/openrl-agent-deb-src.list
  else
    die "no apt sources found to derive a deb-src entry from"
  fi
  apt-get update -q >/dev/null
  apt-cache showsrc "$K8S_SRC_PKG" | grep -q '^Package:' || die "Debian has no '$K8S_SRC_PKG' source package here"
}

cmd_build() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
    log "reusing cached binaries in $BIN ($(cat "$BIN/VERSION" 2>/dev/null || echo unknown))"
    return 0
  fi
  apt_install golang-go rsync dpkg-dev etcd-server
  ensure_deb_src
  local work="$CACHE/src"
  mkdir -p "$work" "$BIN"
  local tree
  tree="$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
  if [ -z "$tree" ]; then
    log "fetching Debian's $K8S_SRC_PKG source package"
    (cd "$work" && apt-get source -q "$K8S_SRC_PKG" >/dev/null 2>&1) || die "apt-get source $K8S_SRC_PKG failed"
    tree="$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
  fi
  log "building kube-apiserver and kube-controller-manager in $tree (minutes; logs in $work/build.log)"
  local start=$SECONDS
  # Same environment as debian/rules: static binaries, a GOPATH link so the build finds k8s.io/kubernetes.
  (
    cd "$tree"
    export GOPATH="$tree/.go" CGO_ENABLED=0 GOFLAGS=-mod=vendor HOME="$work/home" GOCACHE="$work/gocache"
    mkdir -p .go/src/k8s.io "$HOME"
    [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
    $NICE make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" > "$work/build.log" 2>&1
  ) || { tail -n 30 "$work/build.log" >&2; die "build failed (full log: $work/build.log)"; }
  for b in kube-apiserver kube-controller-manager; do
    install -m 0755 "$tree/_output/bin/$b" "$BIN/$b.tmp" && mv -f "$BIN/$b.tmp" "$BIN/$b"
  done
  basename "$tree" > "$BIN/VERSION"
  log "built in $((SECONDS - start))s; cached in $BIN"
}

case "${1:-}" in
  build) cmd_build ;;
  bin-dir) echo "$BIN" ;;
  *) echo "usage: $0 build|up STATE_DIR|down STATE_DIR|run -- CMD...|bin-dir" >&2; exit 2 ;;
esac
