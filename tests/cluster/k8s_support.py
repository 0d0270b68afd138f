"""The loopback control plane for `k8s` tests (scripts/k8s-test-cluster.sh), and the k8s backend."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from cluster.base import TrialHandle
from cluster.k8s_client import connect
from cluster.k8s_launcher import KubernetesLauncher
from cluster.k8s_manifests import KubernetesConfig
from tests.cluster.conftest import FAKE_TRIAL, Backend

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "k8s-test-cluster.sh"


def bin_dir() -> Path:
    cache = Path(os.environ.get("OPENRL_AGENT_CACHE", Path.home() / ".cache" / "openrl-agent"))
    return cache / "k8s" / "bin"


def missing_reason() -> str | None:
    """Why the control plane cannot start here, or None."""
    if not (bin_dir() / "kube-apiserver").exists() or not (bin_dir() / "kube-controller-manager").exists():
        return f"no kube-apiserver/kube-controller-manager in {bin_dir()}: run `{SCRIPT.name} build` (~7 min)"
    if shutil.which("etcd") is None:
        return "no etcd: `apt-get install etcd-server` (scripts/k8s-test-cluster.sh build does it)"
    return None


@dataclass
class K8sCluster:
    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def viewer_kubeconfig(self) -> Path:
        return self.state / "viewer.kubeconfig"

    @property
    def pvc_dir(self) -> Path:
        return self.state / "pvc" / "openrl-runs"

    def api(self) -> client.ApiClient:
        return connect(str(self.kubeconfig))

    def namespace(self, name: str) -> str:
        """A fresh namespace per test (job names are deterministic, so tests must not share one)."""
        ns = "t-" + hashlib.sha256(name.encode()).hexdigest()[:6] + "-" + uuid.uuid4().hex[:6]
        try:
            client.CoreV1Api(self.api()).create_namespace({"metadata": {"name": ns}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        return ns


def start_cluster(state: Path) -> K8sCluster:
    subprocess.run([str(SCRIPT), "up", str(state)], check=True, timeout=240)
    return K8sCluster(state)


def stop_cluster(state: Path) -> None:
    subprocess.run([str(SCRIPT), "down", str(state)], check=False, timeout=60)


def k8s_config(cluster: K8sCluster, namespace: str, **overrides) -> KubernetesConfig:
    kw = {"namespace": namespace, "kubeconfig": str(cluster.kubeconfig), "cpu": "1", "memory": "1Gi",
          "trial_command": ["python", str(FAKE_TRIAL)], "ttl_s": 600, **overrides}
    return KubernetesConfig(**kw)


def k8s_backend(cluster: K8sCluster, tmp_path: Path, test_name: str) -> Backend:
    config = k8s_config(cluster, cluster.namespace(test_name))
    api = cluster.api()

    def gone(handle: TrialHandle) -> bool:
        name = handle.ref.rsplit("/", 1)[-1]
        try:
            client.BatchV1Api(api).read_namespaced_job(name, config.namespace)
            return False
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        pods = client.CoreV1Api(api).list_namespaced_pod(config.namespace, label_selector=f"job-name={name}")
        return not pods.items

    return Backend("k8s", lambda: KubernetesLauncher(config, runs_dir=tmp_path / "runs"), gone)


class DroppingProxy:
    """A TCP proxy in front of the API server that can drop every connection (a network blip, a control
    plane upgrade): while down, open connections are reset and new ones are reset on accept."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.down = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def kubeconfig(self, cluster: K8sCluster, path: Path) -> Path:
        """The cluster's kubeconfig with the server address pointing at this proxy (TLS passes through)."""
        text = cluster.kubeconfig.read_text()
        path.write_text(text.replace(f"127.0.0.1:{self.upstream_port}", f"127.0.0.1:{self.port}"))
        return path

    def drop(self) -> None:
        self.down.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            _reset(conn)

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.drop()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                _reset(conn)
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Close with RST where we can: the peer sees 'connection reset', as when a server goes away.
    shutdown() first: a close() alone does not wake (or reset) a socket another thread is reading."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def api_port(cluster: K8sCluster) -> int:
    server = next(line for line in cluster.kubeconfig.read_text().splitlines() if "server:" in line)
    return int(server.split("127.0.0.1:", 1)[1].split('"', 1)[0])
