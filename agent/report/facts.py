"""The report's facts as one JSON-serialisable dict; every renderer (table, markdown, PNG) reads only this.

Keeping one source of facts is what makes the markdown and JSON forms say the same thing as the terminal.
Accuracies are fractions in [0, 1]; renderers turn them into percentage points.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from agent.report.files import TrialFiles, base_eval, load_trials, read_json
from agent.report.importance import param_importances

# Shown first when they vary across trials; anything else that varies follows.
PREFERRED_PARAMS = (
    "learning_rate",
    "lora_rank",
    "kl_beta",
    "group_size",
    "temperature",
    "loss_type",
    "prompts_per_step",
    "ppo_epochs",
    "sft_steps",
    "clip_eps_high",
    "scale_rewards",
)
DEFAULT_PARAMS = ("learning_rate", "lora_rank", "group_size", "temperature")
MAX_KEY_PARAMS = 5


def build_report(session_dir: Path, importances: bool = True) -> dict[str, Any]:
    session_dir = Path(session_dir)
    session = read_json(session_dir / "session.json") or {}
    rounds = read_json(session_dir / "rounds.json") or []
    trials = load_trials(session_dir)
    base = _base(trials)
    rows = leaderboard_rows(session_dir, trials, rounds, base)
    best = _best(rows, trials, session_dir)
    return {
        "session": _session_facts(session_dir, session, trials),
        "base": base,
        "verdict": _verdict(best, base),
        "leaderboard": rows,
        "best": best,
        "rounds": _rounds(rows, rounds),
        "importances": param_importances(session_dir)
        if importances
        else {"params": {}, "n_trials": 0, "note": "not computed"},
        "failures": [
            {
                "trial_id": r["trial_id"],
                "round": r["round"],
                **(r["error"] or {"kind": "crash", "message": ""}),
            }
            for r in rows
            if r["status"] == "failed"
        ],
        "curves": {t.trial_id: _curve(t) for t in trials if t.metrics or t.evals},
        "best_so_far": _best_so_far(rows),
    }


def leaderboard(session_dir: Path) -> list[dict[str, Any]]:
    """Only the leaderboard rows (the live view refreshes these after every finished trial)."""
    session_dir = Path(session_dir)
    trials = load_trials(session_dir)
    return leaderboard_rows(session_dir, trials, read_json(session_dir / "rounds.json") or [], _base(trials))


def _session_facts(session_dir: Path, session: dict, trials: list[TrialFiles]) -> dict[str, Any]:
    """session.json is the Plan (agent/goal.py) plus an id and a status block (agent/session.py)."""
    constraints = session.get("constraints") or {}
    objective = session.get("objective") or {}
    statuses = [t.status for t in trials]
    return {
        "id": session_dir.name,
        "dir": str(session_dir.resolve()),
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
        "counts": {s: statuses.count(s) for s in ("succeeded", "failed", "running", "pending")},
    }


def planned_trials(session: dict[str, Any]) -> int | None:
    return (session.get("constraints") or {}).get("trials")


def session_state(session_dir: Path, session: dict[str, Any]) -> str:
    """The loop's own word for the state; a pause flag the loop has not picked up yet shows as 'pausing'."""
    state = (session.get("status") or {}).get("state") or "created"
    if (Path(session_dir) / "pause").exists() and state == "running":
        return "pausing"
    return str(state)


def _base(trials: list[TrialFiles]) -> dict[str, Any] | None:
    """The base policy's dev accuracy: every trial measures it on the same split before training."""
    for t in trials:
        acc, stderr = base_eval(t)
        if acc is not None:
            return {
                "accuracy": acc,
                "stderr": stderr,
                "n": t.result_metrics.get("dev_n"),
                "trial_id": t.trial_id,
            }
    return None


def leaderboard_rows(
    session_dir: Path, trials: list[TrialFiles], rounds: list[dict], base: dict | None
) -> list[dict]:
    key_params = _key_params(trials)
    proposals = {
        p.get("trial_id"): {**p, "round": r.get("round")} for r in rounds for p in r.get("proposals") or []
    }
    rows = [_row(t, key_params, base, proposals.get(t.trial_id) or {}) for t in trials]
    finished = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    for rank, row in enumerate(finished, start=1):
        row["rank"] = rank
    rest = [r for r in rows if r["score"] is None]
    return finished + sorted(rest, key=lambda r: (r["status"] != "failed", r["trial_id"]))


def _row(t: TrialFiles, key_params: list[str], base: dict | None, proposal: dict) -> dict[str, Any]:
    m = t.result_metrics
    score = m.get("dev_accuracy_after") if t.status == "succeeded" else None
    stderr = m.get("dev_stderr_after")
    before, before_se = base_eval(t)
    if before is None and base:
        before, before_se = base["accuracy"], base["stderr"]
    gain = score - before if score is not None and before is not None else None
    gain_se = math.sqrt(stderr**2 + before_se**2) if gain is not None and stderr and before_se else stderr
    hparams = t.spec.get("hparams") or {}
    last = t.metrics[-1] if t.metrics else {}
    return {
        "rank": None,
        "trial_id": t.trial_id,
        "status": t.status,
        "score": score,
        "stderr": stderr,
        "base": before,
        "gain": gain,
        "gain_stderr": gain_se if gain is not None else None,
        "params": {k: hparams.get(k) for k in key_params},
        "reward": reward_summary(t.spec.get("reward") or {}),
        "reward_mean_last": m.get("reward_mean_last", last.get("reward_mean")),
        "steps": m.get("steps", last.get("step")),
        "max_steps": (t.spec.get("budget") or {}).get("max_steps"),
        "wall_s": m.get("wall_s", last.get("elapsed_s")),
        "rationale": proposal.get("rationale", ""),
        "round": proposal.get("round"),
        "error": (t.result or {}).get("error") if t.status == "failed" else None,
    }


def _key_params(trials: list[TrialFiles]) -> list[str]:
    seen: dict[str, set[str]] = {}
    for t in trials:
        for k, v in (t.spec.get("hparams") or {}).items():
            seen.setdefault(k, set()).add(repr(v))
    varying = [k for k, vals in seen.items() if len(vals) > 1]
    if not varying:
        return [k for k in DEFAULT_PARAMS if k in seen] or list(DEFAULT_PARAMS)
    ordered = [k for k in PREFERRED_PARAMS if k in varying] + sorted(
        k for k in varying if k not in PREFERRED_PARAMS
    )
    return ordered[:MAX_KEY_PARAMS]


def reward_summary(reward: dict[str, Any]) -> str:
    components = reward.get("components") or {}
    return " + ".join(name if w == 1 else f"{w:g}·{name}" for name, w in components.items()) or "default"


def _best(rows: list[dict], trials: list[TrialFiles], session_dir: Path) -> dict[str, Any] | None:
    ranked = [r for r in rows if r["rank"] == 1]
    if not ranked:
        return None
    row = ranked[0]
    trial = next(t for t in trials if t.trial_id == row["trial_id"])
    adapter = (trial.result or {}).get("adapter_path")
    adapter_path = (trial.path / adapter).resolve() if adapter else None
    spec_path = trial.path / "spec.json"
    out = Path(session_dir).parent / f"repro-{row['trial_id']}"
    return {
        **{k: row[k] for k in ("trial_id", "score", "stderr", "gain", "gain_stderr", "steps", "wall_s")},
        "spec": trial.spec,
        "adapter_path": str(adapter_path) if adapter_path else None,
        "adapter_exists": bool(adapter_path and adapter_path.exists()),
        "reproduce": f"openrl-agent trial run {shlex.quote(str(spec_path))} --out {shlex.quote(str(out))}",
    }


def _verdict(best: dict | None, base: dict | None) -> dict[str, Any]:
    if best is None:
        return {"beats_base": False, "text": "No trial has finished successfully yet."}
    if best["gain"] is None or base is None:
        return {
            "beats_base": False,
            "text": f"Best trial {best['trial_id']}; the base policy was not measured.",
        }
    gain, se = best["gain"], best["gain_stderr"] or 0.0
    z = gain / se if se else math.inf
    change = f"{100 * gain:+.1f} ± {100 * se:.1f} points"
    if gain > se:
        return {
            "beats_base": True,
            "text": (
                f"{best['trial_id']} beats the base policy: {100 * best['score']:.1f}% vs "
                f"{100 * base['accuracy']:.1f}% ({change}, {z:.1f} standard errors)."
            ),
        }
    return {
        "beats_base": False,
        "text": (
            f"No trial beats the base policy by more than its standard error: the best, {best['trial_id']}, "
            f"changed dev accuracy by {change}, which is within noise."
        ),
    }


def _rounds(rows: list[dict], rounds: list[dict]) -> list[dict[str, Any]]:
    records = {r.get("round"): r for r in rounds}
    by_round: dict[Any, list[dict]] = {r: [] for r in records}
    for row in rows:
        by_round.setdefault(row["round"], []).append(row)
    out = []
    for rnd in sorted(by_round, key=lambda r: (r is None, r if r is not None else 0)):
        group, record = by_round[rnd], records.get(rnd) or {}
        scored = [r for r in group if r["score"] is not None]
        top = max(scored, key=lambda r: r["score"]) if scored else None
        out.append(
            {
                "round": rnd,
                "planner": record.get("planner"),
                "fallback": record.get("fallback"),
                "notes": list(record.get("notes") or []),
                "trials": sorted(r["trial_id"] for r in group),
                "succeeded": len(scored),
                "failed": sum(r["status"] == "failed" for r in group),
                "best_trial": top["trial_id"] if top else None,
                "best_score": top["score"] if top else None,
                "mean_score": sum(r["score"] for r in scored) / len(scored) if scored else None,
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
    """Objective of each finished trial in launch order, with the running maximum."""
    out, best = [], None
    for row in sorted((r for r in rows if r["score"] is not None), key=lambda r: r["trial_id"]):
        best = row["score"] if best is None else max(best, row["score"])
        out.append({"trial_id": row["trial_id"], "score": row["score"], "best": best})
    return out
