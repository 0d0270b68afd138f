#!/usr/bin/env bash
# Can this machine run real containers the way a kubelet would? A probe, not a test: nothing in
# `make test` depends on it. Needs root (apt-get, containerd, runc, cgroups, a CNI bridge).
#
#   scripts/container-probe.sh [WORK_DIR]     (default /tmp/openrl-container-probe; reused as a cache)
#
# Steps, each printed as PASS/FAIL/INFO with the runtime's own error:
#   1. host: cgroup layout, capabilities (CAP_SYS_RESOURCE), overlayfs, user namespaces, oom_score_adj < 0
#   2. runc on a Debian root filesystem (debootstrap minbase + python3): uid 1000, read-only root,
#      seccomp, a memory-cgroup OOM kill, SIGTERM delivery, a negative oom_score_adj
#   3. buildah (vfs storage, no registry): a base image from that rootfs, then `buildah bud` of a
#      trial-like image (uid 1000, the repo's packages under /app, as docker/Dockerfile.cpu lays out)
#      and a pause image compiled from Kubernetes' pause.c
#   4. containerd with its CRI plugin (config, socket and state under WORK_DIR) and a CNI bridge
#   5. scripts/cri_probe/main.go, built from Debian's kubernetes source (vendored grpc + cri-api),
#      speaks CRI to containerd as kubelet 1.20 would: a pod sandbox, then containers that check
#      uid/permissions, OOMKilled, SIGTERM, and the trial entry point (cluster/pod_entry.py) under
#      the real runtime: wall time, SIGTERM forwarding, an OOM-killed trial.
# Everything started here is stopped on exit (containerd by its recorded pid, the CNI bridge).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WORK="${1:-/tmp/openrl-container-probe}"
SUITE=bookworm
BR=oprobe0
SOCK="$WORK/containerd/containerd.sock"
B=(buildah --root "$WORK/buildah/store" --runroot "$WORK/buildah/run" --storage-driver vfs)

say() { printf '%-5s %s\n' "$1" "$2"; }
die() { say FAIL "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (apt-get, runc, cgroups, CNI)"
mkdir -p "$WORK"

cleanup() {
  if [ -f "$WORK/containerd/pid" ]; then
    local pid; pid=$(cat "$WORK/containerd/pid")
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; sleep 1; fi
    rm -f "$WORK/containerd/pid"
  fi
  ip link del "$BR" 2>/dev/null || true
  for d in /sys/fs/cgroup/*/kubepods-openrl-probe /sys/fs/cgroup/*/oprobe-*; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- 0. packages -----------------------------------------------------------------------------
pkgs=(containerd runc buildah debootstrap containernetworking-plugins iptables golang-go gcc libc6-dev)
missing=(); for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say INFO "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
say INFO "$(runc --version | head -n1); containerd $(containerd --version | awk '{print $3}'); buildah $(buildah --version | awk '{print $3}')"

# --- 1. host ---------------------------------------------------------------------------------
say INFO "kernel $(uname -r)"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then say INFO "cgroup v2 (unified)"
else say INFO "cgroup v1 (hybrid: $(ls /sys/fs/cgroup | tr '\n' ' '))"; fi
capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
if (( (16#$capbnd >> 24) & 1 )); then say PASS "CAP_SYS_RESOURCE in the bounding set"
else say FAIL "CAP_SYS_RESOURCE missing from the bounding set (CapBnd=$capbnd): no negative oom_score_adj"; fi
grep -qw overlay /proc/filesystems && say PASS "overlayfs available" || say FAIL "no overlayfs"
say INFO "user.max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces)"
if (echo -1 > /proc/self/oom_score_adj) 2>/dev/null; then say PASS "oom_score_adj -1 writable"
else say FAIL "oom_score_adj < 0: write /proc/self/oom_score_adj: Permission denied"; fi

# --- 2. rootfs + runc --------------------------------------------------------------------------
ROOTFS="$WORK/rootfs"
if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
  say INFO "debootstrap --variant=minbase $SUITE (+ python3) into $ROOTFS"
  rm -rf "$ROOTFS"
  nice -n 10 debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib \
    "$SUITE" "$ROOTFS" > "$WORK/debootstrap.log" 2>&1 || die "debootstrap (see $WORK/debootstrap.log)"
  chroot "$ROOTFS" apt-get clean
fi

run_runc() {  # NAME SHELL_SCRIPT [extra python to edit the spec]; prints the container's output
  local name=$1 script=$2 edit=${3:-}
  local bundle="$WORK/runc-$name"
  rm -rf "$bundle"; mkdir -p "$bundle"
  (cd "$bundle" && runc spec)
  python3 - "$bundle/config.json" "$ROOTFS" "$script" "$edit" <<'EOF'
import json, sys
path, rootfs, script, edit = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"].update(terminal=False, args=["/bin/sh", "-c", script], user={"uid": 1000, "gid": 1000})
c["linux"]["cgroupsPath"] = "/oprobe-" + path.split("/")[-2]
exec(edit)
json.dump(c, open(path, "w"))
EOF
  (cd "$bundle" && timeout 60 runc run "oprobe-$name" 2>&1) || true
}

out=$(run_runc basic 'id -u; touch /x 2>&1; grep -E "^(Seccomp|NoNewPrivs|CapEff)" /proc/self/status' \
  'c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"}]}')
echo "$out" | sed 's/^/      /'
grep -qx 1000 <<<"$out" && grep -q 'Read-only file system' <<<"$out" && grep -q 'Seccomp:.*2' <<<"$out" \
  && say PASS "runc: uid 1000, read-only root, seccomp filter" || say FAIL "runc basic run"
out=$(run_runc oom 'head -c 300000000 /dev/zero | tail -n 1 >/dev/null; echo tail_exit=$?' \
  'c["linux"]["resources"]["memory"] = {"limit": 64 << 20}')
grep -q 'tail_exit=137' <<<"$out" && say PASS "runc: memory cgroup OOM kill at 64 MiB (exit 137)" \
  || { echo "$out"; say FAIL "runc: no OOM kill"; }
( cd "$WORK" && run_runc term 'trap "echo got_TERM; exit 143" TERM; while :; do sleep 0.2; done' > "$WORK/term.out" ) &
for _ in $(seq 50); do runc state oprobe-term 2>/dev/null | grep -q '"running"' && break; sleep 0.2; done
sleep 0.5; runc kill oprobe-term TERM 2>/dev/null || true; wait
grep -q got_TERM "$WORK/term.out" && say PASS "runc: SIGTERM delivered to the container's trap" \
  || { cat "$WORK/term.out"; say FAIL "runc: SIGTERM"; }
out=$(run_runc oomadj 'cat /proc/self/oom_score_adj' 'c["process"]["oomScoreAdj"] = -997')
if grep -qx -- -997 <<<"$out"; then say PASS "runc: oom_score_adj -997 (a Guaranteed pod's)"
else say FAIL "runc: oom_score_adj -997: $(grep -o 'nsexec.*' <<<"$out" | head -n1 | tr -d '"')"; fi

# --- 3. buildah ------------------------------------------------------------------------------
"${B[@]}" rmi -f localhost/oprobe-base:1 localhost/oprobe-trial:1 localhost/oprobe-pause:1 >/dev/null 2>&1 || true
ctr_id=$("${B[@]}" from scratch)
"${B[@]}" copy "$ctr_id" "$ROOTFS" / >/dev/null
"${B[@]}" run "$ctr_id" -- ln -sf python3 /usr/bin/python 2>&1 || die "buildah run"
"${B[@]}" commit -q --rm "$ctr_id" localhost/oprobe-base:1 >/dev/null && say PASS "buildah: base image from the rootfs (vfs, no registry)"
ctx="$WORK/trial-context"; rm -rf "$ctx"; mkdir -p "$ctx"
cp -r "$REPO"/{agent,rl_core,sql_env,tools,cluster} "$ctx/"
find "$ctx" -name __pycache__ -prune -exec rm -rf {} +
cat > "$ctx/Containerfile" <<'EOF'
FROM localhost/oprobe-base:1
WORKDIR /app
COPY agent ./agent
COPY rl_core ./rl_core
COPY sql_env ./sql_env
COPY tools ./tools
COPY cluster ./cluster
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1
RUN groupadd --gid 1000 trial && useradd --create-home --uid 1000 --gid 1000 trial \
    && mkdir -p /cache /runs /openrl-work && chown -R 1000:1000 /cache /runs /openrl-work
USER 1000:1000
CMD ["python", "-m", "cluster.pod_entry", "--help"]
EOF
"${B[@]}" bud -q --isolation oci --network none -t localhost/oprobe-trial:1 "$ctx" >/dev/null 2>"$WORK/bud.err" \
  && say PASS "buildah bud: trial-like image (RUN under runc, uid 1000, /app)" || { cat "$WORK/bud.err"; die "buildah bud"; }

# --- 5a. the CRI client and pause (Debian's kubernetes source) ---------------------------------
SRC="$WORK/k8s-src"
if [ ! -d "$SRC/gopath/src/k8s.io/kubernetes/cmd" ]; then
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package:'; then
    die "no deb-src entry for kubernetes (scripts/k8s-test-cluster.sh build adds one)"
  fi
  mkdir -p "$SRC/dl" "$SRC/gopath/src/k8s.io"
  (cd "$SRC/dl" && apt-get source -q --download-only kubernetes >/dev/null 2>&1) || die "apt-get source kubernetes"
  tar xzf "$SRC"/dl/kubernetes_*.orig.tar.gz -C "$SRC"
  ln -sfn "$(ls -d "$SRC"/kubernetes-*/ | head -n1)" "$SRC/gopath/src/k8s.io/kubernetes"
fi
TREE="$SRC/gopath/src/k8s.io/kubernetes"
mkdir -p "$TREE/cmd/oprobe-cri" && cp "$HERE/cri_probe/main.go" "$TREE/cmd/oprobe-cri/main.go"
(cd "$TREE" && GOPATH="$SRC/gopath" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$WORK/gocache" \
  nice -n 10 go build -o "$WORK/cri_probe" ./cmd/oprobe-cri) || die "building scripts/cri_probe"
mkdir -p "$WORK/pause"
gcc -Os -static -DVERSION=oprobe -o "$WORK/pause/pause" "$TREE/build/pause/linux/pause.c" && strip "$WORK/pause/pause"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$WORK/pause/Containerfile"
"${B[@]}" bud -q -t localhost/oprobe-pause:1 "$WORK/pause" >/dev/null && say PASS "pause image from kubernetes/build/pause/linux/pause.c"

# --- 4. containerd + CNI -----------------------------------------------------------------------
D="$WORK/containerd"; mkdir -p "$D" "$WORK/cni/net.d"
cat > "$WORK/cni/net.d/10-oprobe.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "oprobe", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.66.0/24"}]], "dataDir": "$WORK/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
start_containerd() {  # RESTRICT_OOM_SCORE_ADJ
  containerd config default \
    | sed -e "s#^root = .*#root = \"$D/root\"#" -e "s#^state = .*#state = \"$D/state\"#" \
          -e "s#address = \"/run/containerd/containerd.sock\"#address = \"$SOCK\"#" \
          -e "s#sandbox_image = .*#sandbox_image = \"localhost/oprobe-pause:1\"#" \
          -e "s#restrict_oom_score_adj = .*#restrict_oom_score_adj = $1#" \
          -e "s#bin_dir = \"/opt/cni/bin\"#bin_dir = \"/usr/lib/cni\"#" \
          -e "s#conf_dir = \"/etc/cni/net.d\"#conf_dir = \"$WORK/cni/net.d\"#" > "$D/config.toml"
  containerd --config "$D/config.toml" > "$D/log" 2>&1 & echo $! > "$D/pid"
  for _ in $(seq 50); do ctr -a "$SOCK" version >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "containerd did not start (see $D/log)"
}
stop_containerd() { kill "$(cat "$D/pid")"; while kill -0 "$(cat "$D/pid")" 2>/dev/null; do sleep 0.2; done; rm -f "$D/pid"; }

start_containerd false
ctr -a "$SOCK" plugins ls | grep -q 'io.containerd.grpc.v1 *cri .*ok' && say PASS "containerd $(ctr -a "$SOCK" version | awk '/Server/{s=1} s&&/Version/{print $2; exit}') up, CRI plugin ok"
for img in oprobe-pause oprobe-trial; do
  "${B[@]}" push -q "localhost/$img:1" "oci-archive:$WORK/$img.tar:localhost/$img:1" >/dev/null
  ctr -a "$SOCK" -n k8s.io images import "$WORK/$img.tar" >/dev/null
done
say PASS "images imported into containerd (k8s.io namespace) from OCI archives"

# --- 5b. CRI cases -----------------------------------------------------------------------------
H="$WORK/hostpaths"; rm -rf "$H" "$WORK/podlogs"; mkdir -p "$H/spec" "$H/emptydir" "$H/rootowned" "$WORK/podlogs"
chmod 0777 "$H/emptydir"; chmod 0755 "$H/rootowned"  # kubelet makes emptyDirs 0777; a volume without fsGroup support stays root's
echo '{"trial_id": "oprobe", "budget": {"max_seconds": 5}}' > "$H/spec/spec.json"
cat > "$WORK/cases.json" <<EOF
[
 {"name": "perms", "args": ["/bin/sh", "-c", "id; touch /etc/x; touch /openrl-work/ok && echo emptydir_writable; touch /runs/ok; cat /proc/self/oom_score_adj"],
  "mounts": [{"host": "$H/emptydir", "container": "/openrl-work"}, {"host": "$H/rootowned", "container": "/runs"}]},
 {"name": "oom", "memory_mib": 64, "args": ["/usr/bin/tail", "-n", "1", "/dev/zero"]},
 {"name": "sigterm", "stop_after_s": 1.5, "args": ["/bin/sh", "-c", "trap 'echo got_TERM; exit 143' TERM; echo ready; while :; do sleep 0.2; done"]},
 {"name": "entry-wall", "args": ["python", "-m", "cluster.pod_entry", "--spec", "/etc/openrl-agent/spec.json", "--out", "/openrl-work/wall", "--wall-s", "2", "--",
   "/bin/sh", "-c", "trap 'echo trial_got_TERM; exit 143' TERM; echo trial_running; while :; do sleep 0.2; done", "trial"],
  "mounts": [{"host": "$H/spec", "container": "/etc/openrl-agent", "readonly": true}, {"host": "$H/emptydir", "container": "/openrl-work"}]},
 {"name": "entry-sigterm", "stop_after_s": 2, "args": ["python", "-m", "cluster.pod_entry", "--spec", "/etc/openrl-agent/spec.json", "--out", "/openrl-work/term", "--",
   "/bin/sh", "-c", "trap 'echo trial_got_TERM; exit 143' TERM; echo trial_running; while :; do sleep 0.2; done", "trial"],
  "mounts": [{"host": "$H/spec", "container": "/etc/openrl-agent", "readonly": true}, {"host": "$H/emptydir", "container": "/openrl-work"}]},
 {"name": "entry-oom", "memory_mib": 128, "args": ["python", "-m", "cluster.pod_entry", "--spec", "/etc/openrl-agent/spec.json", "--out", "/openrl-work/oom", "--",
   "python", "-c", "b = bytearray(400 << 20); print('allocated')"],
  "mounts": [{"host": "$H/spec", "container": "/etc/openrl-agent", "readonly": true}, {"host": "$H/emptydir", "container": "/openrl-work"}]}
]
EOF
say INFO "CRI with restrict_oom_score_adj = false (containerd's default; a kubelet node's usual setting):"
"$WORK/cri_probe" "$SOCK" localhost/oprobe-trial:1 "$WORK/cases.json" "$WORK/podlogs" 2>&1 | head -n 3 | sed 's/^/      /' || true
stop_containerd
say INFO "CRI with restrict_oom_score_adj = true (clamps every oom_score_adj to containerd's own, 0 here):"
start_containerd true
"$WORK/cri_probe" "$SOCK" localhost/oprobe-trial:1 "$WORK/cases.json" "$WORK/podlogs" 2>&1 | sed 's/^/      /'
for d in wall term oom; do
  f="$H/emptydir/$d"
  [ -d "$f" ] && say INFO "pod_entry --out /openrl-work/$d: $(ls "$f" | tr '\n' ' ')"
done
stop_containerd
say INFO "done; work dir kept as a cache: $WORK"
