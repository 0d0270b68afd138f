"""API load of the Kubernetes launcher with many trials in flight, on the loopback control plane.

    .venv/bin/python benchmarks/k8s_soak.py [--jobs 200] [--seconds 30]

Submits N trials as Jobs that ask for a GPU the test node does not have, so every pod stays
Pending (Unschedulable) and every Job stays active: the state in which a launcher polls hardest.
Then it runs the agent's collect loop (poll, then status of every trial, every 0.5 s) for a fixed
time and prints the HTTP requests per second the launcher sent, counted at the connection pool
(below any client-side throttle, so retries count too). Uses $OPENRL_K8S_TEST_STATE's cluster if
set, else starts one with scripts/k8s-test-cluster.sh (needs its `build` once).

The script uses only the launcher contract, so it runs unchanged against an older checkout:
`PYTHONPATH=OLD_CHECKOUT python benchmarks/k8s_soak.py` measures the "before" figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from cluster.k8s_client import connect
from cluster.k8s_launcher import KubernetesLauncher
from cluster.k8s_manifests import KubernetesConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "k8s-test-cluster.sh"


def count_requests(api: client.ApiClient) -> list[int]:
    counter = [0]
    pool = api.rest_client.pool_manager
    inner = pool.request

    def request(*args, **kwargs):
        counter[0] += 1
        return inner(*args, **kwargs)

    pool.request = request
    return counter


def soak(kubeconfig: str, jobs: int, seconds: float) -> None:
    api = connect(kubeconfig)
    counter = count_requests(api)
    ns = f"soak-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    try:
        config = KubernetesConfig(namespace=ns, kubeconfig=kubeconfig, cpu="1", memory="1Gi", gpus=1,
                                  trial_command=["python", "-c", "pass"])
        with tempfile.TemporaryDirectory() as runs:
            launcher = KubernetesLauncher(config, runs_dir=runs, api_client=api)
            t0 = time.monotonic()
            handles = [launcher.submit({"trial_id": f"t{i:04d}", "session": "soak", "model": "builtin:micro-gemma",
                                        "budget": {"max_steps": 1, "max_seconds": 3600}}) for i in range(jobs)]
            submit_s, submit_requests = time.monotonic() - t0, counter[0]
            core = client.CoreV1Api(connect(kubeconfig))
            while len(core.list_namespaced_pod(ns).items) < jobs:  # every Job has its Pending pod
                time.sleep(1)
            counter[0] = 0
            rounds, t0 = 0, time.monotonic()
            while time.monotonic() - t0 < seconds:
                launcher.poll()
                statuses = {launcher.status(h) for h in handles}
                rounds += 1
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
            print(f"{jobs} Jobs submitted in {submit_s:.1f}s ({submit_requests} requests); statuses {sorted(statuses)}")
            print(f"collect loop: {rounds} rounds in {elapsed:.1f}s, {counter[0]} requests, "
                  f"{counter[0] / elapsed:.1f} requests/s ({counter[0] / rounds:.1f} per round of {jobs} statuses)")
            if hasattr(launcher, "close"):
                launcher.close()
    finally:
        client.CoreV1Api(connect(kubeconfig)).delete_namespace(ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    state = os.environ.get("OPENRL_K8S_TEST_STATE")
    if state:
        soak(str(Path(state) / "kubeconfig"), args.jobs, args.seconds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(SCRIPT), "up", tmp], check=True)
        try:
            soak(str(Path(tmp) / "kubeconfig"), args.jobs, args.seconds)
        finally:
            subprocess.run([str(SCRIPT), "down", tmp], check=False)


if __name__ == "__main__":
    sys.exit(main())
