"""The trial directory: the one owner of its file names, the result schema, and how they are
written and read (docs/contracts.md). Torch-free: the trial runner, the launchers, the research
loop, the leaderboard and the report all use it; nobody reads another component's private files.

    <trial_dir>/
      launch_spec.json   the spec as the launcher submitted it
      spec.json          the resolved spec the runner trained with
      metrics.jsonl      one line per GRPO step          (appended; a torn last line is skipped)
      eval.jsonl         one line per evaluation, with per-question outcomes
      report.jsonl       eval.report_split's evaluations (before and after only), same rows
      samples.jsonl      sample completions with verdicts
      trial.log          the process's stdout and stderr (launcher-owned)
      adapter/           the final policy (LoRA adapter or full weights) other trials may branch from
      checkpoints/       resume checkpoints
      cancelled          marker: a launcher stopped this run on purpose (pause/prune); not an outcome
      result.json        written last, atomically: the outcome (schema below)

Reading: `None` means "not there yet"; a file that is there but unreadable raises TrialDirError
naming the file, so a damaged trial is reported, never taken for a running one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
LAUNCH_SPEC_FILE = "launch_spec.json"
SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
REPORT_FILE = "report.jsonl"
SAMPLES_FILE = "samples.jsonl"
LOG_FILE = "trial.log"
RESULT_FILE = "result.json"
CANCELLED_FILE = "cancelled"
WEIGHTS_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"

STATUSES = ("succeeded", "failed")
ERROR_KINDS = ("bad_spec", "oom", "nan_loss", "model_load", "timeout", "crash", "corrupt")


class TrialDirError(ValueError):
    """A trial file that exists but cannot be used; the message names the file and the fix."""


# --- JSON files -------------------------------------------------------------------------------
def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON via temp file + fsync + os.replace: a crash leaves the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed file, None when it does not exist; TrialDirError when it is not valid JSON."""
    path = Path(path)
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrialDirError(f"cannot read {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrialDirError(f"{path} is damaged (not valid JSON: {exc.msg} at line {exc.lineno}); "
                            "delete it to run the trial again") from None


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    data = read_json(path)
    if data is not None and not isinstance(data, dict):
        raise TrialDirError(f"{path} is damaged (not a JSON object); delete it to run the trial again")
    return data


# --- JSON-lines files -------------------------------------------------------------------------
def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete JSON line (missing file -> []); a line still being written is skipped."""
    try:
        text = Path(path).read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def last_jsonl(path: str | os.PathLike[str], chunk: int = 8192) -> dict[str, Any] | None:
    """The last complete line, reading only the file's tail (progress polling of long runs)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - chunk))
            tail = f.read().decode("utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    for line in reversed(tail.splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            return row
    return None


def truncate_jsonl(path: str | os.PathLike[str], step: int) -> None:
    """On resume, drop lines a crashed run wrote after the checkpoint it resumes from."""
    path = Path(path)
    rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


# --- the result -------------------------------------------------------------------------------
def make_result(trial_id: str, status: str, *, metrics: dict[str, Any] | None = None,
                error: dict[str, Any] | None = None, spec: Any = None, adapter_path: str | None = None,
                lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result.json document of the current schema."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {"schema_version": SCHEMA_VERSION, "trial_id": trial_id, "status": status, "error": error,
            "metrics": dict(metrics or {}), "adapter_path": adapter_path, "lineage": lineage or {}, "spec": spec}


def failed_result(spec: Any, kind: str, message: str, log_tail: str | None = None) -> dict[str, Any]:
    """The result of a trial that could not produce its own (bad spec, crash, timeout, ...)."""
    trial_id = str(spec.get("trial_id", "trial")) if isinstance(spec, dict) else "trial"
    error: dict[str, Any] = {"kind": kind, "message": message}
    if log_tail is not None:
        error["log_tail"] = log_tail
    return make_result(trial_id, "failed", error=error, spec=spec)


def write_result(trial_dir: str | os.PathLike[str], result: dict[str, Any]) -> None:
    check_result(result, Path(trial_dir) / RESULT_FILE)
    write_json_atomic(Path(trial_dir) / RESULT_FILE, result)


def check_result(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("status") not in STATUSES or not isinstance(
            data.get("metrics", {}), dict):
        raise TrialDirError(f"{path} is damaged (not a result: needs status {' or '.join(STATUSES)} and "
                            "a metrics object); delete it to run the trial again")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise TrialDirError(f"{path} has result schema {version!r}, newer than this openrl-agent "
                            f"({SCHEMA_VERSION}); upgrade openrl-agent to read it")
    return data


def read_result(trial_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The trial's result, None while there is none; TrialDirError if the file is damaged."""
    path = Path(trial_dir) / RESULT_FILE
    data = read_json(path)
    return None if data is None else check_result(data, path)


# --- cancellation (a launcher stopped the run on purpose: not an outcome) -----------------------
def mark_cancelled(trial_dir: str | os.PathLike[str]) -> None:
    """Record a deliberate stop and set aside a result the runner wrote while being stopped (it
    answers SIGTERM with a failed result), so readers do not take the run for a finished one."""
    trial_dir = Path(trial_dir)
    path = trial_dir / RESULT_FILE
    if path.exists():
        os.replace(path, trial_dir / "result.cancelled.json")
    write_json_atomic(trial_dir / CANCELLED_FILE, {"cancelled": True})


def was_cancelled(trial_dir: str | os.PathLike[str]) -> bool:
    return (Path(trial_dir) / CANCELLED_FILE).exists()


def launch_spec(trial_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The spec a launcher submitted ({} before the launch)."""
    return read_json_object(Path(trial_dir) / LAUNCH_SPEC_FILE) or {}
