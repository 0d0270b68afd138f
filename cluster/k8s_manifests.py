"""Kubernetes objects for one trial: a ConfigMap holding the spec and a batch/v1 Job running it.

`build_manifests(spec, config)` is a pure function (plain dicts, no client calls), so what a trial
would submit can be printed, diffed and tested without a cluster.

Pod layout: the spec ConfigMap is mounted at /etc/openrl-agent/spec.json; the trial writes to
`<runs_mount>/<session>/trials/<trial_id>` on the shared runs volume when `runs_pvc` is set
(a ReadWriteMany PVC, or a GCS FUSE-backed one on GKE), otherwise to an emptyDir, in which case
the in-pod entry point (cluster/pod_entry.py) prints result.json as its last log line.

GPU defaults follow GKE: GPU nodes carry `cloud.google.com/gke-accelerator=<type>` and the taint
`nvidia.com/gpu=present:NoSchedule`, so a GPU trial gets that nodeSelector (when `gpu_type` is
set) and a toleration for the taint. With `kueue_queue`, the Job carries Kueue's queue label and
is created suspended; Kueue unsuspends it when the queue's quota admits it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from cluster.base import SESSION_LABEL, TRIAL_LABEL, LauncherError, spec_identity
from cluster.outcome import default_wall_s

MANAGED_BY = {"app.kubernetes.io/managed-by": "openrl-agent"}
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPEC_MOUNT = "/etc/openrl-agent"
WORK_MOUNT = "/openrl-work"  # unusual on purpose: the test node rewrites it in every argument
CONTAINER = "trial"
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENRL_TORCH_THREADS")


@dataclass
class KubernetesConfig:
    namespace: str = "default"
    image: str = "openrl-agent-trial:cpu"  # build with docker/Dockerfile.cpu or docker/Dockerfile.cuda
    image_pull_policy: str = "IfNotPresent"
    kubeconfig: str | None = None  # None: $KUBECONFIG / ~/.kube/config, or in-cluster config in a pod
    context: str | None = None
    cpu: str = "2"
    memory: str = "8Gi"
    gpus: int = 0
    gpu_type: str | None = None  # e.g. "nvidia-l4"; becomes the GKE accelerator nodeSelector
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    kueue_queue: str | None = None
    service_account: str | None = None
    backoff_limit: int = 0  # a retried trial would overwrite its own outputs; retry in the agent
    active_deadline_s: int | None = None  # None: rl_core.spec.Budget.wall_limit_s, as locally
    ttl_s: int | None = 3600  # finished Jobs are removed after this; results are copied out first
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
        return f"{config.runs_mount.rstrip('/')}/{session}/trials/{trial_id}"
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
        "data": {"spec.json": json.dumps(spec, indent=2)},
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": config.backoff_limit,
        "template": {"metadata": {"labels": {k: v for k, v in labels.items() if k != KUEUE_LABEL}},
                     "spec": _pod_spec(spec, name, session, trial_id, config)},
    }
    deadline = config.active_deadline_s if config.active_deadline_s is not None else _default_deadline(spec)
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


def _default_deadline(spec: dict[str, Any]) -> int | None:
    wall = default_wall_s(spec)
    return None if wall is None else int(wall)


def _pod_spec(spec: dict[str, Any], name: str, session: str, trial_id: str,
              config: KubernetesConfig) -> dict[str, Any]:
    out_dir = trial_out_dir(session, trial_id, config)
    command = ["python", "-m", "cluster.pod_entry", "--spec", f"{SPEC_MOUNT}/spec.json", "--out", out_dir,
               "--", *config.trial_command]
    threads = str(config.threads())
    env = [{"name": k, "value": threads} for k in THREAD_ENV]
    env += [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    env += [{"name": k, "value": v} for k, v in sorted(config.env.items())]
    requests: dict[str, Any] = {"cpu": config.cpu, "memory": config.memory}
    limits: dict[str, Any] = {"memory": config.memory}
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
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": CONTAINER, "image": config.image, "imagePullPolicy": config.image_pull_policy,
                        "command": command, "env": env, "volumeMounts": mounts,
                        "resources": {"requests": requests, "limits": limits}}],
        "volumes": volumes,
    }
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
