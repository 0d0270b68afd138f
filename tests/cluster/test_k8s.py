"""KubernetesLauncher against the real loopback API server (marker k8s), beyond the conformance suite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kubernetes import client

from cluster.base import LauncherError, wait
from cluster.check import check_cluster
from cluster.k8s_launcher import KubernetesLauncher
from tests.cluster.conftest import fake_spec
from tests.cluster.k8s_support import K8sCluster, k8s_config
from tests.cluster.test_conformance import wait_for

pytestmark = pytest.mark.k8s


def test_job_objects_on_the_server(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("objects")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", session="s-obj", sleep=1))
    name = handle.ref.split("/")[1]
    batch, core = client.BatchV1Api(k8s_cluster.api()), client.CoreV1Api(k8s_cluster.api())
    job = batch.read_namespaced_job(name, ns)
    assert job.metadata.labels["openrl-agent/session"] == "s-obj"
    assert job.spec.ttl_seconds_after_finished == 600  # the alpha TTL field survived the 1.20 server
    cm = core.read_namespaced_config_map(name, ns)
    assert cm.metadata.owner_references[0].uid == job.metadata.uid  # deleting the Job collects the spec
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    # The result came through the pod log (no shared volume) and was copied into the trial dir.
    assert json.loads((tmp_path / "s-obj/trials/t1/result.json").read_text())["status"] == "succeeded"
    assert "OPENRL_RESULT_JSON" in (tmp_path / "s-obj/trials/t1/trial.log").read_text()


def test_logs_stream_through_the_api_server_while_running(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, k8s_cluster.namespace("logs")), runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=5))
    wait_for(lambda: "fake trial t1" in launcher.logs(handle), timeout_s=30, what="live pod log")
    launcher.cancel(handle)


def test_shared_runs_volume(k8s_cluster: K8sCluster) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("pvc"), runs_pvc="openrl-runs")
    launcher = KubernetesLauncher(config, runs_dir=k8s_cluster.pvc_dir)
    handle = launcher.submit(fake_spec("t1", session="s-pvc"))
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    trial_dir = k8s_cluster.pvc_dir / "s-pvc" / "trials" / "t1"
    assert launcher.result(handle)["trial_id"] == "t1"
    assert (trial_dir / "trial.log").exists() and (trial_dir / "launch_spec.json").exists()


def test_a_gpu_trial_without_gpu_nodes_stays_queued(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("gpu"), gpus=1, gpu_type="nvidia-l4")
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    pods = client.CoreV1Api(k8s_cluster.api())
    wait_for(lambda: any(c.reason == "Unschedulable" for p in pods.list_namespaced_pod(config.namespace).items
                         for c in p.status.conditions or []), timeout_s=30, what="unschedulable pod")
    assert launcher.status(handle) == "queued"
    launcher.cancel(handle)
    assert launcher.status(handle) == "cancelled"


def test_a_bad_kubeconfig_gives_a_clear_error(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(LauncherError, match="no kubeconfig at .*nope.yaml"):
        KubernetesLauncher(k8s_config(k8s_cluster, "default", kubeconfig=str(missing)), runs_dir=tmp_path)
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("this: [is not a kubeconfig")
    with pytest.raises(LauncherError, match="kubeconfig"):
        KubernetesLauncher(k8s_config(k8s_cluster, "default", kubeconfig=str(garbage)), runs_dir=tmp_path)
    expired = tmp_path / "expired.yaml"
    expired.write_text(k8s_cluster.kubeconfig.read_text().replace("token: \"admin-", "token: \"expired-"))
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, "default", kubeconfig=str(expired)), runs_dir=tmp_path)
    with pytest.raises(LauncherError, match="401 Unauthorized.*expired"):
        launcher.submit(fake_spec("t1"))
    assert not (tmp_path / "s-test" / "trials" / "t1").exists()  # nothing half-submitted to trip a retry


def test_cluster_check_reports_each_problem(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("check")
    good = {i.name: i for i in check_cluster(k8s_config(k8s_cluster, ns))}
    assert all(i.ok for i in good.values()), good
    assert "v1.20" in good["access"].detail and "allocatable GPUs: none" in good["gpus"].detail

    absent = {i.name: i for i in check_cluster(k8s_config(k8s_cluster, "no-such-ns"))}
    assert not absent["namespace"].ok and "kubectl create namespace no-such-ns" in absent["namespace"].detail

    viewer = {i.name: i for i in check_cluster(k8s_config(k8s_cluster, ns, kubeconfig=str(k8s_cluster.viewer_kubeconfig)))}
    assert not viewer["rbac"].ok and "create jobs" in viewer["rbac"].detail

    expired = tmp_path / "expired.yaml"
    expired.write_text(k8s_cluster.kubeconfig.read_text().replace("token: \"admin-", "token: \"expired-"))
    [*_, access] = check_cluster(k8s_config(k8s_cluster, ns, kubeconfig=str(expired)))
    assert not access.ok and "expired" in access.detail

    down = tmp_path / "down.yaml"
    down.write_text(re.sub(r"https://127.0.0.1:\d+", "https://127.0.0.1:9", k8s_cluster.kubeconfig.read_text()))
    [*_, unreachable] = check_cluster(k8s_config(k8s_cluster, ns, kubeconfig=str(down)))
    assert not unreachable.ok and "cannot reach the Kubernetes API server" in unreachable.detail
