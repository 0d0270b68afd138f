"""KubernetesLauncher: one batch/v1 Job per trial (see cluster/k8s_manifests.py for the objects).

Life cycle: submit creates the spec ConfigMap, then the Job, then makes the Job the ConfigMap's
owner so deleting the Job garbage-collects both. What the launcher knows of the cluster comes from
cluster/k8s_view.py: a watch on the namespace's Jobs and one LIST of pods per refresh, shared by
every trial, so the API load does not grow with the trial count (requests are also rate-limited
and 429/5xx answers retried, cluster/k8s_client.py).

While a trial waits, `detail(handle)` (and launcher.json's "waiting") says why: Kueue admission,
Unschedulable with the scheduler's message, ImagePullBackOff, FailedCreate. A trial whose pod has
not started within `startup_timeout_s` (or cannot ever start: an invalid image name, a
CreateContainerConfigError) fails with that reason; its wall time is enforced in the pod.

While it runs (no shared volume), its metric and eval lines are copied from the pod log into the
local trial directory every `stream_interval_s`, so pruning and the planner see them as locally.
When the Job ends, the launcher copies the outcome into `<runs_dir>/<session>/trials/<trial_id>/`
(result.json from the pod log's result line, or from the shared runs volume; trial.log;
launcher.json) and then deletes the Job. A pod log it cannot read for a passing reason (429, 5xx,
a dropped connection) is retried on the next poll, never recorded as the trial's failure; a Job
whose pods are gone before their log was read is "lost", with a message that says why.

cancel deletes the Job with background propagation (its pods and ConfigMap follow).
reattach lists the session's Jobs by label and its local trial directories.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kubernetes import client
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
from cluster.k8s_client import Throttle, call, connect, explain
from cluster.k8s_manifests import (
    CONTAINER,
    MANAGED_BY,
    KubernetesConfig,
    build_manifests,
    job_name,
    pod_paths,
)
from cluster.k8s_view import MISSING, ClusterView, job_phase, started, waited_s, waiting_reason
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
from cluster.pod_entry import parse_result_line, parse_stream_lines
from rl_core import sessiondir
from rl_core.trialdir import (
    EVAL_FILE,
    METRICS_FILE,
    append_jsonl,
    read_jsonl,
    write_json_atomic,
    write_result,
)

__all__ = ["KubernetesLauncher", "job_phase"]
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
COLLECT_TAIL_LINES = 20_000
STREAM_TAIL_LINES = 2_000


class KubernetesLauncher:
    backend = "k8s"

    def __init__(self, config: KubernetesConfig | None = None, runs_dir: str | Path = "runs",
                 api_client: client.ApiClient | None = None) -> None:
        self.config = config or KubernetesConfig()
        self.runs_dir = Path(runs_dir)
        self.throttle = Throttle(self.config.api_qps, self.config.api_burst)
        self.api = api_client or connect(self.config.kubeconfig, self.config.context, self.throttle)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.view = ClusterView(self.api, self.config.namespace, MANAGED_SELECTOR, kueue=bool(self.config.kueue_queue))
        self._states: dict[str, str] = {}  # job name -> state in launcher.json (this launcher writes it)
        self._details: dict[str, str] = {}  # job name -> why it waits / what is being retried
        self._streamed_at: dict[str, float] = {}
        self._tracked: dict[str, TrialHandle] = {}  # unfinished trials poll() advances
        self._queue_checked = False

    # ---- contract -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> TrialHandle:
        session, trial_id = spec_identity(spec)
        configmap, job = build_manifests(pod_paths(spec, self.config, self.runs_dir), self.config)
        name, ns = job["metadata"]["name"], self.config.namespace
        trial_dir = self._trial_dir(session, trial_id)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=f"{ns}/{name}")
        if (trial_dir / STATE_FILE).exists():  # resubmitted after a restart: the same trial, never a rerun
            self._status(handle)
            return handle
        self._check_queue()
        # Cluster objects first: a failed create leaves no local trace, so the trial can be resubmitted;
        # dying between the create and the local files is repaired by reattach (it finds the Job by label).
        # A Job that already exists (the agent lost its local files) is adopted, never replaced.
        self._created(self.core.create_namespaced_config_map, configmap, "create configmaps")
        created = self._created(self.batch.create_namespaced_job, job, "create jobs")
        if created is not None:
            self._own_configmap(name, created.metadata.uid)
            self.view.put(created)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, spec)
        self._save(trial_dir, name, "queued")
        self._tracked[name] = handle
        self.view.ensure_watching()
        return handle

    def poll(self) -> None:
        """Refresh the shared view (one pod LIST at most every second) and advance every tracked trial:
        collect finished ones (before ttlSecondsAfterFinished), fail ones that cannot start, stream metrics."""
        self.view.ensure_watching()
        if self.view.refresh():
            for handle in list(self._tracked.values()):
                self._status(handle)

    def status(self, handle: TrialHandle) -> TrialStatus:
        self.poll()
        return self._status(handle)

    def detail(self, handle: TrialHandle) -> str | None:
        """Why an unfinished trial is not running yet (or what is being retried); None when nothing to say."""
        if self.status(handle) in TERMINAL:
            return None
        return self._details.get(self._name(handle))

    def cancel(self, handle: TrialHandle) -> None:
        name = self._name(handle)
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        if self._local_state(name, trial_dir) in TERMINAL:
            return
        self._tracked.pop(name, None)
        self._delete(name, strict=True)
        if self.config.runs_pvc:  # the runner may answer the SIGTERM with a result on the shared volume
            mark_cancelled(trial_dir)
        self._save(trial_dir, name, "cancelled")

    def logs(self, handle: TrialHandle, tail: int = 200) -> str:
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        if self.status(handle) in TERMINAL and (trial_dir / LOG_FILE).exists():
            return read_tail(trial_dir / LOG_FILE, tail)
        try:
            return self._pod_log(self._name(handle), tail) or ""
        except ApiException:
            return ""

    def result(self, handle: TrialHandle) -> dict[str, Any] | None:
        if self.status(handle) not in TERMINAL or self.status(handle) == "cancelled":
            return None
        return read_result(self._trial_dir(handle.session, handle.trial_id))

    def reattach(self, session: str) -> list[TrialHandle]:
        ns = self.config.namespace
        jobs = call(self.batch.list_namespaced_job, ns, label_selector=f"{MANAGED_SELECTOR},{SESSION_LABEL}={session}",
                    api=self.api, namespace=ns, action="list jobs").items
        ids = {j.metadata.labels[TRIAL_LABEL] for j in jobs}
        trials_dir = sessiondir.trials_dir(sessiondir.session_dir_of(self.runs_dir, session))
        for state_file in trials_dir.glob(f"*/{STATE_FILE}") if trials_dir.is_dir() else []:
            if read_json_file(state_file).get("backend") == self.backend:
                ids.add(state_file.parent.name)
        for job in jobs:  # a Job started from another machine: fetch its spec into a local trial dir
            self.view.put(job)
            trial_dir = self._trial_dir(session, job.metadata.labels[TRIAL_LABEL])
            if not (trial_dir / STATE_FILE).exists():
                self._adopt_remote(job.metadata.name, trial_dir)
        handles = [TrialHandle(session, t, self.backend, f"{ns}/{job_name(session, t)}") for t in sorted(ids)]
        self.view.ensure_watching()
        self.view.refresh(force=True)
        for handle in handles:
            self._status(handle)  # tracks the unfinished ones
        return handles

    def close(self) -> None:
        self.view.close()

    # ---- one trial --------------------------------------------------------------------------
    def _status(self, handle: TrialHandle) -> TrialStatus:
        name = self._name(handle)
        trial_dir = self._trial_dir(handle.session, handle.trial_id)
        known = self._local_state(name, trial_dir)
        if known in TERMINAL:
            self._tracked.pop(name, None)
            return known  # type: ignore[return-value]
        self._tracked[name] = handle
        self.view.ensure_watching()
        job = self.view.job(name)
        if job is MISSING:
            return self._finish_lost(name, trial_dir, "was deleted before it finished (by a person, a TTL or "
                                                      "the cluster)")
        if job is None:
            return "queued"
        phase = job_phase(job)
        if phase in TERMINAL:
            return self._collect(job, trial_dir)
        pods = self.view.pods_of(name)
        if not started(pods):
            return self._waiting(job, pods, trial_dir)
        self._note(name, trial_dir, self.view.error)
        self._stream(name, trial_dir, pods)
        return "running"

    def _waiting(self, job: client.V1Job, pods: list[client.V1Pod], trial_dir: Path) -> TrialStatus:
        name = job.metadata.name
        reason, permanent = waiting_reason(job, pods, self.view.failed_create.get(name),
                                           self.view.workload_message(job), self.config.kueue_queue)
        self._note(name, trial_dir, reason)
        late = not (job.spec and job.spec.suspend) and waited_s(job) > self.config.startup_timeout_s
        if not (permanent or late):
            return "queued"
        message = (f"the pod could not start: {reason}" if permanent else
                   f"the pod did not start within startup_timeout_s={self.config.startup_timeout_s}s: {reason}")
        self._delete(name)
        return self._record(trial_dir, name, failed_result(self._spec(trial_dir), "timeout" if late else "crash",
                                                           message, ""))

    def _collect(self, job: client.V1Job, trial_dir: Path) -> TrialStatus:
        """Copy a finished Job's log and result into the trial dir, then delete the Job; the state it ends in."""
        name = job.metadata.name
        self.view.refresh(force=True)  # the pod list may predate the Job's last pod (a retried preemption)
        try:
            log = self._pod_log(name, COLLECT_TAIL_LINES)
        except ApiException as exc:
            if exc.status not in (404, 400):  # 429/5xx/connection: not the trial's outcome; try again
                self._note(name, trial_dir, f"collecting: cannot read the pod log ({exc.status} {exc.reason}); "
                                            "retrying")
                return "running"
            log = None if exc.status == 404 else ""  # 400: the container never started, so it has no log
        if log is None:  # the pods and their logs are gone
            local = read_result(trial_dir) if self.config.runs_pvc else None
            if local is None:
                return self._finish_lost(name, trial_dir, f"finished ({job_phase(job)}) but its pod and log were "
                                                          "gone before the result was read (node scale-down or "
                                                          "deletion); use runs_pvc to keep results on a volume")
            return self._record(trial_dir, name, local)
        if log:
            _write_text_atomic(trial_dir / LOG_FILE, log)
            if not self.config.runs_pvc:
                _merge_streams(trial_dir, log)
        result = parse_result_line(log) or (read_result(trial_dir) if self.config.runs_pvc else None)
        if result is None:
            tail = read_tail(trial_dir / LOG_FILE)
            error = self._classify(name, job, tail)
            result = failed_result(self._spec(trial_dir), error["kind"], error["message"], tail)
        state = self._record(trial_dir, name, result)
        self._delete(name)
        return state

    def _stream(self, name: str, trial_dir: Path, pods: list[client.V1Pod]) -> None:
        """Copy new metric/eval lines from a running pod's log (no shared volume), every stream_interval_s."""
        if self.config.runs_pvc or time.monotonic() - self._streamed_at.get(name, float("-inf")) < \
                self.config.stream_interval_s:
            return
        self._streamed_at[name] = time.monotonic()
        try:
            log = self._pod_log(name, STREAM_TAIL_LINES, pods)
        except ApiException:
            return  # the next round tries again; the final collection reads the whole tail anyway
        if log:
            _merge_streams(trial_dir, log)

    def _classify(self, name: str, job: client.V1Job, tail: str) -> dict[str, str]:
        reasons = {c.reason for c in (job.status.conditions or []) if c.status == "True"}
        if "DeadlineExceeded" in reasons:
            return {"kind": "timeout", "message": f"the Job ran past activeDeadlineSeconds "
                                                  f"({job.spec.active_deadline_seconds}s)"}
        for pod in reversed(self.view.pods_of(name)):
            for cs in pod.status.container_statuses or []:
                term = cs.state and cs.state.terminated
                if term and term.reason == "OOMKilled":
                    return {"kind": "oom", "message": "the container was OOMKilled; raise memory or shrink the batch"}
                if term:
                    return classify_exit(-term.signal if term.signal else term.exit_code, tail)
        return classify_exit(None, tail)

    def _finish_lost(self, name: str, trial_dir: Path, why: str) -> TrialStatus:
        result = read_result(trial_dir)  # a shared runs volume may hold it even though the Job is gone
        if result is not None:
            return self._record(trial_dir, name, result)
        write_result(trial_dir, failed_result(self._spec(trial_dir), "crash", f"Job {name} {why}; it left no result",
                                              ""))
        self._save(trial_dir, name, "lost")
        return "lost"

    def _record(self, trial_dir: Path, name: str, result: dict[str, Any]) -> TrialStatus:
        write_result(trial_dir, result)
        state = "succeeded" if result.get("status") == "succeeded" else "failed"
        self._save(trial_dir, name, state)
        return state  # type: ignore[return-value]

    # ---- cluster calls ----------------------------------------------------------------------
    def _pod_log(self, name: str, tail: int, pods: list[client.V1Pod] | None = None) -> str | None:
        """The latest pod's log tail; None if the Job has no pod left; ApiException on a failed read."""
        pods = pods if pods is not None else self.view.pods_of(name)
        if not pods:
            return None
        if pods[-1].status.phase == "Pending":
            return ""
        return self.core.read_namespaced_pod_log(pods[-1].metadata.name, self.config.namespace, container=CONTAINER,
                                                 tail_lines=tail, _request_timeout=60)

    def _delete(self, name: str, strict: bool = False) -> None:
        """Delete the Job and its ConfigMap (pods follow); only a cancel must succeed, else the TTL does it."""
        body = client.V1DeleteOptions(propagation_policy="Background")
        for delete in (self.batch.delete_namespaced_job, self.core.delete_namespaced_config_map):
            try:
                delete(name, self.config.namespace, body=body, _request_timeout=15)
            except ApiException as exc:
                if exc.status != 404 and strict:
                    raise LauncherError(f"cannot cancel {name}: {exc.status} {exc.reason}") from None
        self.view.forget(name)

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

    def _check_queue(self) -> None:
        """A Kueue LocalQueue that does not exist leaves every Job suspended forever: refuse to submit."""
        queue = self.config.kueue_queue
        if not queue or self._queue_checked:
            return
        try:
            client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                "kueue.x-k8s.io", "v1beta1", self.config.namespace, "localqueues", queue, _request_timeout=15)
        except ApiException as exc:
            if exc.status == 404:
                raise LauncherError(f"Kueue LocalQueue {queue!r} does not exist in namespace {self.config.namespace} "
                                    "(or Kueue is not installed); create it or drop kueue_queue") from None
            raise explain(exc, self.api, self.config.namespace, "get localqueues") from None
        self._queue_checked = True

    def _adopt_remote(self, name: str, trial_dir: Path) -> None:
        cm = call(self.core.read_namespaced_config_map, name, self.config.namespace, api=self.api,
                  action="read configmaps")
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, json.loads(cm.data["spec.json"]))
        self._save(trial_dir, name, "queued")

    # ---- local files ------------------------------------------------------------------------
    def _trial_dir(self, session: str, trial_id: str) -> Path:
        return sessiondir.trial_dir(sessiondir.session_dir_of(self.runs_dir, session), trial_id)

    def _name(self, handle: TrialHandle) -> str:
        return handle.ref.rsplit("/", 1)[-1] if handle.ref else job_name(handle.session, handle.trial_id)

    def _spec(self, trial_dir: Path) -> dict[str, Any]:
        return read_json_file(trial_dir / SPEC_FILE) if (trial_dir / SPEC_FILE).exists() else {}

    def _local_state(self, name: str, trial_dir: Path) -> str | None:
        if name not in self._states:
            path = trial_dir / STATE_FILE
            state = read_json_file(path).get("state") if path.exists() else None
            if state is None:
                return None
            self._states[name] = state
        return self._states[name]

    def _note(self, name: str, trial_dir: Path, detail: str | None) -> None:
        """Remember (and record in launcher.json, for other readers) why a trial waits; only on a change."""
        if self._details.get(name) == detail:
            return
        if detail is None:
            self._details.pop(name, None)
        else:
            self._details[name] = detail
        self._save(trial_dir, name, self._states.get(name, "queued"))

    def _save(self, trial_dir: Path, name: str, state: str) -> None:
        self._states[name] = state
        record = {"backend": self.backend, "namespace": self.config.namespace, "job": name, "state": state}
        if state not in TERMINAL and self._details.get(name):
            record["waiting"] = self._details[name]
        write_json_atomic(trial_dir / STATE_FILE, record)


def _merge_streams(trial_dir: Path, log: str) -> None:
    """Append streamed rows the trial dir does not hold yet (metrics by step, evals by step and split)."""
    keys = {METRICS_FILE: ("step",), EVAL_FILE: ("step", "split")}
    for file, rows in parse_stream_lines(log).items():
        if not rows:
            continue
        key = keys[file]
        seen = {tuple(r.get(k) for k in key) for r in read_jsonl(trial_dir / file)}
        for row in rows:
            ident = tuple(row.get(k) for k in key)
            if ident not in seen:
                seen.add(ident)
                append_jsonl(trial_dir / file, row)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
