"""The server's Deployment and Service (cluster/serve_manifests.py): restricted pod, GPU placement,
a probe on a path the server answers without a key, the key from a Secret, one replica."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.k8s_manifests import KubernetesConfig
from cluster.serve_manifests import HEALTH_PATH, serve_manifests


def test_a_gpu_server_is_one_restricted_replica_behind_a_service():
    config = KubernetesConfig(namespace="ml", image="repo/openrl:cuda", cpu="4", gpus=1, gpu_type="nvidia-l4")
    dep, svc = serve_manifests(config, ["builtin:tiny-gemma", "google/gemma-3-270m"], api_key_secret="serve-key",
                               state_pvc="serve-state")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:3] == ["python", "-m", "rl_core.serve"]
    assert c["command"].count("--model") == 2 and "--device" in c["command"] and "cuda" in c["command"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "runAsNonRoot": True, "runAsUser": 1000}
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
    key = next(e for e in c["env"] if e["name"] == "OPENRL_SERVE_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "serve-key", "key": "api-key"}
    assert pod["volumes"] == [{"name": "state", "persistentVolumeClaim": {"claimName": "serve-state"}}]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_the_probe_path_is_one_the_server_answers(tmp_path):
    pytest.importorskip("tinker")
    import httpx

    from rl_core.serve.local import running
    from rl_core.serve.service import ServeSettings

    with running(ServeSettings(models=[], state_dir=tmp_path, api_key="tml-k"), hosts={}) as url:
        assert httpx.get(url + HEALTH_PATH).status_code == 200


def test_the_manifests_print_as_one_kubectl_list():
    out = subprocess.run([sys.executable, "-m", "cluster.serve_manifests", "--model", "builtin:tiny-gemma"],
                         capture_output=True, text=True, check=True).stdout
    kinds = [item["kind"] for item in json.loads(out)["items"]]
    assert kinds == ["Deployment", "Service"]
