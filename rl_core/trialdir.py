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

The result's metrics are typed (`ResultMetrics`, `result_metrics(result)`) and named by split: the
figures of the split a trial was scored on are `eval` whatever that split is (schema 2 called them
`dev_*` even on test), and those of `eval.report_split` are `report`. Schema 2 results (and the
study attributes of sessions that stored them) are read into the same type, so old runs report.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3  # 3: metrics named by split (eval/report); 2: dev_*/report_* keys (read by _metrics_v2)
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


# --- the result's metrics ----------------------------------------------------------------------
@dataclass(frozen=True)
class SplitFigures:
    """A policy's accuracy on one split before and after training, on the same questions."""
    split: str
    accuracy_after: float | None = None
    stderr_after: float | None = None
    n: int | None = None
    accuracy_before: float | None = None
    stderr_before: float | None = None
    gain: float | None = None
    gain_stderr_paired: float | None = None  # None when the before and after questions differ

    @classmethod
    def measured(cls, split: str, before: dict[str, Any] | None, after: dict[str, Any],
                 gain_stderr_paired: float | None) -> SplitFigures:
        """From two eval.jsonl rows (before may be None: not evaluated)."""
        return cls(split=split, accuracy_after=after["accuracy"], stderr_after=after["stderr"], n=after["n"],
                   accuracy_before=before["accuracy"] if before else None,
                   stderr_before=before["stderr"] if before else None,
                   gain=round(after["accuracy"] - before["accuracy"], 4) if before else None,
                   gain_stderr_paired=gain_stderr_paired)

    def gain_or_difference(self) -> float | None:
        """The recorded gain, else after - before when both were measured."""
        if self.gain is not None:
            return self.gain
        if self.accuracy_after is None or self.accuracy_before is None:
            return None
        return self.accuracy_after - self.accuracy_before

    @classmethod
    def from_json(cls, data: Any) -> SplitFigures | None:
        if not isinstance(data, dict):
            return None
        values = {f.name: _number(data.get(f.name)) for f in fields(cls) if f.name != "split"}
        values["n"] = None if values["n"] is None else int(values["n"])
        return cls(split=str(data.get("split") or "dev"), **values)


@dataclass(frozen=True)
class ResultMetrics:
    """result.json's `metrics`: what the trial measured. A failed trial has only `wall_s`."""
    eval: SplitFigures | None = None  # eval.split's figures: what the agent scores the trial on
    report: SplitFigures | None = None  # eval.report_split's: a held-out report (outside sessions)
    steps: int | None = None
    wall_s: float | None = None
    train_s: float | None = None  # seconds in GRPO steps (what budget.max_seconds counts)
    reward_mean_last: float | None = None
    pass_k: int = 0  # pass@k at the rollout temperature on eval.split, when eval.pass_k asked for it
    pass_before: float | None = None
    pass_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, version: int | None = None) -> ResultMetrics:
        """Schema 3 metrics, or schema 2's (`dev_*` keys) when version says so; version None tells
        them apart by their keys (the metrics an older session stored in its study)."""
        data = data if isinstance(data, dict) else {}
        if version is None:
            version = SCHEMA_VERSION if isinstance(data.get("eval"), dict) or "pass_k" in data else 2
        if version < 3:
            return _metrics_v2(data)
        steps = _number(data.get("steps"))
        return cls(eval=SplitFigures.from_json(data.get("eval")), report=SplitFigures.from_json(data.get("report")),
                   steps=None if steps is None else int(steps), wall_s=_number(data.get("wall_s")),
                   train_s=_number(data.get("train_s")), reward_mean_last=_number(data.get("reward_mean_last")),
                   pass_k=int(_number(data.get("pass_k")) or 0), pass_before=_number(data.get("pass_before")),
                   pass_after=_number(data.get("pass_after")))

    def objective(self, metric: str) -> float | None:
        """The value a plan's objective names: accuracy after training on the eval split (called
        `dev_accuracy_after` in plans, after the split sessions score on) or its `gain`."""
        if self.eval is None:
            return None
        if metric in ("dev_accuracy_after", "accuracy_after"):
            return self.eval.accuracy_after
        if metric == "gain":
            return self.eval.gain_or_difference()
        return None

    def by_name(self) -> dict[str, float]:
        """Every number under a name that carries its split (`dev_accuracy_after`,
        `test_gain_stderr_paired`, `dev_pass_at_8_after`): the flat view trackers log (no '@':
        MLflow refuses it in a metric name)."""
        out: dict[str, float] = {}
        for figures in (self.eval, self.report):
            if figures is not None:
                out.update({f"{figures.split}_{k}": v for k, v in asdict(figures).items()
                            if k != "split" and v is not None})
        if self.pass_k:
            split = self.eval.split if self.eval else "eval"
            out.update({f"{split}_pass_at_{self.pass_k}_{k}": v for k, v in (("before", self.pass_before),
                                                                              ("after", self.pass_after))
                        if v is not None})
        out.update({k: getattr(self, k) for k in ("steps", "wall_s", "train_s", "reward_mean_last")
                    if getattr(self, k) is not None})
        return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


_PASS_KEY = re.compile(r"pass@(\d+)_after")


def _metrics_v2(data: dict[str, Any]) -> ResultMetrics:
    """Schema 2: the eval split's figures as `dev_*` (plus `gain`, `gain_stderr_paired`, and
    `eval_split` naming the split since 9517870), the report split's as `report_*`."""
    def figures(prefix: str, split: Any, gain: str, gain_se: str) -> SplitFigures | None:
        names = ("accuracy_after", "stderr_after", "n", "accuracy_before", "stderr_before")
        values = {name: data.get(f"{prefix}_{name}") for name in names}
        values.update(gain=data.get(gain), gain_stderr_paired=data.get(gain_se), split=split)
        if all(v is None for k, v in values.items() if k != "split"):
            return None
        return SplitFigures.from_json(values)

    match = next((m for m in map(_PASS_KEY.fullmatch, data) if m), None)
    k = int(match.group(1)) if match else 0
    steps = _number(data.get("steps"))
    return ResultMetrics(
        eval=figures("dev", data.get("eval_split") or "dev", "gain", "gain_stderr_paired"),
        report=figures("report", data.get("report_split") or "test", "report_gain", "report_gain_stderr_paired"),
        steps=None if steps is None else int(steps), wall_s=_number(data.get("wall_s")),
        train_s=_number(data.get("train_s")), reward_mean_last=_number(data.get("reward_mean_last")),
        pass_k=k, pass_before=_number(data.get(f"pass@{k}_before")) if k else None,
        pass_after=_number(data.get(f"pass@{k}_after")) if k else None)


def result_metrics(result: dict[str, Any] | None) -> ResultMetrics:
    """The typed metrics of a result document of any schema this version reads (empty for None).
    Without a schema_version (schema 1, or metrics a study stored, wrapped) the keys tell the schema."""
    result = result or {}
    version = result.get("schema_version")
    return ResultMetrics.from_json(result.get("metrics"), version if isinstance(version, int) else None)


# --- the result -------------------------------------------------------------------------------
def make_result(trial_id: str, status: str, *, metrics: ResultMetrics | None = None,
                error: dict[str, Any] | None = None, spec: Any = None, adapter_path: str | None = None,
                lineage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A result.json document of the current schema."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {"schema_version": SCHEMA_VERSION, "trial_id": trial_id, "status": status, "error": error,
            "metrics": (metrics or ResultMetrics()).to_json(), "adapter_path": adapter_path,
            "lineage": lineage or {}, "spec": spec}


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
