"""KubernetesLauncher: one batch/v1 Job per trial (see cluster/k8s_manifests.py for the objects).

Life cycle: submit creates the spec ConfigMap, then the Job, then makes the Job the ConfigMap's
owner so deleting the Job garbage-collects both. A watch on this namespace's openrl-agent Jobs
keeps a cache that `status()` reads (a GET fills in Jobs the watch has not delivered yet).
When a Job finishes, the launcher copies its outcome into the local trial directory
(`<runs_dir>/<session>/trials/<trial_id>/`: result.json, trial.log, launcher.json), read from the
shared runs volume when one is configured or from the pod log's last line otherwise, before
`ttlSecondsAfterFinished` removes the Job. From then on status and result come from those files,
so the agent sees the same trial directory as with local slots.

cancel deletes the Job with background propagation (its pods and ConfigMap follow).
reattach lists the session's Jobs by label and its local trial directories.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from cluster.base import (
    SESSION_LABEL,
    TERMINAL,
    TRIAL_LABEL,
    LauncherError,
    TrialHandle,
    TrialStatus,
    spec_identity,
)
from cluster.k8s_client import call, connect, explain
from cluster.k8s_manifests import CONTAINER, MANAGED_BY, KubernetesConfig, build_manifests, job_name
from cluster.local import SPEC_FILE, STATE_FILE
from cluster.outcome import (
    LOG_FILE,
    classify_exit,
    failed_result,
    mark_cancelled,
    read_json_file,
    read_result,
    read_tail,
)
from cluster.pod_entry import parse_result_line
from rl_core.trialdir import write_json_atomic

MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
_DELETED = object()


def job_phase(job: client.V1Job) -> TrialStatus:
    """queued / running / succeeded / failed from a Job object alone (running = has active pods)."""
    for cond in (job.status and job.status.conditions) or []:
        if cond.status == "True" and cond.type == "Complete":
            return "succeeded"
        if cond.status == "True" and cond.type == "Failed":
            return "failed"
    if job.spec and job.spec.suspend:
        return "queued"  # waiting for Kueue admission
    return "running" if job.status and job.status.active else "queued"


class KubernetesLauncher:
    backend = "k8s"

    def __init__(self, config: KubernetesConfig | None = None, runs_dir: str | Path = "runs",
                 api_client: client.ApiClient | None = None) -> None:
        self.config = config or KubernetesConfig()
        self.runs_dir = Path(runs_dir)
        self.api = api_client or connect(self.config.kubeconfig, self.config.context)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self._states: dict[str, str] = {}  # job name -> terminal state copied out
        self._cache: dict[str, Any] = {}
        self._tracked: dict[str, TrialHandle] = {}  # unfinished trials poll() collects when their Job ends
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- contract -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> TrialHandle:
        session, trial_id = spec_identity(spec)
        configmap, job = build_manifests(spec, self.config)
        name, ns = job["metadata"]["name"], self.config.namespace
        trial_dir = self._trial_dir(session, trial_id)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=f"{ns}/{name}")
        if (trial_dir / STATE_FILE).exists():  # resubmitted after a restart: the same trial, never a rerun
            self._status(handle)
            return handle
        # Cluster objects first: a failed create leaves no local trace, so the trial can be resubmitted;
        # dying between the create and the local files is repaired by reattach (it finds the Job by label).
        self._created(self.core.create_namespaced_config_map, configmap, "create configmaps")
        created = self._created(self.batch.create_namespaced_job, job, "create jobs")
        if created is not None:
            self._own_configmap(name, created.metadata.uid)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, spec)
        self._save(trial_dir, name, "queued")
        self._tracked[name] = handle
        self.poll()
        return handle

    def poll(self) -> None:
        """Keep the watch running and copy out every tracked trial whose Job the watch saw finish,
        before ttlSecondsAfterFinished deletes it (so poll well within the TTL)."""
        if self._watcher is None or not self._watcher.is_alive():
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="openrl-k8s-watch", daemon=True)
            self._watcher.start()
        for name, handle in list(self._tracked.items()):
            with self._lock:
                cached = self._cache.get(name)
            if cached is _DELETED or (cached is not None and job_phase(cached) in TERMINAL):
                self._status(handle)

    def status(self, handle: TrialHandle) -> TrialStatus:
        self.poll()
        return self._status(handle)

    def _status(self, handle: TrialHandle) -> TrialStatus:
        name = self._name(handle)
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        known = self._local_state(name, trial_dir)
        if known in TERMINAL:
            self._tracked.pop(name, None)
            return known  # type: ignore[return-value]
        self._tracked[name] = handle
        job = self._job(name)
        if job is None:
            return self._finish_lost(name, trial_dir)
        phase = job_phase(job)
        if phase in TERMINAL:
            return self._collect(handle, job, trial_dir)
        if phase == "running" and not self._pod_started(name):
            return "queued"  # active but not yet scheduled or started (no GPU free, pulling image)
        return phase

    def cancel(self, handle: TrialHandle) -> None:
        name = self._name(handle)
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        if self._local_state(name, trial_dir) in TERMINAL:
            return
        self._tracked.pop(name, None)
        body = client.V1DeleteOptions(propagation_policy="Background")
        for delete in (self.batch.delete_namespaced_job, self.core.delete_namespaced_config_map):
            try:
                delete(name, self.config.namespace, body=body, _request_timeout=15)
            except ApiException as exc:
                if exc.status != 404:
                    raise LauncherError(f"cannot cancel {name}: {exc.status} {exc.reason}") from None
        if self.config.runs_pvc:  # the runner may answer the SIGTERM with a result on the shared volume
            mark_cancelled(trial_dir)
        self._save(trial_dir, name, "cancelled")

    def logs(self, handle: TrialHandle, tail: int = 200) -> str:
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        if self.status(handle) in TERMINAL and (trial_dir / LOG_FILE).exists():
            return read_tail(trial_dir / LOG_FILE, tail)
        return self._pod_log(self._name(handle), tail)

    def result(self, handle: TrialHandle) -> dict[str, Any] | None:
        if self.status(handle) not in TERMINAL or self.status(handle) == "cancelled":
            return None
        return read_result(self._trial_dir(handle.session, handle.trial_id))

    def reattach(self, session: str) -> list[TrialHandle]:
        ns = self.config.namespace
        jobs = call(self.batch.list_namespaced_job, ns, label_selector=f"{MANAGED_SELECTOR},{SESSION_LABEL}={session}",
                    api=self.api, namespace=ns, action="list jobs").items
        ids = {j.metadata.labels[TRIAL_LABEL] for j in jobs}
        trials_dir = self.runs_dir / session / "trials"
        for state_file in trials_dir.glob(f"*/{STATE_FILE}") if trials_dir.is_dir() else []:
            if read_json_file(state_file).get("backend") == self.backend:
                ids.add(state_file.parent.name)
        for job in jobs:  # a Job started from another machine: fetch its spec into a local trial dir
            trial_dir = self._trial_dir(session, job.metadata.labels[TRIAL_LABEL])
            if not (trial_dir / STATE_FILE).exists():
                self._adopt_remote(job.metadata.name, trial_dir)
        handles = [TrialHandle(session, t, self.backend, f"{ns}/{job_name(session, t)}") for t in sorted(ids)]
        for handle in handles:
            self._status(handle)  # tracks the unfinished ones
        return handles

    def close(self) -> None:
        self._stop.set()

    # ---- internals ------------------------------------------------------------------------
    def _trial_dir(self, session: str, trial_id: str) -> Path:
        return self.runs_dir / session / "trials" / trial_id

    def _name(self, handle: TrialHandle) -> str:
        return handle.ref.rsplit("/", 1)[-1] if handle.ref else job_name(handle.session, handle.trial_id)

    def _created(self, create: Any, body: dict[str, Any], action: str) -> Any:
        """Create an object; an existing one (a resubmitted trial) counts as created."""
        try:
            return create(self.config.namespace, body, _request_timeout=15)
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise explain(exc, self.api, self.config.namespace, action) from None

    def _own_configmap(self, name: str, job_uid: str) -> None:
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid}
        call(self.core.patch_namespaced_config_map, name, self.config.namespace,
             {"metadata": {"ownerReferences": [owner]}}, api=self.api, action="patch configmaps")

    def _watch(self) -> None:
        """Keep self._cache in sync with this namespace's openrl-agent Jobs until close()."""
        ns, version = self.config.namespace, None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.batch.list_namespaced_job(ns, label_selector=MANAGED_SELECTOR, _request_timeout=15)
                    with self._lock:
                        self._cache.update({j.metadata.name: j for j in listed.items})
                    version = listed.metadata.resource_version
                stream = watch.Watch().stream(self.batch.list_namespaced_job, ns, label_selector=MANAGED_SELECTOR,
                                              resource_version=version, timeout_seconds=10, _request_timeout=30)
                for event in stream:
                    job = event["object"]
                    with self._lock:
                        self._cache[job.metadata.name] = _DELETED if event["type"] == "DELETED" else job
                    version = job.metadata.resource_version
                    if self._stop.is_set():
                        return
            except Exception:  # 410 Gone, a dropped connection, a restarting server: relist
                version = None
                self._stop.wait(1.0)

    def _job(self, name: str) -> client.V1Job | None:
        with self._lock:
            cached = self._cache.get(name)
        if cached is _DELETED:
            return None
        if cached is not None and job_phase(cached) != "queued":
            return cached
        try:  # not delivered by the watch yet (or still queued): ask directly
            job = self.batch.read_namespaced_job(name, self.config.namespace, _request_timeout=15)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise explain(exc, self.api, self.config.namespace, "read jobs") from None
        with self._lock:
            self._cache[name] = job
        return job

    def _pods(self, name: str) -> list[client.V1Pod]:
        pods = self.core.list_namespaced_pod(self.config.namespace, label_selector=f"job-name={name}",
                                             _request_timeout=15).items
        return sorted(pods, key=lambda p: p.metadata.creation_timestamp)

    def _pod_started(self, name: str) -> bool:
        return any(p.status.phase in ("Running", "Succeeded", "Failed") for p in self._pods(name))

    def _pod_log(self, name: str, tail: int) -> str:
        pods = self._pods(name)
        if not pods or pods[-1].status.phase == "Pending":
            return ""
        try:
            return self.core.read_namespaced_pod_log(pods[-1].metadata.name, self.config.namespace,
                                                     container=CONTAINER, tail_lines=tail, _request_timeout=30)
        except ApiException:
            return ""

    def _collect(self, handle: TrialHandle, job: client.V1Job, trial_dir: Path) -> TrialStatus:
        """Copy a finished Job's log and result into the trial dir; the state it ends in."""
        name = job.metadata.name
        log = self._pod_log(name, tail=5000)
        if log:
            _write_text_atomic(trial_dir / LOG_FILE, log)
        result = read_result(trial_dir) if self.config.runs_pvc else parse_result_line(log)
        if result is None:
            spec = read_json_file(trial_dir / SPEC_FILE)
            tail = read_tail(trial_dir / LOG_FILE)
            error = self._classify(name, job, tail)
            result = failed_result(spec, error["kind"], error["message"], tail)
        write_json_atomic(trial_dir / "result.json", result)
        state = "succeeded" if result.get("status") == "succeeded" else "failed"
        self._save(trial_dir, name, state)
        return state  # type: ignore[return-value]

    def _classify(self, name: str, job: client.V1Job, tail: str) -> dict[str, str]:
        reasons = {c.reason for c in (job.status.conditions or []) if c.status == "True"}
        if "DeadlineExceeded" in reasons:
            return {"kind": "timeout", "message": f"the Job ran past activeDeadlineSeconds "
                                                  f"({job.spec.active_deadline_seconds}s)"}
        for pod in reversed(self._pods(name)):
            for cs in pod.status.container_statuses or []:
                term = cs.state and cs.state.terminated
                if term and term.reason == "OOMKilled":
                    return {"kind": "oom", "message": "the container was OOMKilled; raise memory or shrink the batch"}
                if term:
                    return classify_exit(-term.signal if term.signal else term.exit_code, tail)
        return classify_exit(None, tail)

    def _finish_lost(self, name: str, trial_dir: Path) -> TrialStatus:
        result = read_result(trial_dir)  # a shared runs volume may hold it even though the Job is gone
        if result is None:
            spec = read_json_file(trial_dir / SPEC_FILE) if (trial_dir / SPEC_FILE).exists() else {}
            message = (f"Job {name} disappeared before it finished (deleted by a person, a TTL or the cluster) "
                       "and left no result")
            write_json_atomic(trial_dir / "result.json", failed_result(spec, "crash", message, ""))
            state = "lost"
        else:
            state = "succeeded" if result.get("status") == "succeeded" else "failed"
        self._save(trial_dir, name, state)
        return state  # type: ignore[return-value]

    def _local_state(self, name: str, trial_dir: Path) -> str | None:
        if name in self._states:
            return self._states[name]
        path = trial_dir / STATE_FILE
        state = read_json_file(path).get("state") if path.exists() else None
        if state in TERMINAL:
            self._states[name] = state
        return state

    def _adopt_remote(self, name: str, trial_dir: Path) -> None:
        cm = call(self.core.read_namespaced_config_map, name, self.config.namespace, api=self.api,
                  action="read configmaps")
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, json.loads(cm.data["spec.json"]))
        self._save(trial_dir, name, "queued")

    def _save(self, trial_dir: Path, name: str, state: str) -> None:
        if state in TERMINAL:
            self._states[name] = state
        write_json_atomic(trial_dir / STATE_FILE, {"backend": self.backend, "namespace": self.config.namespace,
                                                   "job": name, "state": state})


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
