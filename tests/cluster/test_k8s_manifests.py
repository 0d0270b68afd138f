"""The Job and ConfigMap a trial becomes (pure; no cluster), and the in-pod entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.base import LauncherError
from cluster.k8s_launcher import job_phase
from cluster.k8s_manifests import KubernetesConfig, build_manifests, job_name
from cluster.pod_entry import RESULT_MARKER, parse_result_line
from tests.cluster.conftest import FAKE_TRIAL, fake_spec


def test_job_carries_labels_spec_configmap_and_limits() -> None:
    spec = fake_spec("t0003", session="s-20261125")
    cm, job = build_manifests(spec, KubernetesConfig(namespace="ml", image="img:1", cpu="4", memory="16Gi",
                                                     ttl_s=120, backoff_limit=1, active_deadline_s=900))
    name = job["metadata"]["name"]
    assert name == cm["metadata"]["name"] == job_name("s-20261125", "t0003")
    assert job["metadata"]["namespace"] == cm["metadata"]["namespace"] == "ml"
    labels = job["metadata"]["labels"]
    assert labels["openrl-agent/session"] == "s-20261125" and labels["openrl-agent/trial"] == "t0003"
    assert json.loads(cm["data"]["spec.json"]) == spec
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"], job["spec"]["ttlSecondsAfterFinished"]) \
        == (1, 900, 120)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "img:1" and pod["restartPolicy"] == "Never"
    assert container["command"][:3] == ["python", "-m", "cluster.pod_entry"]
    assert container["command"][-3:] == ["python", "-m", "rl_core.trial"]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}
    assert {"name": "OPENRL_TORCH_THREADS", "value": "4"} in container["env"]
    assert {"name": "spec", "configMap": {"name": name}} in pod["volumes"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_gpu_trials_get_gke_selector_toleration_and_kueue() -> None:
    _, job = build_manifests(fake_spec("t1"), KubernetesConfig(gpus=1, gpu_type="nvidia-l4", kueue_queue="team-a"))
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True


def test_shared_runs_volume_writes_into_the_session_tree() -> None:
    _, job = build_manifests(fake_spec("t1", session="s1"), KubernetesConfig(runs_pvc="runs", runs_mount="/mnt/runs"))
    pod = job["spec"]["template"]["spec"]
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--out") + 1] == "/mnt/runs/s1/trials/t1"
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "runs"}} in pod["volumes"]


def test_manifests_are_a_pure_function_of_spec_and_config() -> None:
    config = KubernetesConfig()
    assert build_manifests(fake_spec("t1"), config) == build_manifests(fake_spec("t1"), config)
    assert job_name("s", "T_1.x") != job_name("s", "t-1-x")  # slugs collide, the hash does not
    assert len(job_name("s" * 63, "t" * 63)) <= 52


@pytest.mark.parametrize("kw", [{"namespace": "Bad_NS"}, {"gpus": -1}, {"trial_command": []}, {"cpu": "lots"}])
def test_bad_config_is_rejected_with_the_fix(kw: dict) -> None:
    with pytest.raises(LauncherError):
        KubernetesConfig(**kw)


def test_job_phase_from_conditions() -> None:
    from kubernetes import client

    def job(**status) -> client.V1Job:
        return client.V1Job(spec=client.V1JobSpec(template=client.V1PodTemplateSpec()),
                            status=client.V1JobStatus(**status))

    done = client.V1JobCondition(type="Complete", status="True")
    failed = client.V1JobCondition(type="Failed", status="True", reason="BackoffLimitExceeded")
    assert job_phase(job()) == "queued"
    assert job_phase(job(active=1)) == "running"
    assert job_phase(job(conditions=[done], succeeded=1)) == "succeeded"
    assert job_phase(job(conditions=[failed])) == "failed"


@pytest.mark.parametrize(("mode", "code", "status"), [("ok", 0, "succeeded"), ("segv", 1, "failed")])
def test_pod_entry_prints_the_result_last(tmp_path: Path, mode: str, code: int, status: str) -> None:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(fake_spec("t1", mode=mode)))
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "cluster.pod_entry", "--spec", str(spec_path), "--out", str(out),
                           "--", sys.executable, str(FAKE_TRIAL)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(RESULT_MARKER)
    result = parse_result_line(proc.stdout)
    assert result["status"] == status and result["trial_id"] == "t1"
    assert json.loads((out / "result.json").read_text()) == result
    assert "fake trial t1" in (out / "trial.log").read_text()
    if mode == "segv":
        assert "SIGSEGV" in result["error"]["message"]
