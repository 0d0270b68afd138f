"""The loopback control plane for `k8s` tests (scripts/k8s-test-cluster.sh), and the k8s backend."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
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
