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
# Every step is idempotent: `build` reuses cached binaries (the first build takes about 7 minutes
# on a busy 2-core box and needs root for apt-get; OPENRL_K8S_KEEP_SRC=1 keeps the source tree),
# `up` on a running state dir is refused, `down` on a stopped one is a no-op.
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

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose unsafe map iteration crashes
# (SIGSEGV in mapiterinit) when built with Go >= 1.18, as Debian's Go is. Debian packages the fixed
# reflect2 1.0.2 and the json-iterator 1.1.12 that goes with it: swap them into the vendor tree.
VENDOR_FIX="reflect2-1.0.2+json-iterator-1.1.12"
patch_vendor() {
  local tree=$1 gocode=/usr/share/gocode/src/github.com
  for dep in modern-go/reflect2 json-iterator/go; do
    [ -d "$gocode/$dep" ] || die "missing $gocode/$dep (Debian's golang-github-* package)"
    rm -rf "$tree/vendor/github.com/$dep"
    mkdir -p "$tree/vendor/github.com/$dep"
    find "$gocode/$dep" -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp {} "$tree/vendor/github.com/$dep/" \;
    find "$gocode/$dep" -maxdepth 1 -type f -name '*.s' -exec cp {} "$tree/vendor/github.com/$dep/" \;
  done
}

cmd_build() {
  local stamp_want="$K8S_SRC_PKG $VENDOR_FIX"
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] \
     && [ "$(head -n1 "$BIN/VERSION" 2>/dev/null)" = "$stamp_want" ]; then
    log "reusing cached binaries in $BIN ($(tail -n1 "$BIN/VERSION"))"
    return 0
  fi
  apt_install golang-go rsync dpkg-dev etcd-server golang-github-modern-go-reflect2-dev \
    golang-github-json-iterator-go-dev
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
  patch_vendor "$tree"
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
  printf '%s\n%s\n' "$stamp_want" "$(basename "$tree")" > "$BIN/VERSION"
  log "built in $((SECONDS - start))s; cached in $BIN"
  # The unpacked tree and Go build cache take ~2.6 GB; keep them only when asked to.
  if [ "${OPENRL_K8S_KEEP_SRC:-0}" != 1 ]; then
    rm -rf "$tree" "$work"/kubernetes_*.tar.* "$work"/kubernetes_*.dsc "$work/gocache" "$work/home"
  fi
}

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Start a long-running process in its own session; record its pid so `down` stops exactly it.
spawn() {
  local name=$1; shift
  setsid "$@" > "$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what; last log lines:"
      tail -n 20 "$STATE"/logs/*.log >&2 || true
      cmd_down "$STATE"
      die "$what did not come up"
    fi
    sleep 0.5
  done
}

make_pki() {
  local pki="$STATE/pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=openrl-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$pki/san.ext"
  for name in apiserver node; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
      -extfile "$pki/san.ext" -out "$pki/$name.crt" 2>/dev/null
  done
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() {  # write_kubeconfig FILE TOKEN
  local ca; ca="$(base64 -w0 < "$STATE/pki/ca.crt")"
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: openrl-test
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: "$ca"}
users:
- name: openrl-test-user
  user: {token: "$2"}
contexts:
- name: openrl-test
  context: {cluster: openrl-test, user: openrl-test-user, namespace: default}
current-context: openrl-test
EOF
}

cmd_up() {
  STATE="$(mkdir -p "$1" && cd "$1" && pwd)"
  if [ -f "$STATE/pids/kube-apiserver.pid" ] && kill -0 "$(cat "$STATE/pids/kube-apiserver.pid")" 2>/dev/null; then
    die "a cluster from $STATE is already running; run '$0 down $STATE' first"
  fi
  [ -x "$BIN/kube-apiserver" ] || die "no cached binaries in $BIN; run '$0 build' first (about 7 minutes)"
  command -v etcd >/dev/null || apt_install etcd-server
  command -v openssl >/dev/null || apt_install openssl
  command -v curl >/dev/null || apt_install curl
  rm -rf "$STATE/etcd" "$STATE/pods"
  mkdir -p "$STATE/logs" "$STATE/pids"
  make_pki
  ETCD_PORT=$(free_port); PEER_PORT=$(free_port); API_PORT=$(free_port); NODE_PORT=$(free_port)
  ADMIN_TOKEN="admin-$(openssl rand -hex 16)"; VIEWER_TOKEN="viewer-$(openssl rand -hex 16)"
  # token,user,uid,"groups": an admin, and a user with no roles (for RBAC checks in tests)
  printf '%s,admin,admin,"system:masters"\n%s,viewer,viewer\n' "$ADMIN_TOKEN" "$VIEWER_TOKEN" > "$STATE/tokens.csv"
  echo "$ADMIN_TOKEN" > "$STATE/admin.token"; echo "$VIEWER_TOKEN" > "$STATE/viewer.token"
  write_kubeconfig "$STATE/kubeconfig" "$ADMIN_TOKEN"
  write_kubeconfig "$STATE/viewer.kubeconfig" "$VIEWER_TOKEN"

  spawn etcd etcd --name openrl-test --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
    --initial-cluster "openrl-test=http://127.0.0.1:$PEER_PORT"
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  local pki="$STATE/pki"
  # ServiceAccount admission is off (pods need no token: the node agent is not a kubelet);
  # TTLAfterFinished is alpha in 1.20; no endpoint reconciler (a loopback IP is not a valid endpoint).
  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$API_PORT" --insecure-port 0 --cert-dir "$pki" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --token-auth-file "$STATE/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/24 \
    --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none \
    --feature-gates TTLAfterFinished=true --kubelet-preferred-address-types InternalIP
  wait_for 90 kube-apiserver curl -sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$API_PORT/readyz"

  spawn kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$STATE/kubeconfig" \
    --controllers job,garbagecollector,ttl-after-finished,namespace,resourcequota --leader-elect=false \
    --port 0 --secure-port 0 --feature-gates TTLAfterFinished=true --concurrent-gc-syncs 2

  spawn node-agent "$PYTHON" "$HERE/k8s_node_agent.py" --kubeconfig "$STATE/kubeconfig" \
    --state-dir "$STATE" --port "$NODE_PORT" --tls-cert "$pki/node.crt" --tls-key "$pki/node.key" \
    --pvc "openrl-runs=$STATE/pvc/openrl-runs"
  wait_for 60 "the test node" curl -sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$API_PORT/api/v1/nodes/openrl-test-node"
  printf 'KUBECONFIG=%s\nOPENRL_K8S_TEST_STATE=%s\n' "$STATE/kubeconfig" "$STATE" > "$STATE/env"
  log "up: API server https://127.0.0.1:$API_PORT, kubeconfig $STATE/kubeconfig"
}

cmd_down() {
  local state="$1"
  [ -d "$state/pids" ] || return 0
  # Node agent first (it kills the pod processes it started), etcd last.
  for name in node-agent kube-controller-manager kube-apiserver etcd; do
    local pidfile="$state/pids/$name.pid"
    [ -f "$pidfile" ] || continue
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  rm -rf "$state/etcd"
  log "down: stopped the cluster in $state"
}

cmd_run() {
  [ "${1:-}" = "--" ] && shift
  [ $# -gt 0 ] || die "usage: $0 run -- COMMAND..."
  cmd_build
  RUN_STATE="$(mktemp -d "${TMPDIR:-/tmp}/openrl-k8s.XXXXXX")"
  trap 'cmd_down "$RUN_STATE"; rm -rf "$RUN_STATE"' EXIT
  cmd_up "$RUN_STATE"
  local rc=0
  KUBECONFIG="$RUN_STATE/kubeconfig" OPENRL_K8S_TEST_STATE="$RUN_STATE" "$@" || rc=$?
  return $rc
}

case "${1:-}" in
  build) cmd_build ;;
  up) [ -n "${2:-}" ] || die "usage: $0 up STATE_DIR"; cmd_build; cmd_up "$2" ;;
  down) [ -n "${2:-}" ] || die "usage: $0 down STATE_DIR"; cmd_down "$2" ;;
  run) shift; cmd_run "$@" ;;
  bin-dir) echo "$BIN" ;;
  *) echo "usage: $0 build|up STATE_DIR|down STATE_DIR|run -- CMD...|bin-dir" >&2; exit 2 ;;
esac
