"""What a real cluster does to trials, on the loopback API server (marker k8s): pending reasons and the
start-up deadline, streamed metrics, results that are never lost, preemption, RBAC, Kueue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, utils

from cluster.base import LauncherError, wait
from cluster.check import check_cluster, rbac_manifests
from cluster.k8s_launcher import MANAGED_SELECTOR, KubernetesLauncher
from cluster.k8s_view import MISSING, ClusterView, waiting_reason
from tests.cluster.conftest import fake_spec
from tests.cluster.k8s_support import K8sCluster, k8s_config
from tests.cluster.test_conformance import wait_for

pytestmark = pytest.mark.k8s


def test_an_unschedulable_trial_says_why_and_fails_at_its_startup_deadline(k8s_cluster: K8sCluster,
                                                                            tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("unsched"), gpus=1, startup_timeout_s=6)
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    wait_for(lambda: launcher.status(handle) == "queued" and "Insufficient nvidia.com/gpu" in
             (launcher.detail(handle) or ""), timeout_s=30, what="the scheduler's reason")
    assert launcher.detail(handle).startswith("Unschedulable: 0/1 nodes are available")
    state = json.loads((tmp_path / "s-test/trials/t1/launcher.json").read_text())
    assert "Insufficient nvidia.com/gpu" in state["waiting"]  # for readers of the trial dir (live view)
    assert wait(launcher, [handle], timeout_s=30)[handle] == "failed"
    error = launcher.result(handle)["error"]
    assert error["kind"] == "timeout" and "did not start within startup_timeout_s=6s" in error["message"]
    assert "Insufficient nvidia.com/gpu" in error["message"]
    wait_for(lambda: not client.BatchV1Api(k8s_cluster.api()).list_namespaced_job(config.namespace).items,
             timeout_s=30, what="the Job deleted")


def test_image_pull_backoff_and_run_as_non_root(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("pull")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns, image="registry.invalid/openrl:cpu"), runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    wait_for(lambda: "ImagePullBackOff" in (launcher.detail(handle) or ""), timeout_s=30, what="image pull reason")
    assert launcher.status(handle) == "queued"
    launcher.cancel(handle)
    # A pod that would run as the image's named user cannot start; the trial fails at once and says so.
    batch = client.BatchV1Api(k8s_cluster.api())
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    from cluster.k8s_manifests import build_manifests

    cm, job = build_manifests(fake_spec("t2"), launcher.config)
    for obj in (job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0]):
        obj["securityContext"].pop("runAsUser")
    client.CoreV1Api(k8s_cluster.api()).create_namespaced_config_map(ns, cm)
    batch.create_namespaced_job(ns, job)
    [h2] = launcher.reattach("s-test")[1:]
    assert wait(launcher, [h2], timeout_s=40)[h2] == "failed"
    assert "CreateContainerConfigError" in launcher.result(h2)["error"]["message"]


def test_failed_create_is_reported(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("quota")
    core = client.CoreV1Api(k8s_cluster.api())
    core.create_namespaced_resource_quota(ns, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    wait_for(lambda: core.read_namespaced_resource_quota("no-pods", ns).status.hard, what="the quota counted")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    wait_for(lambda: (launcher.detail(handle) or "").startswith("FailedCreate:"), timeout_s=40, what="FailedCreate")
    assert "quota" in launcher.detail(handle) and launcher.status(handle) == "queued"
    launcher.cancel(handle)


def test_metrics_and_evals_stream_back_without_a_shared_volume(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("stream"), stream_interval_s=0.5)
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", mode="stream", steps=5, step_s=2.0))
    trial_dir = tmp_path / "s-test/trials/t1"
    wait_for(lambda: launcher.status(handle) == "running" and (trial_dir / "eval.jsonl").exists(),
             timeout_s=40, what="an eval line copied back while running")
    assert launcher.status(handle) == "running"
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    metrics = [json.loads(x) for x in (trial_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (trial_dir / "eval.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]  # each once, though read many times
    assert [(e["step"], e["accuracy"]) for e in evals] == [(s, s / 10) for s in range(1, 6)]


def test_with_a_runs_pvc_the_agent_need_not_mount_it(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("pvc-log"), runs_pvc="openrl-runs", stream_interval_s=0.5)
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)  # not the volume: the result comes from the log
    handle = launcher.submit(fake_spec("t1", session="s-pvclog", mode="stream", steps=4, step_s=1.5))
    trial_dir = tmp_path / "s-pvclog/trials/t1"
    wait_for(lambda: launcher.status(handle) == "running" and (trial_dir / "eval.jsonl").exists(),
             timeout_s=40, what="an eval line streamed back while running, though the pod writes to a volume")
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    assert launcher.result(handle)["metrics"]["dev_accuracy_after"] == 0.5
    metrics = [json.loads(x) for x in (trial_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]


def test_a_preempted_pod_is_retried_and_the_trial_counted_once(k8s_cluster: K8sCluster) -> None:
    # The 1.20 server drops podFailurePolicy, so backoffLimit 1 stands in for the DisruptionTarget rule.
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("preempt"), runs_pvc="openrl-runs", backoff_limit=1)
    launcher = KubernetesLauncher(config, runs_dir=k8s_cluster.pvc_dir)
    handle = launcher.submit(fake_spec("t1", session="s-preempt", mode="preempt_once"))
    trial_dir = k8s_cluster.pvc_dir / "s-preempt/trials/t1"
    wait_for(lambda: (trial_dir / "result.terminated.json").exists(), timeout_s=40, what="the first pod stopped")
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    assert launcher.result(handle)["status"] == "succeeded"
    assert json.loads((trial_dir / "result.terminated.json").read_text())["status"] == "failed"


def test_a_relist_drops_jobs_deleted_while_nobody_watched(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("relist")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=60))
    name = handle.ref.split("/")[1]
    view = ClusterView(k8s_cluster.api(), ns, MANAGED_SELECTOR)  # no watch: only lists
    view.relist()
    assert view.job(name) is not MISSING
    client.BatchV1Api(k8s_cluster.api()).delete_namespaced_job(name, ns, propagation_policy="Background")
    wait_for(lambda: not client.BatchV1Api(k8s_cluster.api()).list_namespaced_job(ns).items, what="Job gone")
    view.relist()
    assert view.job(name) is MISSING
    assert wait(launcher, [handle], timeout_s=30)[handle] == "lost"


def test_an_unreadable_log_is_retried_not_recorded_as_a_failure(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    """The viewer user gets exactly `cluster rbac`'s Role, at first without pods/log."""
    ns = k8s_cluster.namespace("rbac")
    rbac = client.RbacAuthorizationV1Api(k8s_cluster.api())
    role, binding = rbac_manifests(ns, {"kind": "User", "name": "viewer"})
    full_rules = role["rules"]
    role["rules"] = [r for r in full_rules if r["resources"] != ["pods/log"]]
    rbac.create_namespaced_role(ns, role)
    rbac.create_namespaced_role_binding(ns, binding)
    config = k8s_config(k8s_cluster, ns, kubeconfig=str(k8s_cluster.viewer_kubeconfig))
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    wait_for(lambda: "cannot read the pod log (403" in (launcher.detail(handle) or ""), timeout_s=40,
             what="collection retrying")
    assert launcher.status(handle) == "running" and not (tmp_path / "s-test/trials/t1/result.json").exists()
    rbac.patch_namespaced_role(role["metadata"]["name"], ns, {"rules": full_rules})
    assert wait(launcher, [handle], timeout_s=30)[handle] == "succeeded"
    assert launcher.view.pods.lists == 1, launcher.view.error  # the Role lets it watch: no relist each second
    checked = {i.name: i for i in check_cluster(config)}
    assert checked["rbac"].ok, checked["rbac"].detail  # the printed Role is enough for every check too


def test_a_result_whose_pod_is_gone_is_lost_with_the_reason(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("gone")
    first = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    handle = first.submit(fake_spec("t1"))
    first.close()
    first = None  # the agent is away while the Job finishes and its node goes away
    batch, core = client.BatchV1Api(k8s_cluster.api()), client.CoreV1Api(k8s_cluster.api())
    name = handle.ref.split("/")[1]
    wait_for(lambda: (batch.read_namespaced_job(name, ns).status.succeeded or 0) == 1, timeout_s=40, what="Complete")
    core.delete_collection_namespaced_pod(ns, label_selector=f"job-name={name}", grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, what="pods gone")
    second = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    [h] = second.reattach("s-test")
    assert second.status(h) == "lost"
    assert "pod and log were gone" in second.result(h)["error"]["message"]


# Kueue >= 0.16 stores v1beta2 and will stop serving v1beta1: the stub serves only v1beta2.
KUEUE_CRDS = [{
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{plural}.kueue.x-k8s.io"},
    "spec": {"group": "kueue.x-k8s.io", "scope": "Namespaced",
             "names": {"plural": plural, "singular": plural[:-1], "kind": kind},
             "versions": [{"name": "v1beta2", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
} for plural, kind in (("localqueues", "LocalQueue"), ("workloads", "Workload"))]


def test_kueue_queue_admission(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("kueue")
    config = k8s_config(k8s_cluster, ns, kueue_queue="team-a")
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    ext = client.ApiextensionsV1Api(k8s_cluster.api())
    if not any(c.metadata.name == "localqueues.kueue.x-k8s.io" for c in ext.list_custom_resource_definition().items):
        with pytest.raises(LauncherError, match="Kueue is not installed"):
            launcher.submit(fake_spec("t1"))
        assert "Kueue is not installed" in {i.name: i for i in check_cluster(config)}["kueue"].detail
        for crd in KUEUE_CRDS:
            utils.create_from_dict(k8s_cluster.api(), crd)
        wait_for(lambda: _served(k8s_cluster), what="Kueue CRDs served")
    custom = client.CustomObjectsApi(k8s_cluster.api())
    with pytest.raises(LauncherError, match="LocalQueue 'team-a' does not exist"):
        launcher.submit(fake_spec("t1"))
    assert "kubectl" not in {i.name: i for i in check_cluster(config)}["kueue"].detail
    custom.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", ns, "localqueues", {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "team-a"},
        "spec": {"clusterQueue": "cq"}})
    kueue_check = {i.name: i for i in check_cluster(config)}["kueue"]
    assert kueue_check.ok and "v1beta2" in kueue_check.detail, kueue_check.detail
    handle = launcher.submit(fake_spec("t1"))
    job = client.BatchV1Api(k8s_cluster.api()).read_namespaced_job(handle.ref.split("/")[1], ns)
    custom.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", ns, "workloads", {  # as Kueue writes it
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload", "metadata": {
            "name": "job-" + job.metadata.name, "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                                    "name": job.metadata.name, "uid": job.metadata.uid}]},
        "spec": {"queueName": "team-a"},
        "status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                   "message": "couldn't assign flavors to pod set main: insufficient quota",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    # The 1.20 server predates Job.spec.suspend (1.21), so the Job runs at once here; the reason a
    # suspended Job would show is read off the real Workload list all the same.
    view = ClusterView(k8s_cluster.api(), ns, MANAGED_SELECTOR, kueue=True)
    message = view.read_workloads()[job.metadata.uid]
    job.spec.suspend = True
    reason, permanent = waiting_reason(job, [], None, message, "team-a")
    assert reason == ("waiting for Kueue admission in queue team-a: couldn't assign flavors to pod set main: "
                      "insufficient quota") and not permanent
    launcher.cancel(handle)


def _served(k8s_cluster: K8sCluster) -> bool:
    try:
        client.CustomObjectsApi(k8s_cluster.api()).list_namespaced_custom_object(
            "kueue.x-k8s.io", "v1beta2", "default", "localqueues")
        return True
    except client.ApiException:
        return False
