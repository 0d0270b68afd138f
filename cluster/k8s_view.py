"""What the Kubernetes launcher knows of its namespace, at a cost that does not grow with the trial count.

- Jobs and pods: one watch each (cluster/k8s_watch.py), scoped by label to this launcher's
  sessions, kept as raw JSON, with bookmarks so relists are rare. A Job put into the cache after a
  relist's LIST began (one the launcher just created) is never taken for gone.
- A finished Job is collected from pods as of its finished state: the pod watch got past the
  Job's resourceVersion, or the pods seen account for every pod the Job counts; failing both for
  SYNC_AFTER_S, one LIST by job name for all such Jobs of the refresh.
- Why an unstarted trial waits: the pod's scheduling condition and container waiting reason
  (ImagePullBackOff, Unschedulable with the scheduler's message, CreateContainerConfigError), the
  Job controller's FailedCreate events (quota, Pod Security admission) and Kueue's Workload
  conditions, each listed once per refresh and only while some trial needs them.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from cluster.base import SESSION_LABEL, TERMINAL, LauncherError, TrialStatus
from cluster.k8s_watch import MISSING, Reflector, rv_int, rv_of
from cluster.outcome import classify_exit
from cluster.pod_entry import EXIT_FAILED, EXIT_SUCCEEDED

SYNC_AFTER_S = 2.0  # a finished Job's pods not shown by the watch by then are listed (by job name)
SYNC_CHUNK = 200  # job names per such LIST (a label selector in the URL)
STARTED_PHASES = ("Running", "Succeeded", "Failed")
# Waiting reasons that no amount of waiting fixes: fail the trial at once with the reason.
PERMANENT_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
KUEUE_GROUP = "kueue.x-k8s.io"
# Newest first: Kueue stores v1beta2 since 0.16 and will stop serving v1beta1.
KUEUE_VERSIONS = ("v1beta2", "v1beta1")


def kueue_version(api: client.ApiClient) -> str | None:
    """The Kueue API version this server serves (v1beta2 preferred), None if Kueue is not installed.

    Transport errors and answers other than 404 propagate: "cannot ask" is not "not installed"."""
    try:
        group = client.ApisApi(api).get_api_versions(_request_timeout=15)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    served = {v.version for g in group.groups or [] if g.name == KUEUE_GROUP for v in g.versions or []}
    return next((v for v in KUEUE_VERSIONS if v in served), None)


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


def started(pods: list[client.V1Pod]) -> bool:
    return any(p.status and p.status.phase in STARTED_PHASES for p in pods)


def waiting_reason(job: client.V1Job, pods: list[client.V1Pod], failed_create: str | None = None,
                   workload: str | None = None, queue: str | None = None) -> tuple[str, bool]:
    """(why this unstarted trial waits, whether that is permanent)."""
    if job.spec and job.spec.suspend:
        detail = f": {workload}" if workload else ""
        return f"waiting for Kueue admission in queue {queue or '?'}{detail}", False
    if not pods:
        if failed_create:
            return f"FailedCreate: {failed_create}", False
        return "waiting for the Job controller to create the pod", False
    pod = pods[-1]
    for cs in (pod.status and pod.status.container_statuses) or []:
        waiting = cs.state and cs.state.waiting
        if waiting and waiting.reason and waiting.reason != "ContainerCreating":
            text = f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
            return text, waiting.reason in PERMANENT_WAITING
    for cond in (pod.status and pod.status.conditions) or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return f"{cond.reason or 'Unschedulable'}: {cond.message or 'no node fits the pod'}", False
    if pod.spec and pod.spec.node_name:
        return f"starting on node {pod.spec.node_name} (pulling the image, mounting volumes)", False
    return "waiting to be scheduled", False


def read_local_queue(api: client.ApiClient, namespace: str, queue: str) -> dict[str, Any]:
    """The Kueue LocalQueue in the version the server serves; a LauncherError that says the fix if absent."""
    version = kueue_version(api)
    if version is None:
        raise LauncherError("Kueue is not installed (no kueue.x-k8s.io API, v1beta2 or v1beta1): suspended Jobs "
                            "would wait forever; install Kueue or drop kueue_queue")
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            KUEUE_GROUP, version, namespace, "localqueues", queue, _request_timeout=15)
    except ApiException as exc:
        if exc.status == 404:
            raise LauncherError(f"Kueue LocalQueue {queue!r} does not exist in namespace {namespace} "
                                f"(kueue.x-k8s.io/{version}); create it (pointing at a ClusterQueue) or pass "
                                "another kueue_queue") from None
        raise


def failure_reason(job: client.V1Job, pods: list[client.V1Pod]) -> dict[str, str] | None:
    """{kind, message} when the Job or its last pod says why the trial ended (deadline, eviction, OOM
    kill), None when only the exit code can tell. Read before the log: these hold even when the log is gone."""
    for cond in (job.status and job.status.conditions) or []:
        if cond.status == "True" and cond.reason == "DeadlineExceeded":
            limit = job.spec and job.spec.active_deadline_seconds
            return {"kind": "timeout", "message": f"killed at the Job's deadline, activeDeadlineSeconds={limit}s "
                                                  "(the trial's wall time + startup_timeout_s, unless "
                                                  "active_deadline_s sets it)"}
    for pod in reversed(pods):
        status = pod.status
        if status and status.reason == "Evicted":
            what = _evicted_resource(status.message or "")
            return {"kind": "oom" if what == "memory" else "crash",
                    "message": f"evicted: {what}: {status.message or 'no message'}" + EVICTION_FIX.get(what, "")}
        for cs in (status and status.container_statuses) or []:
            term = cs.state and cs.state.terminated
            if term and term.reason == "OOMKilled":
                return {"kind": "oom", "message": "the container was OOMKilled (memory limit reached); raise memory "
                                                  "or shrink the batch"}
    return None


EVICTION_FIX = {"ephemeral storage": "; raise ephemeral_storage in the Kubernetes settings",
                "memory": "; raise memory or shrink the batch"}


def _evicted_resource(message: str) -> str:
    text = message.lower()
    if "ephemeral" in text or "local storage" in text:
        return "ephemeral storage"
    if "memory" in text:
        return "memory"
    return "node pressure"


def last_exit(pods: list[client.V1Pod]) -> Any:
    """The last pod's terminated container state, or None."""
    for cs in (pods[-1].status.container_statuses or []) if pods and pods[-1].status else []:
        if cs.state and cs.state.terminated:
            return cs.state.terminated
    return None


def exit_error(pods: list[client.V1Pod], tail: str) -> dict[str, str]:
    """{kind, message} from the last container's exit, for when failure_reason found nothing to say."""
    term = last_exit(pods)
    if term is None:
        return classify_exit(None, tail)
    return classify_exit(-term.signal if term.signal else term.exit_code, tail)


def promised_result(pods: list[client.V1Pod]) -> bool:
    """Whether the last pod's entry point exited the way it does after printing the result line."""
    term = last_exit(pods)
    return term is not None and not term.signal and term.exit_code in (EXIT_SUCCEEDED, EXIT_FAILED)


def waited_s(job: client.V1Job) -> float:
    """Seconds since the Job was admitted (unsuspended) or created."""
    since = (job.status and job.status.start_time) or job.metadata.creation_timestamp
    if since is None:
        return 0.0
    return (datetime.now(UTC) - since).total_seconds()


class ClusterView:
    """The session's Jobs and pods (one watch each, scoped to this launcher's sessions by label) and, per
    refresh, why unstarted trials wait. A refresh lists pods only for finished Jobs whose pods the watch
    has not caught up with after SYNC_AFTER_S (one LIST for all of them), never the namespace's pods."""

    def __init__(self, api: client.ApiClient, namespace: str, selector: str, kueue: bool = False,
                 min_refresh_s: float = 1.0) -> None:
        self.api = api
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.base_selector, self.kueue = namespace, selector, kueue
        self.sessions: set[str] = set()
        self.min_refresh_s = min_refresh_s
        self.lock = threading.Lock()
        self.failed_create: dict[str, str] = {}
        self.workloads: dict[str, str] = {}  # job uid -> Kueue's latest condition message
        self.refresh_error: str | None = None
        self.refreshed_at = float("-inf")
        self.synced_to: dict[str, int] = {}  # job -> resourceVersion of a pod LIST that covered its pods
        self._behind_since: dict[str, float] = {}
        self._kueue_version: str | None = None
        self._make()

    @property
    def selector(self) -> str:
        if not self.sessions:
            return self.base_selector
        return f"{self.base_selector},{SESSION_LABEL} in ({','.join(sorted(self.sessions))})"

    @property
    def error(self) -> str | None:
        """The last refresh or watch failure, shown as a running trial's detail."""
        return self.refresh_error or self.jobs.error or self.pods.error

    def _make(self) -> None:
        ns, selector = self.namespace, self.selector
        self.jobs = Reflector(self.api, self.batch.list_namespaced_job, ns, selector, "V1Job")
        self.pods = Reflector(self.api, self.core.list_namespaced_pod, ns, selector, "V1Pod", index_label="job-name")

    def scope(self, session: str) -> None:
        """Watch this session's objects too (a launcher usually serves one session: one selector, set once)."""
        if session in self.sessions:
            return
        self.sessions.add(session)
        watching = self.jobs._thread is not None
        self.close()
        self._make()  # the new watches' first LIST holds everything created so far
        if watching:
            self.ensure_watching()

    # ---- jobs --------------------------------------------------------------------------------
    def ensure_watching(self) -> None:
        self.jobs.start()
        self.pods.start()

    def relist(self) -> None:
        self.jobs.relist()

    def put(self, job: client.V1Job) -> None:
        """A Job this launcher just created or read (the watch may not have delivered it yet)."""
        self.jobs.put(job)

    def job(self, name: str) -> Any:
        """The cached Job, MISSING if gone, None if this view has never seen it."""
        job = self.jobs.model(name)
        return MISSING if job is None and self.jobs.synced else job

    def forget(self, name: str) -> None:
        with self.jobs.lock:
            self.jobs.objects[name] = MISSING

    def close(self) -> None:
        self.jobs.stop()
        self.pods.stop()

    # ---- pods and reasons --------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Why unstarted trials wait (events, Workloads: only while some trial needs them), and the pods of
        finished Jobs the watch lags behind on; False if not due."""
        if not force and time.monotonic() - self.refreshed_at < self.min_refresh_s:
            return False
        self.refreshed_at = time.monotonic()
        try:
            with self.jobs.lock:
                names = [n for n, raw in self.jobs.objects.items() if isinstance(raw, dict)]
            jobs = [j for j in map(self.jobs.model, names) if isinstance(j, client.V1Job)]
            waiting = [j for j in jobs if job_phase(j) not in TERMINAL and not self._live_pods(j.metadata.name)]
            failed = self._failed_create() if any(not (j.spec and j.spec.suspend) for j in waiting) else {}
            suspended = self.kueue and any(j.spec and j.spec.suspend for j in waiting)
            workloads = self.read_workloads() if suspended else {}
            self._sync([j.metadata.name for j in jobs if job_phase(j) in TERMINAL], force)
        except Exception as exc:  # noqa: BLE001 - keep the last view; say why
            self.refresh_error = f"cannot refresh from the API server ({_short(exc)}); retrying"
            return True
        with self.lock:
            self.failed_create, self.workloads, self.refresh_error = failed, workloads, None
        return True

    def _sync(self, finished: list[str], force: bool) -> None:
        """One pod LIST, by job-name, for the finished Jobs whose pods the watch has not shown for SYNC_AFTER_S
        (a watch with no pod events since the Job finished has no newer version to show)."""
        now = time.monotonic()
        behind = [n for n in finished if not self.pods_current(n)]
        self._behind_since = {n: self._behind_since.get(n, now) for n in behind}
        due = [n for n, since in self._behind_since.items() if force or now - since >= SYNC_AFTER_S]
        for start in range(0, len(due), SYNC_CHUNK):
            chunk = due[start:start + SYNC_CHUNK]
            answer = self.core.list_namespaced_pod(self.namespace, _preload_content=False, _request_timeout=15,
                                                   label_selector=f"{self.selector},job-name in ({','.join(chunk)})")
            listed = json.loads(answer.data)
            with self.pods.lock:
                known = [p for n in chunk for p in self.pods.index.get(n, ())]
            self.pods.merge(listed.get("items") or [], known, listed["metadata"]["resourceVersion"])
            version = rv_int(listed["metadata"]["resourceVersion"])
            for name in chunk:
                self.synced_to[name] = version
                self._behind_since.pop(name, None)

    def pods_current(self, name: str) -> bool:
        """Whether the pod cache holds the Job's pods as of its cached (finished) state: the watch or a LIST
        got past the Job's resourceVersion, or the pods seen account for every pod the Job counts."""
        raw = self.jobs.raw(name)
        if not isinstance(raw, dict):
            return True
        version = rv_of(raw)
        if self.pods.progress >= version or self.synced_to.get(name, 0) >= version:
            return True
        return _pods_account_for(raw, self.pods.indexed(name))

    def _live_pods(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.pods.indexed(name) if isinstance(p, dict)]

    def pods_of(self, name: str) -> list[client.V1Pod]:
        pods = [self.pods.to_model(raw) for raw in self._live_pods(name)]
        pods.sort(key=lambda p: p.metadata.creation_timestamp)
        return pods

    def _failed_create(self) -> dict[str, str]:
        events = self.core.list_namespaced_event(self.namespace, field_selector="reason=FailedCreate",
                                                 _request_timeout=15).items
        events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return {e.involved_object.name: e.message for e in events if e.involved_object.kind == "Job"}

    def read_workloads(self) -> dict[str, str]:
        version = self._kueue_version or kueue_version(self.custom.api_client)
        listed = None
        if version is not None:
            try:
                listed = self.custom.list_namespaced_custom_object(KUEUE_GROUP, version, self.namespace,
                                                                   "workloads", _request_timeout=15)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if listed is None:  # asked again next time: Kueue may be installed or upgraded meanwhile
            self._kueue_version = None
            return {"*": "Kueue is not installed (no workloads.kueue.x-k8s.io), so the suspended Job "
                         "is never admitted; install Kueue or drop kueue_queue"}
        self._kueue_version = version
        out = {}
        for wl in listed.get("items", []):
            owners = [o["uid"] for o in wl.get("metadata", {}).get("ownerReferences", []) if o.get("kind") == "Job"]
            conds = sorted(wl.get("status", {}).get("conditions", []), key=lambda c: c.get("lastTransitionTime", ""))
            if owners and conds:
                out[owners[0]] = conds[-1].get("message") or conds[-1].get("reason", "")
        return out

    def workload_message(self, job: client.V1Job) -> str | None:
        with self.lock:
            return self.workloads.get(job.metadata.uid) or self.workloads.get("*")


def _pods_account_for(job: dict[str, Any], pods: list[Any]) -> bool:
    """A finished Job's pods are all in view: none still active, a Succeeded one if the Job is Complete,
    and as many ended ones (gone, deleting, or failed other than by a disruption the Job ignores) as the
    Job counts failed and succeeded."""
    status = job.get("status") or {}
    ended = 0
    succeeded = False
    for pod in pods:
        if pod is MISSING or (pod.get("metadata") or {}).get("deletionTimestamp"):
            ended += 1
            continue
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed"):
            return False
        succeeded = succeeded or phase == "Succeeded"
        disrupted = any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
        ended += not disrupted
    if any(c.get("type") == "Complete" and c.get("status") == "True" for c in status.get("conditions") or []):
        return succeeded
    return ended >= (status.get("failed") or 0) + (status.get("succeeded") or 0)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__
