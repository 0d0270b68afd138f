"""Collecting a Kubernetes trial: copying a finished Job's pod log and result into the trial
directory (or a running pod's new metric lines, while it runs), deciding its outcome from the Job and
pod status when the log is gone, and retrying what is not the trial's outcome (a 429, a reset, a log
cut off mid-read). Mixed into cluster.k8s_launcher.KubernetesLauncher, which owns the state below.

Log reads go through the kubelet of the pod's node, which may be slow or unreachable: they run in a
bounded pool (LOG_READERS threads, each read with a timeout), never in the poll. A read not done yet
leaves its trial "running" and is looked at again on the next poll, so one bad node holds up only
its own trials.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from cluster.base import TrialStatus
from cluster.k8s_client import TRANSPORT_ERRORS, Throttle
from cluster.k8s_manifests import CONTAINER, KubernetesConfig
from cluster.k8s_view import ClusterView, exit_error, failure_reason, job_phase, promised_result
from cluster.outcome import LOG_FILE, failed_result, read_result, read_tail
from cluster.pod_entry import merge_streams, parse_result_line
from rl_core.trialdir import write_result

COLLECT_TAIL_LINES = 20_000
STREAM_TAIL_LINES = 2_000
SHORT_READS = 3  # a log without the result line its exit code promises is read again this many times
LOG_READERS = 8  # log reads in flight at once
LOG_READ_TIMEOUT_S = (5, 30)  # connect, read: a kubelet that takes longer is asked again next poll


class LogPending(Exception):
    """The pod log read is still in flight (a slow kubelet): the trial stays running, the poll goes on."""


class Collecting:
    """Collect and stream; the launcher supplies the state and the calls declared here."""

    config: KubernetesConfig
    core: client.CoreV1Api
    view: ClusterView
    _short_reads: dict[str, int]
    _streamed_at: dict[str, float]
    _stream_budget: Throttle
    _log_pool: ThreadPoolExecutor
    _reads: dict[tuple[str, str], tuple[str, Future]]  # (job, purpose) -> (pod, its read in flight)

    def _delete(self, name: str, strict: bool = False) -> None:
        raise NotImplementedError  # the launcher: delete the Job and its ConfigMap

    def _note(self, name: str, trial_dir: Path, detail: str | None) -> None:
        raise NotImplementedError  # the launcher: record what the trial waits for

    def _save(self, trial_dir: Path, name: str, state: str) -> None:
        raise NotImplementedError  # the launcher: the trial's state in launcher.json

    def _spec(self, trial_dir: Path) -> dict[str, Any]:
        raise NotImplementedError  # the launcher: the trial's launch spec

    def _collect(self, job: client.V1Job, trial_dir: Path) -> TrialStatus:
        """Copy a finished Job's log and result into the trial dir, then delete the Job; the state it ends in."""
        name = job.metadata.name
        shared = self._sees_volume(trial_dir)  # before this writes trial.log there itself
        pods = self.view.pods_of(name)
        known = failure_reason(job, pods)  # from the Job and pod status: holds even when the log is gone
        try:
            log = self._log_async(name, "collect", COLLECT_TAIL_LINES, pods)
        except LogPending:
            return self._retry(name, trial_dir, "reading the pod log", again=False)
        except ApiException as exc:
            if exc.status not in (404, 400):  # 429/5xx: not the trial's outcome; try again
                return self._retry(name, trial_dir, f"cannot read the pod log ({exc.status} {exc.reason})")
            log = None if exc.status == 404 else ""  # 400: the container never started, so it has no log
        except TRANSPORT_ERRORS as exc:  # a reset or timeout, through the API server or its kubelet proxy
            return self._retry(name, trial_dir, f"cannot read the pod log ({short_error(exc)})")
        if log is None:  # the pods and their logs are gone
            local = read_result(trial_dir) if self.config.runs_pvc else None
            if local is None and known is None:
                return self._finish_lost(name, trial_dir, f"finished ({job_phase(job)}) but its pod and log were "
                                                          "gone before the result was read (node scale-down or "
                                                          "deletion); use runs_pvc to keep results on a volume")
            local = local or failed_result(self._spec(trial_dir), known["kind"], known["message"], "")
            state = self._record(trial_dir, name, local)
            self._delete(name)
            return state
        result = parse_result_line(log) or (read_result(trial_dir) if self.config.runs_pvc else None)
        if result is None and promised_result(pods) and self._short_reads.get(name, 0) < SHORT_READS:
            self._short_reads[name] = self._short_reads.get(name, 0) + 1  # a read cut off mid-stream
            return self._retry(name, trial_dir, "the pod log ended before the result line its exit code promises")
        if log:
            _write_text_atomic(trial_dir / LOG_FILE, log)
            if not shared:
                merge_streams(trial_dir, log)
        if result is None:
            tail = read_tail(trial_dir / LOG_FILE)
            error = known or exit_error(pods, tail)
            result = failed_result(self._spec(trial_dir), error["kind"], error["message"], tail)
        state = self._record(trial_dir, name, result)
        self._delete(name)
        return state

    def _retry(self, name: str, trial_dir: Path, why: str, again: bool = True) -> TrialStatus:
        """Not the trial's outcome: say so in its detail and try again on the next poll."""
        self._note(name, trial_dir, f"collecting: {why}" + ("; retrying" if again else ""))
        return "running"

    def _sees_volume(self, trial_dir: Path) -> bool:
        """Whether the pod writes this trial dir itself (runs_pvc mounted here too: its trial.log is here)."""
        return bool(self.config.runs_pvc) and (trial_dir / LOG_FILE).exists()

    def _stream(self, name: str, trial_dir: Path, pods: list[client.V1Pod]) -> None:
        """Copy new metric/eval lines from a running pod's log every stream_interval_s, unless the pod writes
        them here itself (a runs_pvc this machine mounts; one it does not mount is streamed like an emptyDir)."""
        if self._sees_volume(trial_dir):
            return
        if (name, "stream") not in self._reads:
            if time.monotonic() - self._streamed_at.get(name, float("-inf")) < self.config.stream_interval_s \
                    or not self._stream_budget.try_take():
                return
            self._streamed_at[name] = time.monotonic()
        try:
            log = self._log_async(name, "stream", STREAM_TAIL_LINES, pods)
        except (LogPending, ApiException, *TRANSPORT_ERRORS):
            return  # the next round looks again; the final collection reads the whole tail anyway
        if log:
            merge_streams(trial_dir, log)

    def _log_async(self, name: str, purpose: str, tail: int, pods: list[client.V1Pod]) -> str | None:
        """_pod_log's answer, read in the pool: LogPending until it is in; the read's error once it failed."""
        if not pods or pods[-1].status.phase == "Pending":
            return self._pod_log(name, tail, pods)  # no request to make
        pod = pods[-1].metadata.name
        key = (name, purpose)
        started = self._reads.get(key)
        if started is None or started[0] != pod:  # none yet, or one of a pod the Job has since replaced
            started = self._reads[key] = (pod, self._log_pool.submit(self._pod_log, name, tail, pods))
        if not started[1].done():
            raise LogPending(pod)
        del self._reads[key]
        return started[1].result()

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

    def _pod_log(self, name: str, tail: int, pods: list[client.V1Pod] | None = None) -> str | None:
        """The latest pod's log tail; None if the Job has no pod left; ApiException on a failed read."""
        pods = pods if pods is not None else self.view.pods_of(name)
        if not pods:
            return None
        if pods[-1].status.phase == "Pending":
            return ""
        return self.core.read_namespaced_pod_log(pods[-1].metadata.name, self.config.namespace, container=CONTAINER,
                                                 tail_lines=tail, _request_timeout=LOG_READ_TIMEOUT_S)


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
