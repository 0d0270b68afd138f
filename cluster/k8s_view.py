"""What the Kubernetes launcher knows of its namespace, at a cost that does not grow with the trial count.

- Jobs: one watch on the namespace's openrl-agent Jobs keeps a cache; a (re)list after a dropped
  watch or 410 Gone replaces the cache, so Jobs deleted while nobody watched are seen as gone.
- Pods: one LIST of the namespace's openrl-agent pods per refresh (at most every `min_refresh_s`),
  shared by every trial of the session.
- Why an unstarted trial waits: the pod's scheduling condition and container waiting reason
  (ImagePullBackOff, Unschedulable with the scheduler's message, CreateContainerConfigError), the
  Job controller's FailedCreate events (quota, Pod Security admission) and Kueue's Workload
  conditions, each listed once per refresh and only while some trial needs them.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from cluster.base import TERMINAL, TrialStatus

MISSING = object()  # a Job the view knows is gone (deleted, or absent from a complete list)
STARTED_PHASES = ("Running", "Succeeded", "Failed")
# Waiting reasons that no amount of waiting fixes: fail the trial at once with the reason.
PERMANENT_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
KUEUE = ("kueue.x-k8s.io", "v1beta1")


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


def waited_s(job: client.V1Job) -> float:
    """Seconds since the Job was admitted (unsuspended) or created."""
    since = (job.status and job.status.start_time) or job.metadata.creation_timestamp
    if since is None:
        return 0.0
    return (datetime.now(UTC) - since).total_seconds()


class ClusterView:
    def __init__(self, api: client.ApiClient, namespace: str, selector: str, kueue: bool = False,
                 min_refresh_s: float = 1.0) -> None:
        self.batch, self.core = client.BatchV1Api(api), client.CoreV1Api(api)
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
        self.synced = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._version: str | None = None

    # ---- jobs --------------------------------------------------------------------------------
    def ensure_watching(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        self._stop.clear()
        self.relist()  # in the caller's thread: status() never reads an unsynced cache
        self._watcher = threading.Thread(target=self._watch, name="openrl-k8s-watch", daemon=True)
        self._watcher.start()

    def relist(self) -> None:
        listed = self.batch.list_namespaced_job(self.namespace, label_selector=self.selector, _request_timeout=15)
        fresh = {j.metadata.name: j for j in listed.items}
        with self.lock:
            for name in self.jobs:
                fresh.setdefault(name, MISSING)  # deleted while the watch was down
            self.jobs = fresh
            self.synced = True
        self._version = listed.metadata.resource_version

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self.relist()
                stream = watch.Watch().stream(self.batch.list_namespaced_job, self.namespace,
                                              label_selector=self.selector, resource_version=self._version,
                                              timeout_seconds=60, _request_timeout=90)
                for event in stream:
                    job = event["object"]
                    with self.lock:
                        self.jobs[job.metadata.name] = MISSING if event["type"] == "DELETED" else job
                    self._version = job.metadata.resource_version
                    if self._stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - 410 Gone, a dropped connection, a restarting server: relist
                self._version = None
                self._stop.wait(1.0)

    def put(self, job: client.V1Job) -> None:
        """A Job this launcher just created or read (the watch may not have delivered it yet)."""
        with self.lock:
            if not isinstance(self.jobs.get(job.metadata.name), client.V1Job):
                self.jobs[job.metadata.name] = job

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
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector,
                                                 _request_timeout=15).items
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
        return True

    def pods_of(self, name: str) -> list[client.V1Pod]:
        with self.lock:
            return list(self.pods.get(name, []))

    def _failed_create(self) -> dict[str, str]:
        events = self.core.list_namespaced_event(self.namespace, field_selector="reason=FailedCreate",
                                                 _request_timeout=15).items
        events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return {e.involved_object.name: e.message for e in events if e.involved_object.kind == "Job"}

    def read_workloads(self) -> dict[str, str]:
        try:
            listed = self.custom.list_namespaced_custom_object(*KUEUE, self.namespace, "workloads",
                                                               _request_timeout=15)
        except ApiException as exc:
            if exc.status == 404:
                return {"*": "Kueue is not installed (no workloads.kueue.x-k8s.io), so the suspended Job "
                             "is never admitted; install Kueue or drop kueue_queue"}
            raise
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
