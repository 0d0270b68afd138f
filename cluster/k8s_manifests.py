"""Kubernetes objects for one trial: a ConfigMap holding the spec and a batch/v1 Job running it.

`build_manifests(spec, config)` is a pure function (plain dicts, no client calls), so what a trial
would submit can be printed, diffed and tested without a cluster.

Pod layout: the spec ConfigMap is mounted at /etc/openrl-agent/spec.json; the trial writes to
`<runs_mount>/<session>/trials/<trial_id>` on the shared runs volume when `runs_pvc` is set
(a ReadWriteMany PVC, or a GCS FUSE-backed one on GKE), otherwise to an emptyDir, in which case
the in-pod entry point (cluster/pod_entry.py) prints result.json as its last log line.

GPU defaults follow GKE: GPU nodes carry `cloud.google.com/gke-accelerator=<type>` and the taint
`nvidia.com/gpu=present:NoSchedule`, so a GPU trial gets that nodeSelector (when `gpu_type` is
set) and a toleration for the taint, and its spec's `device: auto` becomes `cuda` (a pod that holds
a GPU it cannot see fails at once instead of training on CPU). With `kueue_queue`, the Job carries
Kueue's queue label and is created suspended; Kueue unsuspends it when the queue's quota admits it.

Pods pass the "restricted" Pod Security level: a numeric non-root uid (the images' `trial` user,
1000), no privilege escalation, every capability dropped, the RuntimeDefault seccomp profile, and
no service-account token (the pod runs model-written SQL and needs no API access).

Time limits: the in-pod entry point enforces the trial's wall time from the moment the trial
process starts (`--wall-s`), so node scale-up and a multi-GB image pull do not eat into it;
the Job's activeDeadlineSeconds is a backstop of wall time + `startup_timeout_s`. A pod that is
preempted or evicted (condition DisruptionTarget) is retried by the Job without counting against
backoffLimit (podFailurePolicy, Kubernetes >= 1.26; older servers drop the field).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.base import SESSION_LABEL, TRIAL_LABEL, LauncherError, spec_identity
from cluster.outcome import default_wall_s
from rl_core.sessiondir import trial_posix_path

MANAGED_BY = {"app.kubernetes.io/managed-by": "openrl-agent"}
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPEC_MOUNT = "/etc/openrl-agent"
WORK_MOUNT = "/openrl-work"  # unusual on purpose: the test node rewrites it in every argument
CONTAINER = "trial"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENRL_TORCH_THREADS")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?")
TRIAL_UID = 1000  # the `trial` user of docker/Dockerfile.*; numeric so runAsNonRoot can verify it
# A pod the cluster took away (spot preemption, eviction, node drain) is not the trial's failure:
# the Job starts a new pod, and the launcher counts the trial once, when the Job ends.
DISRUPTION_RETRY = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


@dataclass
class KubernetesConfig:
    namespace: str = "default"
    image: str = "openrl-agent-trial:cpu"  # build with docker/Dockerfile.cpu or docker/Dockerfile.cuda
    image_pull_policy: str | None = None  # None: IfNotPresent for a digest (@sha256:...), else Always
    kubeconfig: str | None = None  # None: $KUBECONFIG / ~/.kube/config, or in-cluster config in a pod
    context: str | None = None
    cpu: str = "2"
    memory: str = "8Gi"
    # Local disk for the trial dir (checkpoints, adapter), caches and logs. GKE Autopilot's default is
    # 1Gi, which a gemma-3-270m trial outgrows (a full-model checkpoint with its optimizer state is
    # ~3 GB), and an eviction for it is not retried like a preemption. 10Gi is Autopilot's long-standing
    # per-pod maximum on general-purpose nodes; None leaves it to the cluster's default.
    ephemeral_storage: str | None = "10Gi"
    ephemeral_storage_limit: str | None = None  # None: the request (Autopilot sets limits to requests)
    gpus: int = 0
    gpu_type: str | None = None  # e.g. "nvidia-l4"; becomes the GKE accelerator nodeSelector
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    kueue_queue: str | None = None
    service_account: str | None = None
    backoff_limit: int = 0  # a failed trial is not rerun by the Job (preemption is retried regardless)
    active_deadline_s: int | None = None  # None: wall time + startup_timeout_s (a backstop; see above)
    startup_timeout_s: int = 1800  # a trial whose pod has not started by then fails with the pending reason
    ttl_s: int | None = 7 * 24 * 3600  # a backstop: the launcher deletes each Job once it has collected it
    run_as_user: int = TRIAL_UID
    pod_annotations: dict[str, str] = field(default_factory=dict)  # e.g. {"gke-gcsfuse/volumes": "true"}
    stream_interval_s: float = 30.0  # how often a running trial's metrics are read back from its pod log
    api_qps: float = 20.0  # client-side rate limit of API requests (token bucket), like client-go's QPS
    api_burst: int = 40
    runs_pvc: str | None = None  # shared runs volume claim; the launcher's runs_dir is the same volume
    runs_mount: str = "/runs"
    trial_command: list[str] = field(default_factory=lambda: ["python", "-m", "rl_core.trial"])
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.namespace or ""):
            raise LauncherError(f"namespace {self.namespace!r} is not a valid Kubernetes name "
                                "(lowercase letters, digits and '-')")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise LauncherError(f"gpus must be a whole number >= 0, got {self.gpus!r}")
        if self.backoff_limit < 0:
            raise LauncherError(f"backoff_limit must be >= 0, got {self.backoff_limit}")
        try:
            self.threads()
        except ValueError:
            raise LauncherError(f"cpu {self.cpu!r} is not a Kubernetes CPU quantity (e.g. \"2\" or \"500m\")") from None
        if not self.trial_command:
            raise LauncherError("trial_command must not be empty (default: python -m rl_core.trial)")
        if not isinstance(self.run_as_user, int) or self.run_as_user <= 0:
            raise LauncherError(f"run_as_user must be a numeric uid > 0 (the restricted Pod Security level "
                                f"forbids root), got {self.run_as_user!r}")
        if self.image_pull_policy not in (None, "Always", "IfNotPresent", "Never"):
            raise LauncherError(f"image_pull_policy {self.image_pull_policy!r} must be Always, IfNotPresent or "
                                "Never (or unset: IfNotPresent for a digest, else Always)")
        for key in ("ephemeral_storage", "ephemeral_storage_limit"):
            value = getattr(self, key)
            if value is not None and not QUANTITY.fullmatch(str(value)):
                raise LauncherError(f"{key} {value!r} is not a Kubernetes quantity (e.g. \"10Gi\" or \"500M\")")
        if self.api_qps <= 0 or self.api_burst < 1:
            raise LauncherError("api_qps must be > 0 and api_burst >= 1")

    def pull_policy(self) -> str:
        """A mutable tag is pulled on every start (IfNotPresent would run a stale image); a digest is not."""
        if self.image_pull_policy:
            return self.image_pull_policy
        return "IfNotPresent" if "@sha256:" in self.image else "Always"

    def threads(self) -> int:
        """Thread count for the trial's math libraries: the whole CPUs requested, at least 1."""
        cpu = self.cpu.strip()
        whole = int(cpu[:-1]) // 1000 if cpu.endswith("m") else int(float(cpu))
        return max(1, whole)


def job_name(session: str, trial_id: str) -> str:
    """A DNS-1123 name, unique per (session, trial): a readable slug plus a hash of the exact ids.

    At most 52 characters so the pods' generated names and job-name labels stay within limits.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", f"{session}-{trial_id}".lower()).strip("-")[:34].strip("-")
    digest = hashlib.sha256(f"{session}\0{trial_id}".encode()).hexdigest()[:8]
    return f"openrl-{slug}-{digest}"


def trial_out_dir(session: str, trial_id: str, config: KubernetesConfig) -> str:
    if config.runs_pvc:
        return trial_posix_path(config.runs_mount, session, trial_id)
    return f"{WORK_MOUNT}/trial"


def labels_for(session: str, trial_id: str, config: KubernetesConfig) -> dict[str, str]:
    labels = {**MANAGED_BY, SESSION_LABEL: session, TRIAL_LABEL: trial_id}
    if config.kueue_queue:
        labels[KUEUE_LABEL] = config.kueue_queue
    return labels


def build_manifests(spec: dict[str, Any], config: KubernetesConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ConfigMap, Job) for one trial; pure."""
    session, trial_id = spec_identity(spec)
    name = job_name(session, trial_id)
    labels = labels_for(session, trial_id, config)
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels},
        "data": {"spec.json": json.dumps(pod_spec_json(spec, config), indent=2)},
        "immutable": True,  # the spec a trial ran with; immutable ones also spare the kubelets a watch each
    }
    template_meta: dict[str, Any] = {"labels": {k: v for k, v in labels.items() if k != KUEUE_LABEL}}
    if config.pod_annotations:
        template_meta["annotations"] = dict(config.pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": config.backoff_limit,
        "podFailurePolicy": {"rules": [DISRUPTION_RETRY]},
        "template": {"metadata": template_meta, "spec": _pod_spec(spec, name, session, trial_id, config)},
    }
    deadline = config.active_deadline_s if config.active_deadline_s is not None else _default_deadline(spec, config)
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    if config.ttl_s is not None:
        job_spec["ttlSecondsAfterFinished"] = config.ttl_s
    if config.kueue_queue:
        job_spec["suspend"] = True
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": config.namespace, "labels": labels},
           "spec": job_spec}
    return configmap, job


def _default_deadline(spec: dict[str, Any], config: KubernetesConfig) -> int | None:
    wall = default_wall_s(spec)
    return None if wall is None else int(wall) + config.startup_timeout_s


def pod_spec_json(spec: dict[str, Any], config: KubernetesConfig) -> dict[str, Any]:
    """The spec as the pod runs it: a GPU trial asks for CUDA, so a GPU torch cannot see is an error."""
    if config.gpus and spec.get("device", "auto") == "auto":
        return {**spec, "device": "cuda"}
    return spec


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or (os.sep in value and value.count("/") != 1)


def pod_paths(spec: dict[str, Any], config: KubernetesConfig, runs_dir: Path) -> dict[str, Any]:
    """The spec with this machine's paths made visible to a pod, or a LauncherError saying why not.

    A model or dataset path that exists here does not exist in a pod (unless on the shared runs
    volume); a path that does not exist here is taken for one inside the image. A branch's parent
    weights (`init_from.weights`) must be on the runs volume, where they get the pod's mount path.
    """
    out = dict(spec)
    for key in ("model", "dataset"):
        value = spec.get(key)
        if isinstance(value, str) and _looks_like_path(value) and Path(value).expanduser().exists():
            out[key] = _on_runs_volume(value, key, config, runs_dir)
    init = spec.get("init_from") or {}
    if init.get("weights"):
        if not config.runs_pvc:
            raise LauncherError(f"trial {spec.get('trial_id')} branches from {init.get('trial')}'s weights, which a pod "
                                "can only read from a shared runs volume: set runs_pvc (a ReadWriteMany PVC mounted "
                                "at the agent's runs dir too) or do not branch on Kubernetes")
        out["init_from"] = {**init, "weights": _on_runs_volume(init["weights"], "init_from.weights", config, runs_dir)}
    return out


def _on_runs_volume(value: str, key: str, config: KubernetesConfig, runs_dir: Path) -> str:
    local = Path(value).expanduser().resolve()
    if config.runs_pvc:
        try:
            rel = local.relative_to(Path(runs_dir).resolve())
        except ValueError:
            pass
        else:
            return f"{config.runs_mount.rstrip('/')}/{rel.as_posix()}"
    raise LauncherError(f"{key} {value!r} is a path on this machine, which a pod cannot see; bake it into the "
                        "trial image (docker/) and give its path there, or put it on the shared runs volume "
                        "(runs_pvc)")


def _pod_spec(spec: dict[str, Any], name: str, session: str, trial_id: str,
              config: KubernetesConfig) -> dict[str, Any]:
    out_dir = trial_out_dir(session, trial_id, config)
    command = ["python", "-m", "cluster.pod_entry", "--spec", f"{SPEC_MOUNT}/spec.json", "--out", out_dir]
    wall = default_wall_s(spec)
    if wall is not None:
        command += ["--wall-s", f"{wall:g}"]
    command += ["--", *config.trial_command]
    threads = str(config.threads())
    env = [{"name": k, "value": threads} for k in THREAD_ENV]
    env += [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    env += [{"name": k, "value": v} for k, v in sorted(config.env.items())]
    requests: dict[str, Any] = {"cpu": config.cpu, "memory": config.memory}
    limits: dict[str, Any] = {"memory": config.memory}
    if config.ephemeral_storage:
        requests["ephemeral-storage"] = config.ephemeral_storage
        limits["ephemeral-storage"] = config.ephemeral_storage_limit or config.ephemeral_storage
    if config.gpus:
        limits["nvidia.com/gpu"] = str(config.gpus)  # quantities are strings in the API
    mounts = [{"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "spec", "configMap": {"name": name}}]
    if config.runs_pvc:
        mounts.append({"name": "runs", "mountPath": config.runs_mount})
        volumes.append({"name": "runs", "persistentVolumeClaim": {"claimName": config.runs_pvc}})
    else:
        mounts.append({"name": "work", "mountPath": WORK_MOUNT})
        volumes.append({"name": "work", "emptyDir": {}})
    uid = config.run_as_user
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": CONTAINER, "image": config.image, "imagePullPolicy": config.pull_policy(),
                        "command": command, "env": env, "volumeMounts": mounts,
                        "resources": {"requests": requests, "limits": limits},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "runAsNonRoot": True, "runAsUser": uid}}],
        "volumes": volumes,
    }
    return place(pod, config)


def place(pod: dict[str, Any], config: KubernetesConfig) -> dict[str, Any]:
    """The pod's node selector, GPU placement (GKE's accelerator label and the GPU taint's toleration)
    and service account, from the settings: one rule for trial Jobs and the serve Deployment."""
    selector = dict(config.node_selector)
    tolerations = list(config.tolerations)
    if config.gpus:
        if config.gpu_type:
            selector.setdefault(GKE_ACCELERATOR_LABEL, config.gpu_type)
        if GPU_TOLERATION not in tolerations:
            tolerations.append(GPU_TOLERATION)
    if selector:
        pod["nodeSelector"] = selector
    if tolerations:
        pod["tolerations"] = tolerations
    if config.service_account:
        pod["serviceAccountName"] = config.service_account
    return pod
