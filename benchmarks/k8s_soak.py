"""API load and CPU of the Kubernetes launcher with many trials running and many finishing at once.

    .venv/bin/python benchmarks/k8s_soak.py [--running 1000] [--finishing 200] [--quiet-rounds 5]

On the loopback control plane, submits R + F trials whose pods the test node agent runs without a
process (the `simulate-s: hold:GROUP` injection of scripts/k8s_node_agent.py): every pod is Running,
as with a session's trials mid-training. It measures the agent's collect loop (poll, then the status
of every trial; one round every 0.5 s) for some quiet rounds, then releases the F "finishing" trials
at once (each prints a result line and exits 0) and measures the rounds until all F are collected.
Per round: API requests, LISTs, WATCHes and other GETs (log reads) among them, response bytes (watch
streams included), and the agent process's CPU seconds (its watch, log and delete threads included).
Counted above the client's throttle, so a retry is not a request twice. Uses $OPENRL_K8S_TEST_STATE's cluster (the node agent must be this checkout's).

The script uses only the launcher contract and KubernetesConfig's pod_annotations, so it runs
unchanged against an older checkout: `PYTHONPATH=OLD_CHECKOUT python benchmarks/k8s_soak.py`
measures the "before" figure (run it from this checkout's directory so the node agent is this one's).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client

from cluster.k8s_client import connect
from cluster.k8s_launcher import KubernetesLauncher
from cluster.k8s_manifests import KubernetesConfig

INJECT = "openrl-test.invalid/simulate-s"
LIST_SUFFIXES = ("/pods", "/jobs", "/events", "/workloads", "/configmaps")
FIGURES = ("requests", "lists", "watches", "gets", "bytes", "cpu_s")


class Meter:
    """Counts the requests an ApiClient sends (LISTs, WATCHes and other GETs apart) and the bytes of their
    answers, watch streams included; from every thread (the launcher's watch, log and delete threads)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.requests = self.lists = self.watches = self.gets = self.bytes = 0
        self.lock = threading.Lock()
        inner = api.rest_client.request

        def request(method: str, url: str, *args, **kwargs):
            response = inner(method, url, *args, **kwargs)
            path, _, query = url.partition("?")
            watching = "watch=true" in query.lower()
            listing = method == "GET" and path.endswith(LIST_SUFFIXES) and not watching
            with self.lock:
                self.requests += 1
                self.watches += watching
                self.lists += listing
                self.gets += method == "GET" and not (watching or listing)
            if watching:
                self._count_stream(response)
                return response
            data = response.read() or b""
            with self.lock:
                self.bytes += len(data)
            return response

        api.rest_client.request = request

    def _count_stream(self, response) -> None:
        raw = getattr(response, "response", response)  # the urllib3 answer the watch reads
        stream = raw.stream

        def counted(*args, **kwargs):
            for segment in stream(*args, **kwargs):
                with self.lock:
                    self.bytes += len(segment)
                yield segment

        raw.stream = counted

    def snapshot(self) -> tuple[int, int, int, int, int, float]:
        with self.lock:
            return self.requests, self.lists, self.watches, self.gets, self.bytes, time.process_time()


def one_round(launcher: KubernetesLauncher, handles: list, meter: Meter) -> tuple[dict, list[str]]:
    before, started = meter.snapshot(), time.monotonic()
    launcher.poll()
    statuses = [launcher.status(h) for h in handles]
    after = meter.snapshot()
    delta = dict(zip(FIGURES, (b - a for a, b in zip(before, after, strict=True)), strict=True))
    delta["wall_s"] = time.monotonic() - started
    print(f"  round: {delta}", flush=True)  # a run cut short still shows its rounds
    return delta, statuses


def summary(name: str, rounds: list[dict]) -> str:
    def fmt(key: str, scale: float = 1.0, unit: str = "") -> str:
        values = [r[key] / scale for r in rounds]
        return f"{key} mean {statistics.mean(values):.3g}{unit} max {max(values):.3g}{unit}"

    total_cpu = sum(r["cpu_s"] for r in rounds)
    return (f"{name}: {len(rounds)} rounds, {total_cpu:.2f} CPU s in all; "
            + "; ".join([fmt("requests"), fmt("lists"), fmt("watches"), fmt("gets"), fmt("bytes", 1e6, " MB"),
                         fmt("cpu_s", 1.0, " s"), fmt("wall_s", 1.0, " s")]))


def soak(state: Path, running: int, finishing: int, quiet_rounds: int) -> None:
    kubeconfig = str(state / "kubeconfig")
    ns = f"soak-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(connect(kubeconfig)).create_namespace({"metadata": {"name": ns}})
    group = ns
    try:
        # The launcher's own client and its default rate limit (20 requests/s), as in a session; only
        # the set-up (not measured) may go faster.
        config = KubernetesConfig(namespace=ns, kubeconfig=kubeconfig, cpu="1", memory="1Gi",
                                  trial_command=["python", "-c", "pass"], pod_annotations={INJECT: "hold:never"})
        runs = Path(os.environ.get("TMPDIR", "/tmp")) / f"openrl-soak-{ns}"
        launcher = KubernetesLauncher(config, runs_dir=runs)
        meter = Meter(launcher.api)
        launcher.throttle.qps, launcher.throttle.burst = 200.0, 400

        def spec(i: int) -> dict:
            return {"trial_id": f"t{i:04d}", "session": "soak", "model": "builtin:micro-gemma",
                    "budget": {"max_steps": 1, "max_seconds": 3600}}

        t0 = time.monotonic()
        handles = [launcher.submit(spec(i)) for i in range(running)]
        config.pod_annotations = {INJECT: f"hold:{group}"}
        finishers = [launcher.submit(spec(running + i)) for i in range(finishing)]
        handles += finishers
        while True:  # until every pod is Running (not measured)
            launcher.poll()
            statuses = [launcher.status(h) for h in handles]
            print(f"  {time.monotonic() - t0:.0f}s {dict(Counter(statuses))}", flush=True)
            if statuses.count("running") == len(handles):
                break
            time.sleep(1.0)
        print(f"{running} + {finishing} trials running after {time.monotonic() - t0:.0f}s", flush=True)
        launcher.throttle.qps, launcher.throttle.burst = config.api_qps, config.api_burst
        launcher.throttle.tokens = min(launcher.throttle.tokens, float(config.api_burst))
        quiet = []
        for _ in range(quiet_rounds):
            quiet.append(one_round(launcher, handles, meter)[0])
            time.sleep(0.5)
        release = state / "release" / group
        release.parent.mkdir(parents=True, exist_ok=True)
        release.touch()
        finish, done, t1 = [], 0, time.monotonic()
        while done < finishing and time.monotonic() - t1 < 300:
            delta, statuses = one_round(launcher, handles, meter)
            finish.append(delta)
            done = statuses.count("succeeded")
            time.sleep(0.5)
        print(summary("quiet", quiet))
        print(summary(f"finishing ({done}/{finishing} collected in {time.monotonic() - t1:.1f}s)", finish))
        if hasattr(launcher, "close"):
            launcher.close()
    finally:
        client.CoreV1Api(connect(kubeconfig)).delete_namespace(ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=1000)
    parser.add_argument("--finishing", type=int, default=200)
    parser.add_argument("--quiet-rounds", type=int, default=5)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where a slow run waits
    state = os.environ.get("OPENRL_K8S_TEST_STATE")
    if not state:
        sys.exit("start the loopback cluster first: scripts/k8s-test-cluster.sh up DIR; "
                 "then OPENRL_K8S_TEST_STATE=DIR")
    soak(Path(state), args.running, args.finishing, args.quiet_rounds)


if __name__ == "__main__":
    main()
