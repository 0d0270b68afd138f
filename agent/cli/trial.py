"""`openrl-agent trial ...`: run one GRPO trial from a spec file, as a launcher would."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from agent.cli.common import console, fail

app = typer.Typer(help="Run a single GRPO trial from a JSON spec.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run a single GRPO trial from a JSON spec (keeps `run` a subcommand even when alone)."""


@app.command("run")
def run(
    spec: Path = typer.Argument(..., help="trial spec JSON (see examples/trial.json)"),
    out: Path | None = typer.Option(None, "--out", help="trial directory (default: runs/trials/<trial_id>)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --out"),
    track: str | None = typer.Option(
        None, "--track", help="then mirror the trial to tensorboard, mlflow or both (comma-separated): "
        "event files under $OPENRL_AGENT_RUNS/tensorboard, MLflow at MLFLOW_TRACKING_URI or runs/mlflow.db"),
) -> None:
    """Train, evaluate and write the trial directory; progress lines stream to stdout."""
    from rl_core.spec import SpecError, TrialSpec  # torch-free: validate before loading anything heavy

    try:
        trial_spec = TrialSpec.load(spec)
    except SpecError as exc:
        fail(str(exc))
    tracking = _tracking(track)
    from rl_core.sessiondir import single_trial_dir

    out_dir = out or single_trial_dir(trial_spec.trial_id)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file; give a directory for the trial's files (it is created if missing)")
    if resume and not out_dir.is_dir():
        fail(f"--resume needs the trial directory of an earlier run; {out_dir} does not exist")
    from rl_core.trial import run_trial  # lazy: pulls in torch and transformers

    result = run_trial(trial_spec, out_dir, resume=resume)
    if tracking:
        from tools.tracking import mirror_trial

        for warning in mirror_trial(out_dir, tracking, _runs_dir()):
            console.print(warning, style="dim", markup=False)
    if result["status"] != "succeeded":
        error = result["error"] or {}
        fail(f"trial {trial_spec.trial_id} failed ({error.get('kind')}): {error.get('message')}")
    from rl_core.trialdir import RESULT_FILE, result_metrics

    m = result_metrics(result)
    e = m.eval
    before_text = f"{e.accuracy_before:.3f} -> " if e.accuracy_before is not None else ""
    console.print(f"trial {trial_spec.trial_id} succeeded: {e.split} accuracy {before_text}{e.accuracy_after:.3f} "
                  f"(±{e.stderr_after:.3f}, n={e.n}) in {m.steps} steps; {out_dir}/{RESULT_FILE}")
    if r := m.report:
        gain = (f", {100 * r.gain:+.1f} ± {100 * r.gain_stderr_paired:.1f} points paired"
                if r.gain_stderr_paired is not None else "")
        console.print(f"  report on {r.split}: "
                      f"{f'{r.accuracy_before:.3f} -> ' if r.accuracy_before is not None else ''}{r.accuracy_after:.3f} "
                      f"(±{r.stderr_after:.3f}, n={r.n}){gain}")


def _tracking(track: str | None) -> dict:
    """The --track flag checked before any training (agent.settings owns the rules)."""
    from agent.settings import GoalError, tracking_settings

    try:
        return tracking_settings(track)
    except GoalError as exc:
        fail(str(exc))


def _runs_dir() -> Path:
    return Path(os.environ.get("OPENRL_AGENT_RUNS") or "runs")
