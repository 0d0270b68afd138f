"""What the Kubernetes launcher knows of its namespace, at a cost that does not grow with the trial count.

- Jobs: one watch on the namespace's openrl-agent Jobs keeps a cache (with bookmarks, so a quiet
  watch resumes from a recent resourceVersion instead of re-listing); a (re)list after a dropped
  watch or 410 Gone replaces the cache, so Jobs deleted while nobody watched are seen as gone. A Job
  put into the cache after that LIST began (one the launcher just created) is never taken for gone.
- Pods: one LIST of the namespace's openrl-agent pods per refresh (at most every `min_refresh_s`),
  shared by every trial of the session.
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

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from cluster.base import TERMINAL, LauncherError, TrialStatus
from cluster.outcome import classify_exit
from cluster.pod_entry import EXIT_FAILED, EXIT_SUCCEEDED

MISSING = object()  # a Job the view knows is gone (deleted, or absent from a complete list)
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
    def __init__(self, api: client.ApiClient, namespace: str, selector: str, kueue: bool = False,
                 min_refresh_s: float = 1.0) -> None:
        self.api = api
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)
        self._pod_models: dict[tuple[str, str], client.V1Pod] = {}
        self.custom = client.CustomObjectsApi(api)
        self.namespace, self.selector, self.kueue = namespace, selector, kueue
        self.min_refresh_s = min_refresh_s
        self.lock = threading.Lock()
        self.jobs: dict[str, Any] = {}
        self.pods: dict[str, list[client.V1Pod]] = {}
        self.failed_create: dict[str, str] = {}
        self.workloads: dict[str, str] = {}  # job uid -> Kueue's latest condition message
        self.error: str | None = None  # the last refresh failure, shown as a trial's detail
        self.refreshed_at = float("-inf")
        # Pod LISTs are numbered when they begin; `generation` is the number of the one the cache holds.
        # A Job seen (put, watch event, relist) when `lists_begun` was k is newer than every pod list
        # numbered <= k: its pods are known as of that Job state only once generation > k.
        self.lists_begun = 0
        self.generation = 0
        self.job_seen: dict[str, int] = {}
        self.synced = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._version: str | None = None
        self._puts = 0  # counts put(): a Job put after a LIST began is newer than that list
        self._put_at: dict[str, int] = {}
        self._kueue_version: str | None = None

    # ---- jobs --------------------------------------------------------------------------------
    def ensure_watching(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._stop.clear()
        try:
            self.relist()  # in the caller's thread: status() never reads an unsynced cache
        except Exception as exc:  # noqa: BLE001 - unreachable for now: the watcher relists when it can
            self.error = f"cannot list Jobs ({_short(exc)}); retrying"
        self._watcher = threading.Thread(target=self._watch, name="openrl-k8s-watch", daemon=True)
        self._watcher.start()

    def relist(self) -> None:
        with self.lock:
            began = self._puts
        listed = self.batch.list_namespaced_job(self.namespace, label_selector=self.selector, _request_timeout=15)
        fresh = {j.metadata.name: j for j in listed.items}
        with self.lock:
            for name, known in self.jobs.items():
                if name in fresh:
                    continue
                # Put after the LIST began: created since, so absent from the list but not gone.
                fresh[name] = known if self._put_at.get(name, 0) > began else MISSING
            self.jobs = fresh
            self.job_seen.update(dict.fromkeys(fresh, self.lists_begun))
            self.synced = True
        self._version = listed.metadata.resource_version

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self.relist()
                stream = watch.Watch().stream(self.batch.list_namespaced_job, self.namespace,
                                              label_selector=self.selector, resource_version=self._version,
                                              allow_watch_bookmarks=True, timeout_seconds=60, _request_timeout=90)
                for event in stream:
                    if event["type"] == "ERROR":  # 410 Gone: the version is too old to resume from
                        raise RuntimeError(f"watch error: {event.get('raw_object')}")
                    if event["type"] == "BOOKMARK":  # no object, only a newer version to resume from
                        self._version = event["raw_object"]["metadata"]["resourceVersion"]
                        continue
                    job = event["object"]
                    with self.lock:
                        self.jobs[job.metadata.name] = MISSING if event["type"] == "DELETED" else job
                        self.job_seen[job.metadata.name] = self.lists_begun
                    self._version = job.metadata.resource_version
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - 410 Gone, a dropped connection, a restarting server: relist
                self._version = None
                self._stop.wait(1.0)

    def put(self, job: client.V1Job) -> None:
        """A Job this launcher just created or read (the watch may not have delivered it yet)."""
        with self.lock:
            self._puts += 1
            self._put_at[job.metadata.name] = self._puts
            if not isinstance(self.jobs.get(job.metadata.name), client.V1Job):
                self.jobs[job.metadata.name] = job
                self.job_seen[job.metadata.name] = self.lists_begun

    def job(self, name: str) -> Any:
        """The cached Job, MISSING if gone, None if this view has never seen it."""
        with self.lock:
            job = self.jobs.get(name)
        return MISSING if job is None and self.synced else job

    def forget(self, name: str) -> None:
        with self.lock:
            self.jobs[name] = MISSING

    def close(self) -> None:
        self._stop.set()

    # ---- pods and reasons --------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """One LIST of pods (and, when some trial needs them, of events and Workloads); False if not due."""
        if not force and time.monotonic() - self.refreshed_at < self.min_refresh_s:
            return False
        self.refreshed_at = time.monotonic()
        with self.lock:
            self.lists_begun += 1
            number = self.lists_begun
        try:
            pods = self._list_pods()
            by_job: dict[str, list[client.V1Pod]] = {}
            for pod in pods:
                by_job.setdefault((pod.metadata.labels or {}).get("job-name", ""), []).append(pod)
            for group in by_job.values():
                group.sort(key=lambda p: p.metadata.creation_timestamp)
            with self.lock:
                jobs = [j for j in self.jobs.values() if isinstance(j, client.V1Job)]
            waiting = [j for j in jobs if job_phase(j) not in TERMINAL and j.metadata.name not in by_job]
            failed = self._failed_create() if any(not (j.spec and j.spec.suspend) for j in waiting) else {}
            suspended = self.kueue and any(j.spec and j.spec.suspend for j in waiting)
            workloads = self.read_workloads() if suspended else {}
        except (ApiException, OSError, Exception) as exc:  # noqa: BLE001 - keep the last view; say why
            self.error = f"cannot refresh from the API server ({_short(exc)}); retrying"
            return True
        with self.lock:
            self.pods, self.failed_create, self.workloads, self.error = by_job, failed, workloads, None
            self.generation = max(self.generation, number)
        return True

    def _list_pods(self) -> list[client.V1Pod]:
        """The LIST, parsed as JSON; only pods changed since the last LIST (new uid or resourceVersion) become
        client models: building a V1Pod costs ~100x the JSON parse, and most pods are unchanged each round."""
        answer = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                               _preload_content=False, _request_timeout=15)
        models = {}
        for raw in json.loads(answer.data).get("items", []):
            meta = raw.get("metadata") or {}
            key = (meta.get("uid"), meta.get("resourceVersion"))
            models[key] = self._pod_models.get(key) or self.api.deserialize(json.dumps(raw), "V1Pod",
                                                                            "application/json")
        self._pod_models = models
        return list(models.values())

    def pods_current(self, name: str) -> bool:
        """Whether the cached pod list began after the Job's cached state was seen (so it holds its last pod)."""
        with self.lock:
            return self.generation > self.job_seen.get(name, 0)

    def pods_of(self, name: str) -> list[client.V1Pod]:
        with self.lock:
            return list(self.pods.get(name, []))

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


def _short(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__
