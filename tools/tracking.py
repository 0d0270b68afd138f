"""Mirror a trial directory into the experiment trackers people already run: TensorBoard and MLflow.

Trials write their figures to the trial directory (docs/contracts.md: spec.json, metrics.jsonl,
eval.jsonl, result.json); `mirror_trial` reads those files and logs them, so nothing in the trainer
changes and a tracker can be filled after the fact (`openrl-agent` calls it as each trial finishes).

- TensorBoard: event files under `<logdir>/<session>/<trial_id>/`, one scalar per metrics.jsonl
  figure (`train/<name>`) and per evaluation (`eval/<split>_accuracy`), read by `tensorboard --logdir`.
- MLflow: the tracking URI in the config, else MLFLOW_TRACKING_URI, else `sqlite:///<runs>/mlflow.db`
  with artefacts under `<runs>/mlartifacts/` (MLflow 3 refuses its old file store).
  One experiment per session, one parent run per session, one nested run per trial; params are the
  resolved spec (flattened, dotted keys); metrics are every step's figures and every evaluation;
  result.json is an artefact; tags: planner, rationale, parent, action, round, status, adapter path.

Logging never fails a trial: every tracker error becomes one warning string in the returned list.
Both libraries are optional extras, imported when used (an optional extra is the one import that
may be missing); a missing one is a warning that names the pip command.

`track_session(emit, session_dir, config)` wraps a session's event callback: each `trial_finished`
is mirrored on one worker thread (a slow tracker never holds up the loop), its warnings come back as
`{"type": "tracking_warning", "message"}` events, and `session_done` waits for the queue to empty.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rl_core import sessiondir
from rl_core.trialdir import (
    EVAL_FILE,
    METRICS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    WEIGHTS_DIR,
    read_json_object,
    read_jsonl,
    read_result,
    result_metrics,
)
from tools.journal import open_study

BACKENDS = ("tensorboard", "mlflow")
SINGLE_TRIALS = "single-trials"  # the TensorBoard/MLflow group of trials run outside a session


def install_hint(backend: str) -> str:
    return f"{backend} is not installed; pip install -e '.[tracking]' (or pip install {backend})"


def missing_backends(backends: list[str]) -> list[str]:
    """One install line per named backend whose library is not importable."""
    return [install_hint(b) for b in backends if b in BACKENDS and importlib.util.find_spec(b) is None]


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k.replace("/", "_"): float(v) for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def _read(tdir: Path) -> dict[str, Any]:
    """The trial's files through rl_core.trialdir: a damaged one raises TrialDirError naming it (one
    warning from mirror_trial)."""
    result = read_result(tdir)
    spec = read_json_object(tdir / SPEC_FILE) or (result or {}).get("spec") or {}
    return {"spec": spec, "result": result, "metrics": read_jsonl(tdir / METRICS_FILE),
            "evals": read_jsonl(tdir / EVAL_FILE)}


def to_tensorboard(trial_dir: Path, logdir: Path) -> Path:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    files = _read(trial_dir)
    out = Path(logdir) / _session_of(files["spec"]) / trial_dir.name
    out.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(out))
    try:
        def scalar(tag: str, value: float, step: int) -> None:
            writer.add_event(Event(step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)])))

        for row in files["metrics"]:
            for name, value in _numbers(row).items():
                scalar(f"train/{name}", value, int(row.get("step", 0)))
        for row in files["evals"]:
            if isinstance(row.get("accuracy"), int | float):
                scalar(f"eval/{row.get('split', 'dev')}_accuracy", float(row["accuracy"]), int(row.get("step", 0)))
    finally:
        writer.close()
    return out


def _session_of(spec: dict[str, Any]) -> str:
    return str(spec.get("session") or SINGLE_TRIALS)


def mlflow_uri(config: dict[str, Any], runs_dir: str | os.PathLike[str]) -> str:
    """The config's URI, else MLFLOW_TRACKING_URI, else a SQLite file next to the sessions."""
    return (config.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{sessiondir.mlflow_db(Path(runs_dir).resolve())}")


def _artifact_root(uri: str) -> str | None:
    """Artefacts of our default SQLite store live beside it, not under whatever the cwd is; a
    server or a user's own URI decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / sessiondir.MLFLOW_ARTIFACTS_DIR).resolve().as_uri()
    return None


def session_run(client: Any, session: str, artifact_root: str | None = None) -> tuple[str, str]:
    """(experiment id, the session's parent run id), created on first use and found again after."""
    name = f"openrl-agent/{session}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        name, artifact_location=f"{artifact_root}/{session}" if artifact_root else None)
    found = client.search_runs([experiment_id], filter_string="tags.`openrl.kind` = 'session'", max_results=1)
    if found:
        return experiment_id, found[0].info.run_id
    run = client.create_run(experiment_id, run_name=session, tags={"openrl.kind": "session", "openrl.session": session})
    return experiment_id, run.info.run_id


# MLflow's HTTP client retries a refused connection for minutes by default; a tracker that is down
# must cost seconds. The user's own settings win.
_HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@contextmanager
def _bounded_http() -> Iterator[None]:
    added = {k: v for k, v in _HTTP_LIMITS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def to_mlflow(trial_dir: Path, uri: str, tags: dict[str, Any] | None = None) -> str:
    with _bounded_http():
        return _to_mlflow(trial_dir, uri, tags)


def _to_mlflow(trial_dir: Path, uri: str, tags: dict[str, Any] | None) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    # MLflow's INFO lines ("Creating initial MLflow database tables...") would cut through the live view.
    logging.getLogger("mlflow").setLevel(max(logging.WARNING, logging.getLogger("mlflow").level))
    files = _read(trial_dir)
    spec, result = files["spec"], files["result"] or {}
    session = _session_of(spec)
    client = MlflowClient(tracking_uri=uri)
    experiment_id, parent = session_run(client, session, _artifact_root(uri))
    all_tags = {"openrl.kind": "trial", "openrl.session": session, "mlflow.parentRunId": parent,
                "status": result.get("status", "running"), "adapter": str((trial_dir / WEIGHTS_DIR).resolve()),
                **{k: str(v)[:5000] for k, v in (tags or {}).items() if v is not None}}
    run = client.create_run(experiment_id, run_name=trial_dir.name, tags=all_tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in _flatten(spec).items()]
    metrics = [Metric(f"train/{k}", v, 0, int(row.get("step", 0))) for row in files["metrics"]
               for k, v in _numbers(row).items()]
    metrics += [Metric(f"eval/{row.get('split', 'dev')}_accuracy", float(row["accuracy"]), 0, int(row.get("step", 0)))
                for row in files["evals"] if isinstance(row.get("accuracy"), int | float)]
    # named by split (dev_accuracy_after, test_gain, ...), whichever schema the result was written in
    metrics += [Metric(f"result/{k}", v, 0, 0) for k, v in _numbers(result_metrics(result).by_name()).items()]
    for i in range(0, max(len(params), 1), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    if (trial_dir / RESULT_FILE).is_file():
        client.log_artifact(run_id, str(trial_dir / RESULT_FILE))
    client.set_terminated(run_id, _RUN_STATUS.get(all_tags["status"], "FAILED"))
    return run_id


_RUN_STATUS = {"succeeded": "FINISHED", "pruned": "KILLED"}


def mirror_trial(trial_dir: str | os.PathLike[str], config: dict[str, Any], runs_dir: str | os.PathLike[str],
                 tags: dict[str, Any] | None = None) -> list[str]:
    """Log one trial to every backend `config["backends"]` names; returns warnings, never raises.

    config: {"backends": ["tensorboard", "mlflow"], "tensorboard_dir": ..., "mlflow_uri": ...}."""
    trial_dir, runs_dir = Path(trial_dir), Path(runs_dir)
    warnings = []
    for backend in config.get("backends") or ():
        try:
            if backend == "tensorboard":
                to_tensorboard(trial_dir, Path(config.get("tensorboard_dir") or sessiondir.tensorboard_dir(runs_dir)))
            elif backend == "mlflow":
                to_mlflow(trial_dir, mlflow_uri(config, runs_dir), tags)
            else:
                warnings.append(f"tracking: unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
        except ImportError:
            warnings.append(f"tracking: {install_hint(backend)}")
        except Exception as exc:  # noqa: BLE001 - a tracker that is down costs a warning, never the trial
            warnings.append(f"tracking: {backend} failed for {trial_dir.name}: {type(exc).__name__}: {str(exc)[:200]}")
    return warnings


Emit = Callable[[dict[str, Any]], None]
DRAIN_S = 600.0  # how long session_done waits for the trackers before giving up on the rest


def track_session(emit: Emit, session_dir: str | os.PathLike[str], config: dict[str, Any] | None) -> Emit:
    """`emit`, plus: every finished trial mirrored to the configured trackers (module docstring).
    Without backends, `emit` itself."""
    if not (config or {}).get("backends"):
        return emit
    return _SessionTracker(emit, Path(session_dir), dict(config or {}))


class _SessionTracker:
    def __init__(self, emit: Emit, session_dir: Path, config: dict[str, Any]) -> None:
        self._emit, self._dir, self._config = emit, session_dir, config
        self._started: dict[str, dict[str, Any]] = {}
        self._study: Any = None
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="tracking", daemon=True)
        self._worker.start()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "trial_started":
            self._started[event["trial_id"]] = {k: event.get(k) for k in ("action", "parent")}
        elif kind == "trial_finished":
            self._queue.put((event["trial_id"], str(event.get("status") or "")))
        elif kind == "session_done":  # everything finished is logged before the session says it is done
            self._queue.put(("", str(event.get("state") or "done")))
            self._queue.put(None)
            self._worker.join(DRAIN_S)
            if self._worker.is_alive():
                self._warn(f"tracking: still logging after {DRAIN_S:.0f} s; the trials left are not mirrored")
        self._emit(event)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            trial_id, status = item
            if not trial_id:
                self._end_session(status)
                continue
            try:
                tags = self._tags(trial_id, status)
            except Exception as exc:  # noqa: BLE001 - an unreadable journal costs the tags, not the mirror
                self._warn(f"tracking: no planner tags for {trial_id}: {type(exc).__name__}: {str(exc)[:200]}")
                tags = {"status": status}
            for warning in mirror_trial(sessiondir.trial_dir(self._dir, trial_id), self._config, self._dir.parent, tags):
                self._warn(warning)

    def _tags(self, trial_id: str, status: str) -> dict[str, Any]:
        """planner, rationale, round, action and parent from the study trial's user attributes (the
        trial_started event's lineage if the journal has none), and the status the loop told."""
        self._study = self._study or open_study(self._dir)
        attrs = next((t.user_attrs for t in self._study.get_trials(deepcopy=False)
                      if t.user_attrs.get("trial_id") == trial_id), {})
        started = self._started.get(trial_id, {})
        return {"planner": attrs.get("planner"), "rationale": attrs.get("rationale"), "round": attrs.get("round"),
                "action": attrs.get("action") or started.get("action"),
                "parent": attrs.get("parent") or started.get("parent"), "status": status}

    def _end_session(self, state: str) -> None:
        """The session's MLflow run ends with the session (a resumed session's trials still nest under it)."""
        if "mlflow" not in self._config["backends"]:
            return
        try:
            with _bounded_http():
                from mlflow.tracking import MlflowClient

                uri = mlflow_uri(self._config, self._dir.parent)
                client = MlflowClient(tracking_uri=uri)
                _, run_id = session_run(client, self._dir.name, _artifact_root(uri))
                client.set_terminated(run_id, "FINISHED" if state == "done" else "KILLED")
        except Exception as exc:  # noqa: BLE001 - as for a trial: a warning, never the session
            self._warn(f"tracking: mlflow could not close the session run: {type(exc).__name__}: {str(exc)[:200]}")

    def _warn(self, message: str) -> None:
        try:
            self._emit({"type": "tracking_warning", "message": message})
        except Exception:  # noqa: BLE001, S110 - a broken view must not stop the trackers either
            pass
