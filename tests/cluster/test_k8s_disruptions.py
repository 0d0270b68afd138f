"""What a real cluster does to a session over hours, on the loopback API server (marker k8s): dropped
connections, logs cut off mid-read, deadline kills, evictions, pods deleted under a running Job, a Job
created while the watcher re-lists, and objects left in the namespace by someone else.

The test node agent (scripts/k8s_node_agent.py) injects what a kubelet would do, through pod
annotations; the network blip is a TCP proxy in front of the API server that resets every connection.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kubernetes import client

from cluster.base import LauncherError, wait
from cluster.k8s_client import Throttle, connect
from cluster.k8s_launcher import MANAGED_SELECTOR, KubernetesLauncher
from cluster.k8s_manifests import build_manifests
from cluster.k8s_view import MISSING, ClusterView
from tests.cluster.conftest import fake_spec
from tests.cluster.k8s_support import DroppingProxy, K8sCluster, api_port, k8s_config
from tests.cluster.test_conformance import wait_for

pytestmark = pytest.mark.k8s
INJECT = "openrl-test.invalid/"


def test_a_dropped_connection_leaves_the_trial_running_and_it_is_collected_later(k8s_cluster: K8sCluster,
                                                                                  tmp_path: Path) -> None:
    proxy = DroppingProxy(api_port(k8s_cluster))
    try:
        config = k8s_config(k8s_cluster, k8s_cluster.namespace("blip"), stream_interval_s=0.2,
                            kubeconfig=str(proxy.kubeconfig(k8s_cluster, tmp_path / "proxy.kubeconfig")))
        # Few, short retries: the outage must outlast them and reach the launcher itself.
        api = connect(config.kubeconfig, throttle=Throttle(retries=1, max_backoff_s=0.2))
        launcher = KubernetesLauncher(config, runs_dir=tmp_path, api_client=api)
        handle = launcher.submit(fake_spec("t1", mode="stream", steps=4, step_s=1.0))
        wait_for(lambda: launcher.status(handle) == "running", timeout_s=30, what="running")
        proxy.drop()
        seen = set()
        until = time.monotonic() + 8  # the trial finishes meanwhile; nobody can see it
        while time.monotonic() < until:
            seen.add(launcher.status(handle))  # never raises, never a verdict
            time.sleep(0.2)
        assert seen == {"running"}
        proxy.restore()
        assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded", launcher.detail(handle)
        assert launcher.result(handle)["metrics"]["dev_accuracy_after"] == 0.5
        # The watches resumed from the last resourceVersion they had seen: no relist after the outage.
        assert (launcher.view.jobs.lists, launcher.view.pods.lists) == (1, 1)
        launcher.close()
    finally:
        proxy.close()


def test_a_log_cut_off_mid_read_is_read_again_not_recorded(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("cutlog"), pod_annotations={INJECT + "log-resets": "2"})
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1"))
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    assert launcher.result(handle)["metrics"]["dev_accuracy_after"] == 0.5
    assert "OPENRL_RESULT_JSON" in (tmp_path / "s-test/trials/t1/trial.log").read_text().splitlines()[-1]


def test_a_deadline_kill_is_a_timeout_with_the_limit(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("deadline"), active_deadline_s=4)
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=120))
    assert wait(launcher, [handle], timeout_s=60)[handle] == "failed"  # not "lost": the Job says why
    error = launcher.result(handle)["error"]
    assert error["kind"] == "timeout" and "activeDeadlineSeconds=4s" in error["message"], error


def test_an_eviction_names_the_resource_and_the_fix(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    kubelet = "Pod ephemeral local storage usage exceeds the total limit of containers 10Gi."
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("evict"), pod_annotations={
        INJECT + "evict-after-s": "2", INJECT + "evict-message": kubelet})
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=60))
    assert wait(launcher, [handle], timeout_s=60)[handle] == "failed"
    message = launcher.result(handle)["error"]["message"]
    assert message.startswith(f"evicted: ephemeral storage: {kubelet}") and "raise ephemeral_storage" in message


def test_a_pod_deleted_under_a_running_job_is_not_a_startup_timeout(k8s_cluster: K8sCluster,
                                                                     tmp_path: Path) -> None:
    """The Job replaces the pod (its replacement starts late, as on a fresh node); the trial's start-up
    clock restarts when its pod goes, not from the Job's start long ago."""
    config = k8s_config(k8s_cluster, k8s_cluster.namespace("podgone"), startup_timeout_s=6,
                        pod_annotations={INJECT + "delete-after-s": "8"})
    launcher = KubernetesLauncher(config, runs_dir=tmp_path)
    handle = launcher.submit(fake_spec("t1", sleep=10))
    assert wait(launcher, [handle], timeout_s=90)[handle] == "succeeded", launcher.result(handle)
    pods = client.CoreV1Api(k8s_cluster.api()).list_namespaced_pod(config.namespace).items
    assert len(pods) <= 2


def test_a_job_created_while_the_view_relists_is_never_missing(k8s_cluster: K8sCluster) -> None:
    ns = k8s_cluster.namespace("race")
    api = k8s_cluster.api()
    batch = client.BatchV1Api(api)
    _, job = build_manifests(fake_spec("t1", sleep=30), k8s_config(k8s_cluster, ns))
    view = ClusterView(api, ns, MANAGED_SELECTOR)
    view.relist()
    real_list = view.jobs.list_fn

    def list_then_create(*args: object, **kwargs: object) -> object:
        listed = real_list(*args, **kwargs)  # the LIST answers from before the create
        view.put(batch.create_namespaced_job(ns, job))  # what submit does, meanwhile
        return listed

    view.jobs.list_fn = list_then_create
    view.relist()
    assert view.job(job["metadata"]["name"]) is not MISSING
    view.jobs.list_fn = real_list
    view.relist()  # the next list has it; a later one without it means it is gone
    assert view.job(job["metadata"]["name"]) is not MISSING
    batch.delete_namespaced_job(job["metadata"]["name"], ns, propagation_policy="Background")
    wait_for(lambda: not batch.list_namespaced_job(ns).items, what="Job gone")
    view.relist()
    assert view.job(job["metadata"]["name"]) is MISSING


def test_an_object_of_another_session_is_never_adopted(k8s_cluster: K8sCluster, tmp_path: Path) -> None:
    ns = k8s_cluster.namespace("adopt")
    launcher = KubernetesLauncher(k8s_config(k8s_cluster, ns), runs_dir=tmp_path)
    configmap, _ = build_manifests(fake_spec("t1"), launcher.config)
    configmap["metadata"]["labels"]["openrl-agent/session"] = "s-other-machine"
    client.CoreV1Api(k8s_cluster.api()).create_namespaced_config_map(ns, configmap)
    with pytest.raises(LauncherError, match="exists and is not ours: it lacks .*openrl-agent/session=s-test"):
        launcher.submit(fake_spec("t1"))
    assert not client.BatchV1Api(k8s_cluster.api()).list_namespaced_job(ns).items
    assert not (tmp_path / "s-test/trials/t1").exists()  # no local trace: the trial can be resubmitted
    # Our own leftover (an agent that lost its local files) is adopted as before.
    client.CoreV1Api(k8s_cluster.api()).delete_namespaced_config_map(configmap["metadata"]["name"], ns)
    configmap["metadata"]["labels"]["openrl-agent/session"] = "s-test"
    client.CoreV1Api(k8s_cluster.api()).create_namespaced_config_map(ns, configmap)
    handle = launcher.submit(fake_spec("t1"))
    assert wait(launcher, [handle], timeout_s=60)[handle] == "succeeded"
    spec = json.loads((tmp_path / "s-test/trials/t1/launch_spec.json").read_text())
    assert spec["trial_id"] == "t1"
