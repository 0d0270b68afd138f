"""The report's facts as one JSON-serialisable dict; every renderer (table, markdown, PNG) reads only this.

Keeping one source of facts is what makes the markdown and JSON forms say the same thing as the terminal.
Accuracies are fractions in [0, 1]; renderers turn them into percentage points. Trial rows come from
tools.leaderboard (the Optuna study is the ground truth of which trials exist and how they ended);
curves and standard errors come from the trial directories (docs/contracts.md).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from agent.confirm import load_confirmation
from agent.report import format as fmt
from agent.report.files import TrialFiles, base_eval, load_trials, read_json
from agent.report.format import shown_path
from agent.report.importance import param_importances
from agent.report.verdict import session_verdict, trial_tree
from agent.session import agent_alive
from rl_core.sessiondir import pause_file, rounds_file, session_file, trial_dir
from rl_core.trialdir import SPEC_FILE, ResultMetrics

# Shown first when they vary across trials; anything else that varies follows.
PREFERRED_PARAMS = (
    "learning_rate",
    "lora_rank",
    "kl_beta",
    "group_size",
    "temperature",
    "loss_type",
    "prompts_per_step",
    "max_steps",
)
DEFAULT_PARAMS = ("learning_rate", "lora_rank", "group_size", "temperature")
MAX_KEY_PARAMS = 5
STATES = ("succeeded", "failed", "pruned", "running", "interrupted", "queued")
NOT_COMPUTED = {"params": {}, "n_trials": 0, "note": "not computed"}


def build_report(session_dir: Path, importances: bool = True) -> dict[str, Any]:
    session_dir = Path(session_dir)
    session = read_json(session_file(session_dir)) or {}
    trials = load_trials(session_dir)
    base = _base(trials)
    rows = leaderboard_rows(session_dir, trials)
    best = _best(rows, trials, session_dir)
    tree = trial_tree(rows, trials)
    confirm = load_confirmation(session_dir)
    return {
        "session": _session_facts(session_dir, session, rows),
        "base": base,
        "verdict": session_verdict(tree, trials, confirm),
        "confirm": confirm,
        "tree": tree,
        "leaderboard": rows,
        "best": best,
        "rounds": _rounds(rows, read_json(rounds_file(session_dir)) or []),
        "importances": param_importances(session_dir) if importances else dict(NOT_COMPUTED),
        "failures": [
            {"trial_id": r["trial_id"], "round": r["round"], **_error(r)}
            for r in rows
            if r["status"] == "failed"
        ],
        "curves": {t.trial_id: _curve(t) for t in trials if t.metrics or t.evals},
        "best_so_far": _best_so_far(rows),
    }


def leaderboard(session_dir: Path) -> list[dict[str, Any]]:
    """Only the leaderboard rows (the live view refreshes these after every finished trial)."""
    return leaderboard_rows(Path(session_dir), load_trials(Path(session_dir)))


def leaderboard_rows(session_dir: Path, trials: list[TrialFiles]) -> list[dict[str, Any]]:
    """tools.leaderboard's rows, completed from the trial files: step counts of running trials,
    the dev standard error, the step budget."""
    from tools.leaderboard import leaderboard as study_leaderboard

    files = {t.trial_id: t for t in trials}
    raw = study_leaderboard(session_dir)
    shown = _shown_params([r.get("key_params") or {} for r in raw])
    return [_row(r, files.get(r["trial_id"]), shown) for r in raw]


def _row(r: dict[str, Any], t: TrialFiles | None, shown: list[str]) -> dict[str, Any]:
    m = t.result_metrics if t else ResultMetrics()
    last = t.metrics[-1] if t and t.metrics else {}
    ok = r["status"] == "succeeded"
    return {
        "rank": r.get("rank"),
        "trial_id": r["trial_id"],
        "status": r["status"],
        "pruned_at_step": r.get("pruned_at_step"),
        "score": r.get("score"),  # the session's objective: accuracy, or gain when the goal asked for it
        "accuracy": r.get("dev_accuracy_after") if ok else None,
        "stderr": m.eval.stderr_after if m.eval else None,
        "base": r.get("dev_accuracy_before"),
        "gain": r.get("gain") if ok else None,
        "gain_stderr": r.get("gain_stderr") if ok else None,
        "params": {k: (r.get("key_params") or {}).get(k) for k in shown},
        "reward": fmt.reward(r.get("reward") or r.get("reward_summary") or "-"),
        "reward_mean_last": m.reward_mean_last if m.reward_mean_last is not None else last.get("reward_mean"),
        "steps": r.get("steps") if r.get("steps") is not None else last.get("step"),
        "max_steps": ((t.spec if t else {}).get("budget") or {}).get("max_steps"),
        "wall_s": r.get("wall_s") if r.get("wall_s") is not None else last.get("elapsed_s"),
        "rationale": r.get("rationale") or "",
        "round": r.get("round"),
        "planner": r.get("planner"),
        "error": r.get("error"),
        "adapter_path": r.get("adapter_path"),
        "action": r.get("action", "fresh"),
        "parent": r.get("parent"),
        "steps_total": r.get("steps_total"),
        "train_s_total": r.get("train_s_total"),
        "screen": r.get("screen"),  # a challenger's race against its incumbent (agent/screen.py)
    }


def _error(row: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "crash", "message": "", **(row["error"] or {})}


def _shown_params(key_params: list[dict[str, Any]]) -> list[str]:
    """The key hyperparameters that differ between trials: those are the ones worth a column."""
    seen: dict[str, set[str]] = {}
    for kp in key_params:
        for k, v in kp.items():
            seen.setdefault(k, set()).add(repr(v))
    varying = [k for k, vals in seen.items() if len(vals) > 1]
    if not varying:
        return [k for k in DEFAULT_PARAMS if k in seen]
    rest = sorted(k for k in varying if k not in PREFERRED_PARAMS)
    return ([k for k in PREFERRED_PARAMS if k in varying] + rest)[:MAX_KEY_PARAMS]


def _session_facts(session_dir: Path, session: dict, rows: list[dict]) -> dict[str, Any]:
    """session.json is the Plan (agent/goal.py) plus an id and a status block (agent/session.py)."""
    constraints = session.get("constraints") or {}
    objective = session.get("objective") or {}
    statuses = [r["status"] for r in rows]
    return {
        "id": session_dir.name,
        "dir": shown_path(session_dir),
        "goal": session.get("goal", ""),
        "objective": objective.get("metric", "dev_accuracy_after"),
        "target": objective.get("target"),
        "model": constraints.get("model"),
        "dataset": constraints.get("dataset"),
        "planner": (session.get("planner") or {}).get("name"),
        "launcher": (session.get("launcher") or {}).get("name"),
        "budget_minutes": constraints.get("budget_minutes"),
        "state": session_state(session_dir, session),
        "stop_reason": (session.get("status") or {}).get("stop_reason"),
        "trials_planned": planned_trials(session),
        "counts": {s: statuses.count(s) for s in STATES},
    }


def planned_trials(session: dict[str, Any]) -> int | None:
    return (session.get("constraints") or {}).get("trials")


def session_state(session_dir: Path, session: dict[str, Any]) -> str:
    """The loop's own word for the state; a pause flag the loop has not picked up yet shows as 'pausing'."""
    state = (session.get("status") or {}).get("state") or "created"
    if state == "running" and not agent_alive(session):
        return "stopped (agent not running)"
    if pause_file(session_dir).exists() and state == "running":
        return "pausing"
    return str(state)


def _base(trials: list[TrialFiles]) -> dict[str, Any] | None:
    """The policy trials start from, measured by each before training. It is the same for every trial
    unless the search varies an in-trial warm start (sft_steps): then low/high give the spread."""
    roots = [t for t in trials if not (t.spec.get("init_from") or {}).get("trial")]  # a child starts from its parent
    measured = [(t.trial_id, *base_eval(t)) for t in roots]
    measured = [m for m in measured if m[1] is not None]
    if not measured:
        return None
    trial_id, acc, stderr, n = measured[0]
    accs = [m[1] for m in measured]
    return {
        "accuracy": acc,
        "stderr": stderr,
        "n": n,
        "trial_id": trial_id,
        "low": min(accs),
        "high": max(accs),
    }


def _best(rows: list[dict], trials: list[TrialFiles], session_dir: Path) -> dict[str, Any] | None:
    row = next((r for r in rows if r["rank"] == 1), None)
    if row is None:
        return None
    trial = next((t for t in trials if t.trial_id == row["trial_id"]), None)
    adapter = Path(row["adapter_path"]).resolve() if row["adapter_path"] else None
    spec_path = trial_dir(session_dir, row["trial_id"]) / SPEC_FILE
    out = Path(session_dir).parent / f"repro-{row['trial_id']}"
    keys = ("trial_id", "score", "accuracy", "stderr", "base", "gain", "gain_stderr", "steps", "wall_s")
    return {
        **{k: row[k] for k in keys},
        "spec": trial.spec if trial else {},
        "adapter_path": shown_path(adapter) if adapter else None,
        "adapter_exists": bool(adapter and adapter.exists()),
        "reproduce": f"openrl-agent trial run {shlex.quote(str(spec_path))} --out {shlex.quote(str(out))}",
    }


def _rounds(rows: list[dict], rounds: list[dict]) -> list[dict[str, Any]]:
    records = {r.get("round"): r for r in rounds}
    by_round: dict[Any, list[dict]] = {r: [] for r in records}
    for row in rows:
        by_round.setdefault(row["round"], []).append(row)
    out = []
    for rnd in sorted(by_round, key=lambda r: (r is None, r if r is not None else 0)):
        group, record = by_round[rnd], records.get(rnd) or {}
        scored = [r for r in group if r["accuracy"] is not None]
        top = max(scored, key=lambda r: r["accuracy"]) if scored else None
        out.append(
            {
                "round": rnd,
                "planner": record.get("planner") or next((r["planner"] for r in group if r["planner"]), None),
                "fallback": record.get("fallback"),
                "notes": list(record.get("notes") or []),
                "trials": sorted(r["trial_id"] for r in group),
                "succeeded": len(scored),
                "failed": sum(r["status"] == "failed" for r in group),
                "best_trial": top["trial_id"] if top else None,
                "best_accuracy": top["accuracy"] if top else None,
                "mean_accuracy": sum(r["accuracy"] for r in scored) / len(scored) if scored else None,
                "rationales": {
                    r["trial_id"]: r["rationale"]
                    for r in sorted(group, key=lambda r: r["trial_id"])
                    if r["rationale"]
                },
            }
        )
    return out


def _curve(t: TrialFiles) -> dict[str, Any]:
    return {
        "step": [m.get("step") for m in t.metrics],
        "reward_mean": [m.get("reward_mean") for m in t.metrics],
        "batch_accuracy": [m.get("batch_accuracy") for m in t.metrics],
        "eval": [{k: e.get(k) for k in ("step", "accuracy", "stderr")} for e in t.evals],
    }


def _best_so_far(rows: list[dict]) -> list[dict[str, Any]]:
    """Dev accuracy of each succeeded trial in launch order, with the running maximum."""
    out, best = [], None
    for row in sorted((r for r in rows if r["accuracy"] is not None), key=lambda r: r["trial_id"]):
        best = row["accuracy"] if best is None else max(best, row["accuracy"])
        out.append({"trial_id": row["trial_id"], "accuracy": row["accuracy"], "best": best})
    return out
