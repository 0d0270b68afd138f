"""Kubernetes objects for `openrl-agent serve`: an apps/v1 Deployment and a ClusterIP Service.

`serve_manifests(config, models)` is a pure function (plain dicts), printable like the trial Jobs:

    python -m cluster.serve_manifests --model builtin:tiny-gemma --gpus 1 --gpu-type nvidia-l4 | kubectl apply -f -

One replica, replaced (not rolled): the adapters, optimizers and samplers of the connected clients
live in that process's memory, so a second replica would be a different server, and two at once
during a rollout would split one client's requests. Saved weights go to `state_pvc` when given
(they then outlive the pod), else to an emptyDir. The pod passes the "restricted" Pod Security level
as the trial pods do (cluster/k8s_manifests.py); GPU pods get the same nodeSelector and toleration.
The readiness probe calls /api/v1/healthz, which the server answers without an API key; the key
itself comes from a Secret (`api_key_secret`, key `api-key`), never from the manifest.
The image must hold the `tinker` extra (docker/Dockerfile.* install `.[gemma]` only today).
This module must not import torch.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cluster.k8s_manifests import (
    MANAGED_BY,
    THREAD_ENV,
    KubernetesConfig,
    place,
)

HEALTH_PATH = "/api/v1/healthz"  # answered without the API key (rl_core/serve/app.py)
STATE_MOUNT = "/serve-state"


def serve_manifests(config: KubernetesConfig, models: list[str], *, name: str = "openrl-serve", port: int = 8000,
                    api_key_secret: str | None = None, state_pvc: str | None = None) -> tuple[dict, dict]:
    """(Deployment, Service) serving `models` on `port` in `config.namespace`."""
    if not models:
        raise ValueError("serve needs at least one --model")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "tinker-api", **MANAGED_BY}
    meta = {"name": name, "namespace": config.namespace, "labels": labels}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "template": {"metadata": {"labels": labels, **({"annotations": dict(config.pod_annotations)}
                                                                if config.pod_annotations else {})},
                              "spec": _pod(config, models, port, api_key_secret, state_pvc)}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                 "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]},
    }
    return deployment, service


def _pod(config: KubernetesConfig, models: list[str], port: int, api_key_secret: str | None,
         state_pvc: str | None) -> dict[str, Any]:
    command = ["python", "-m", "rl_core.serve", "--host", "0.0.0.0", "--port", str(port),
               "--device", "cuda" if config.gpus else "cpu", "--state-dir", STATE_MOUNT,
               "--threads", str(config.threads())]
    for model in models:
        command += ["--model", model]
    threads = str(config.threads())
    env: list[dict[str, Any]] = [{"name": k, "value": threads} for k in THREAD_ENV]
    env += [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    if api_key_secret:
        env.append({"name": "OPENRL_SERVE_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": api_key_secret, "key": "api-key"}}})
    env += [{"name": k, "value": v} for k, v in sorted(config.env.items())]
    requests: dict[str, Any] = {"cpu": config.cpu, "memory": config.memory}
    limits: dict[str, Any] = {"memory": config.memory}
    if config.gpus:
        limits["nvidia.com/gpu"] = str(config.gpus)
    state = ({"persistentVolumeClaim": {"claimName": state_pvc}} if state_pvc else {"emptyDir": {}})
    probe = {"httpGet": {"path": HEALTH_PATH, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    uid = config.run_as_user
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "serve", "image": config.image, "imagePullPolicy": config.pull_policy(), "command": command,
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}], "env": env,
            "volumeMounts": [{"name": "state", "mountPath": STATE_MOUNT}],
            "resources": {"requests": requests, "limits": limits},
            # model load can take minutes (a first build of a built-in, a Hub snapshot): the startup
            # probe allows 20 of them before liveness takes over
            "startupProbe": {**probe, "failureThreshold": 120},
            "readinessProbe": {**probe, "failureThreshold": 3},
            "livenessProbe": {**probe, "failureThreshold": 6},
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                "runAsNonRoot": True, "runAsUser": uid}}],
        "volumes": [{"name": "state", **state}],
    }
    return place(pod, config)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cluster.serve_manifests", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--namespace", default="default")
    p.add_argument("--image", default="openrl-agent-trial:cpu")
    p.add_argument("--cpu", default="4")
    p.add_argument("--memory", default="16Gi")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--gpu-type", default=None)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-secret", default=None, help="a Secret with the key under 'api-key'")
    p.add_argument("--state-pvc", default=None, help="a PVC for saved weights (default: an emptyDir)")
    a = p.parse_args(argv)
    config = KubernetesConfig(namespace=a.namespace, image=a.image, cpu=a.cpu, memory=a.memory, gpus=a.gpus,
                              gpu_type=a.gpu_type)
    objects = serve_manifests(config, a.model, port=a.port, api_key_secret=a.api_key_secret, state_pvc=a.state_pvc)
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}, indent=2))


if __name__ == "__main__":
    main()
