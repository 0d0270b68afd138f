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

While it runs, its metric and eval lines are copied from the pod log into the local trial directory
every `stream_interval_s` (unless this machine mounts runs_pvc), so pruning sees them as locally.
When the Job ends, the launcher copies the outcome into `<runs_dir>/<session>/trials/<trial_id>/`
(result.json from the pod log's result line, or from the shared runs volume; trial.log;
launcher.json) and then deletes the Job. A pod log it cannot read for a passing reason (429, 5xx,
a dropped connection, a read timeout) is retried on the next poll, never recorded as the trial's
failure, and so is a log cut off before the result line the pod's exit code promises. What the Job
and pod say outlives the log: a deadline kill is `timeout` with the limit, an eviction names the
resource, an OOM kill says so. A Job whose pods are gone before their log was read and that says
nothing itself is "lost", with a message that says why.

cancel deletes the Job with background propagation (its pods and ConfigMap follow).
reattach lists the session's Jobs by label and its local trial directories.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
from cluster.k8s_client import TRANSPORT_ERRORS, Throttle, call, connect, create_or_adopt, explain
from cluster.k8s_collect import LOG_READERS, Collecting
from cluster.k8s_manifests import (
    MANAGED_BY,
    KubernetesConfig,
    build_manifests,
    job_name,
    pod_paths,
)
from cluster.k8s_view import (
    MISSING,
    ClusterView,
    job_phase,
    read_local_queue,
    started,
    waited_s,
    waiting_reason,
)
from cluster.local import SPEC_FILE, STATE_FILE
from cluster.outcome import (
    LOG_FILE,
    failed_result,
    mark_cancelled,
    read_json_file,
    read_result,
    read_tail,
)
from rl_core import sessiondir
from rl_core.trialdir import write_json_atomic

__all__ = ["KubernetesLauncher", "job_phase"]
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


class KubernetesLauncher(Collecting):
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
        # Streaming may use a quarter of the request rate; a trial over budget streams a round later. With
        # 1000 trials every 30 s that is 33 reads/s: unbudgeted, they would starve collection and deletes.
        rate = self.config.api_qps / 4
        self._stream_budget = Throttle(qps=rate, burst=max(1, int(rate * 2)))
        self._tracked: dict[str, TrialHandle] = {}  # unfinished trials poll() advances
        self._ran: set[str] = set()  # jobs seen with a started pod
        self._idle_since: dict[str, float] = {}  # a job that ran and has no started pod now: since when
        self._short_reads: dict[str, int] = {}
        self._queue_checked = False
        self._reads: dict[tuple[str, str], tuple[str, Future]] = {}
        self._pools()

    # ---- contract -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> TrialHandle:
        session, trial_id = spec_identity(spec)
        configmap, job = build_manifests(pod_paths(spec, self.config, self.runs_dir), self.config)
        name, ns = job["metadata"]["name"], self.config.namespace
        trial_dir = self._trial_dir(session, trial_id)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=f"{ns}/{name}")
        self.view.scope(session)
        if (trial_dir / STATE_FILE).exists():  # resubmitted after a restart: the same trial, never a rerun
            self._status(handle)
            return handle
        self._check_queue()
        # Cluster objects first: a failed create leaves no local trace, so the trial can be resubmitted;
        # dying between the create and the local files is repaired by reattach (it finds the Job by label).
        # A leftover Job (the agent lost its local files) is adopted, never replaced, and only if it is
        # labelled as this session's trial: a same-named object of another session is refused.
        if self.config.runs_pvc:
            self._open_to_pod(trial_dir)
        ours = (*MANAGED_BY, SESSION_LABEL, TRIAL_LABEL)
        create_or_adopt(self.core.create_namespaced_config_map, self.core.read_namespaced_config_map, configmap,
                        ours, self.api)
        created, fresh = create_or_adopt(self.batch.create_namespaced_job, self.batch.read_namespaced_job, job,
                                         ours, self.api)
        if fresh:
            self._own_configmap(name, created.metadata.uid)
        self.view.put(created)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, spec)
        self._save(trial_dir, name, "queued")
        self._tracked[name] = handle
        self.view.ensure_watching()
        return handle

    def poll(self) -> None:
        """Refresh the shared view (at most every second; pods and Jobs come from watches) and advance every
        tracked trial:
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
        except (ApiException, *TRANSPORT_ERRORS):
            return ""

    def result(self, handle: TrialHandle) -> dict[str, Any] | None:
        if self.status(handle) not in TERMINAL or self.status(handle) == "cancelled":
            return None
        return read_result(self._trial_dir(handle.session, handle.trial_id))

    def reattach(self, session: str) -> list[TrialHandle]:
        ns = self.config.namespace
        self.view.scope(session)
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
        self._log_pool.shutdown(wait=False, cancel_futures=True)
        self._cleanup.shutdown(wait=True)  # the deletes already decided are sent
        self._reads.clear()
        self._pools()  # a closed launcher still answers (its watches restart on the next status)

    def _pools(self) -> None:
        self._log_pool = ThreadPoolExecutor(LOG_READERS, thread_name_prefix="openrl-k8s-log")
        # Deleting a collected Job is best effort (its TTL is the backstop): off the poll, one at a time.
        self._cleanup = ThreadPoolExecutor(1, thread_name_prefix="openrl-k8s-delete")

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
            # Collect from pods as of the Job's finished state (a lagging watch may not show its last pod,
            # a retried preemption): the watch catches up, or the next refresh lists the laggards at once.
            if not self.view.pods_current(name):
                return "running"
            return self._collect(job, trial_dir)
        pods = self.view.pods_of(name)
        if not started(pods):
            return self._waiting(job, pods, trial_dir)
        self._ran.add(name)
        self._idle_since.pop(name, None)
        self._note(name, trial_dir, self.view.error)
        self._stream(name, trial_dir, pods)
        return "running"

    def _waiting(self, job: client.V1Job, pods: list[client.V1Pod], trial_dir: Path) -> TrialStatus:
        name = job.metadata.name
        reason, permanent = waiting_reason(job, pods, self.view.failed_create.get(name),
                                           self.view.workload_message(job), self.config.kueue_queue)
        self._note(name, trial_dir, reason)
        late = not (job.spec and job.spec.suspend) and self._waited_s(job) > self.config.startup_timeout_s
        if not (permanent or late):
            return "queued"
        message = (f"the pod could not start: {reason}" if permanent else
                   f"the pod did not start within startup_timeout_s={self.config.startup_timeout_s}s: {reason}")
        self._delete(name)
        return self._record(trial_dir, name, failed_result(self._spec(trial_dir), "timeout" if late else "crash",
                                                           message, ""))

    def _waited_s(self, job: client.V1Job) -> float:
        """How long an unstarted trial has waited: since admission, or, for one whose pod ran and went away
        (deleted, preempted) before the Job noted it, since this launcher saw it without a pod."""
        name = job.metadata.name
        if name in self._ran or (job.status and job.status.failed):
            return time.monotonic() - self._idle_since.setdefault(name, time.monotonic())
        return waited_s(job)

    # ---- cluster calls ----------------------------------------------------------------------
    def _delete(self, name: str, strict: bool = False) -> None:
        """Delete the Job and its ConfigMap (pods follow); only a cancel must succeed (and waits), else the
        TTL does it and the request is sent from the cleanup thread, so the poll goes on."""
        self.view.forget(name)
        for key in [k for k in self._reads if k[0] == name]:
            self._reads.pop(key)
        if not strict:
            self._cleanup.submit(self._send_delete, name, False)
            return
        self._send_delete(name, True)

    def _send_delete(self, name: str, strict: bool) -> None:
        body = client.V1DeleteOptions(propagation_policy="Background")
        for delete in (self.batch.delete_namespaced_job, self.core.delete_namespaced_config_map):
            try:
                delete(name, self.config.namespace, body=body, _request_timeout=15)
            except ApiException as exc:
                if exc.status != 404 and strict:
                    raise LauncherError(f"cannot cancel {name}: {exc.status} {exc.reason}") from None
            except TRANSPORT_ERRORS as exc:  # the Job's TTL removes what a collection could not
                if strict:
                    raise explain(exc, self.api, self.config.namespace, f"cancel {name}") from None

    def _own_configmap(self, name: str, job_uid: str) -> None:
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid}
        call(self.core.patch_namespaced_config_map, name, self.config.namespace,
             {"metadata": {"ownerReferences": [owner]}}, api=self.api, action="patch configmaps")

    def _check_queue(self) -> None:
        """A Kueue LocalQueue that does not exist leaves every Job suspended forever: refuse to submit."""
        if not self.config.kueue_queue or self._queue_checked:
            return
        ns = self.config.namespace
        try:
            read_local_queue(self.api, ns, self.config.kueue_queue)
        except (ApiException, *TRANSPORT_ERRORS) as exc:
            raise explain(exc, self.api, ns, "get localqueues") from None
        self._queue_checked = True

    def _adopt_remote(self, name: str, trial_dir: Path) -> None:
        cm = call(self.core.read_namespaced_config_map, name, self.config.namespace, api=self.api,
                  action="read configmaps")
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, json.loads(cm.data["spec.json"]))
        self._save(trial_dir, name, "queued")

    # ---- local files ------------------------------------------------------------------------
    def _open_to_pod(self, trial_dir: Path) -> None:
        """Make the trial dir on the shared runs volume writable for the pod's uid. Volumes that ignore
        fsGroup (NFS, Filestore, some CSI drivers) keep the owner this machine gave it: as root, hand it to
        the pod's uid; as anyone else, open it (mode 0777: the owner cannot give it away)."""
        uid = self.config.run_as_user
        try:
            trial_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                os.chown(trial_dir, uid, uid)
            else:
                os.chmod(trial_dir, 0o777)
        except OSError as exc:
            raise LauncherError(f"cannot make {trial_dir} (runs volume {self.config.runs_pvc}) writable for the "
                                f"pod's uid {uid}: {exc.strerror}; run the agent as the owner of the runs dir or "
                                f"as root, or chown the runs dir to uid {uid}") from None

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
