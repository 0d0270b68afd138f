"""Read a session directory laid out per docs/contracts.md, tolerating trials still being written.

A running trial appends to metrics.jsonl while we read it, so a half-written last line is skipped,
not an error; result.json is written atomically, so it is either absent or whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl_core.sessiondir import trials_dir
from rl_core.stats import binomial_se
from rl_core.trialdir import (  # read_jsonl skips a line still being appended
    EVAL_FILE,
    LAUNCH_SPEC_FILE,
    METRICS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    ResultMetrics,
    SplitFigures,
    TrialDirError,
    read_json_object,
    read_jsonl,
    result_metrics,
)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when absent or damaged: the report shows what it can (a damaged
    result is reported by the leaderboard, which reads it through rl_core.trialdir)."""
    try:
        return read_json_object(path)
    except TrialDirError:
        return None


@dataclass
class TrialFiles:
    """Everything one trial directory holds that the report uses."""

    trial_id: str
    path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def result_metrics(self) -> ResultMetrics:
        return result_metrics(self.result)


def load_trial(path: Path) -> TrialFiles:
    result = read_json(path / RESULT_FILE)
    # spec.json is the runner's resolved spec; launch_spec.json is what the agent sent (there before the run starts)
    spec = (
        read_json(path / SPEC_FILE)
        or (result or {}).get("spec")
        or read_json(path / LAUNCH_SPEC_FILE)
        or {}
    )
    return TrialFiles(
        trial_id=path.name,
        path=path,
        spec=spec,
        result=result,
        metrics=read_jsonl(path / METRICS_FILE),
        evals=[e for e in read_jsonl(path / EVAL_FILE) if e.get("split", "dev") == "dev"],
    )


def load_trials(session_dir: Path) -> list[TrialFiles]:
    root = trials_dir(session_dir)
    if not root.is_dir():
        return []
    return [load_trial(p) for p in sorted(root.iterdir()) if p.is_dir()]


def base_eval(trial: TrialFiles) -> tuple[float | None, float | None, int | None]:
    """Dev accuracy of the policy before RL, its standard error and n, for one trial (from result.json
    once the trial finished, else from its step-0 evaluation)."""
    m = trial.result_metrics.eval
    m = m if m is not None and m.split == "dev" else SplitFigures("dev")
    step0 = next((e for e in trial.evals if e.get("step") == 0), {})
    before = m.accuracy_before if m.accuracy_before is not None else step0.get("accuracy")
    n = m.n or step0.get("n")
    stderr = m.stderr_before if m.stderr_before is not None else step0.get("stderr")
    if stderr is None:
        stderr = binomial_se(before, n)
    return before, stderr, n
