"""Mirror a trial directory into the experiment trackers people already run: TensorBoard and MLflow.

Trials write their figures to the trial directory (docs/contracts.md: spec.json, metrics.jsonl,
eval.jsonl, result.json); `mirror_trial` reads those files and logs them, so nothing in the trainer
changes and a tracker can be filled after the fact (`openrl-agent` calls it as each trial finishes).

- TensorBoard: event files under `<logdir>/<session>/<trial_id>/`, one scalar per metrics.jsonl
  figure (`train/<name>`) and per evaluation (`eval/<split>_accuracy`), read by `tensorboard --logdir`.
- MLflow: the tracking URI in the config, else MLFLOW_TRACKING_URI, else `file:<runs>/mlruns`.
  One experiment per session, one parent run per session, one nested run per trial; params are the
  resolved spec (flattened, dotted keys); metrics are every step's figures and every evaluation;
  result.json is an artefact; tags: planner, rationale, parent, status, adapter path.

Logging never fails a trial: every tracker error becomes one warning string in the returned list.
Both libraries are optional extras, imported when used; a missing one is a warning that names the
extra to install.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rl_core.trialdir import read_jsonl

BACKENDS = ("tensorboard", "mlflow")
EXTRA = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


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


def _read(trial_dir: Path) -> dict[str, Any]:
    result_path = trial_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    spec_path = trial_dir / "spec.json"
    spec = json.loads(spec_path.read_text()) if spec_path.is_file() else (result or {}).get("spec") or {}
    return {"spec": spec, "result": result, "metrics": read_jsonl(trial_dir / "metrics.jsonl"),
            "evals": read_jsonl(trial_dir / "eval.jsonl")}


def to_tensorboard(trial_dir: Path, logdir: Path) -> Path:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    files = _read(trial_dir)
    out = Path(logdir) / str(files["spec"].get("session") or trial_dir.parent.parent.name) / trial_dir.name
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


def _mlflow_uri(config: dict[str, Any], runs_dir: Path) -> str:
    return config.get("mlflow_uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"file:{Path(runs_dir).resolve()}/mlruns"


def session_run(client: Any, session: str) -> tuple[str, str]:
    """(experiment id, the session's parent run id), created on first use and found again after."""
    name = f"openrl-agent/{session}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
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

    files = _read(trial_dir)
    spec, result = files["spec"], files["result"] or {}
    session = str(spec.get("session") or trial_dir.parent.parent.name)
    client = MlflowClient(tracking_uri=uri)
    experiment_id, parent = session_run(client, session)
    all_tags = {"openrl.kind": "trial", "openrl.session": session, "mlflow.parentRunId": parent,
                "status": result.get("status", "running"), "adapter": str((trial_dir / "adapter").resolve()),
                **{k: str(v)[:5000] for k, v in (tags or {}).items() if v is not None}}
    run = client.create_run(experiment_id, run_name=trial_dir.name, tags=all_tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in _flatten(spec).items()]
    metrics = [Metric(f"train/{k}", v, 0, int(row.get("step", 0))) for row in files["metrics"]
               for k, v in _numbers(row).items()]
    metrics += [Metric(f"eval/{row.get('split', 'dev')}_accuracy", float(row["accuracy"]), 0, int(row.get("step", 0)))
                for row in files["evals"] if isinstance(row.get("accuracy"), int | float)]
    metrics += [Metric(f"result/{k}", v, 0, 0) for k, v in _numbers(result.get("metrics") or {}).items()]
    for i in range(0, max(len(params), 1), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    if (trial_dir / "result.json").is_file():
        client.log_artifact(run_id, str(trial_dir / "result.json"))
    client.set_terminated(run_id, "FINISHED" if result.get("status") == "succeeded" else "FAILED")
    return run_id


def mirror_trial(trial_dir: str | os.PathLike[str], config: dict[str, Any], runs_dir: str | os.PathLike[str],
                 tags: dict[str, Any] | None = None) -> list[str]:
    """Log one trial to every backend `config["backends"]` names; returns warnings, never raises.

    config: {"backends": ["tensorboard", "mlflow"], "tensorboard_dir": ..., "mlflow_uri": ...}."""
    trial_dir, runs_dir = Path(trial_dir), Path(runs_dir)
    warnings = []
    for backend in config.get("backends") or ():
        try:
            if backend == "tensorboard":
                to_tensorboard(trial_dir, Path(config.get("tensorboard_dir") or runs_dir / "tensorboard"))
            elif backend == "mlflow":
                to_mlflow(trial_dir, _mlflow_uri(config, runs_dir), tags)
            else:
                warnings.append(f"tracking: unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
        except ImportError:
            warnings.append(f"tracking: {backend} is not installed; pip install -e '.[{EXTRA[backend]}]'")
        except Exception as exc:  # noqa: BLE001 - a tracker that is down costs a warning, never the trial
            warnings.append(f"tracking: {backend} failed for {trial_dir.name}: {type(exc).__name__}: {str(exc)[:200]}")
    return warnings
