"""The verdict: the top-k trials by dev and the base policy, evaluated once on the sealed test split.

Nothing in a session reads the test split before this step: trials evaluate on dev, the planners
and the selection see only dev figures. At the end the k best trials by dev score (default 2) and
the base policy (the model as the session got it) are each evaluated greedily on every test
question, as evaluation-only jobs (`budget.max_steps = 0`, the trial's saved weights as
`init_from`) through the session's own launcher, under `runs/<session>/confirm/trials/`.

Each trial is compared with the base on the same questions (rl_core.stats.paired: the standard
error of the per-question difference, McNemar's exact test). "Beats the base" is rl_core.stats'
winner rule (`decide`): the exact sign test of the discordant questions, Holm-corrected across the
k trials, below the level of 2 standard errors, a gain of at least 2 paired SE, and positive. The
named winner is the dev winner; when it does not beat the base on test, the verdict says so.
With `confirm_seeds = K`, the winner's recipe is also retrained K times from its own starting
point with fresh seeds and evaluated on test: the mean and spread say how much of it was luck.
The result is `runs/<session>/confirm.json`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.plan import Plan, as_plan
from cluster.base import Launcher, TrialHandle
from rl_core.sessiondir import CONFIRM_DIR, confirm_file, confirm_job_dir, trial_dir
from rl_core.spec import TrialSpec
from rl_core.stats import ALPHA_2SE, accuracy, decide, paired
from rl_core.trialdir import (
    EVAL_FILE,
    RESULT_FILE,
    TrialDirError,
    read_json_object,
    read_jsonl,
    write_json_atomic,
)
from tools.leaderboard import leaderboard

CONFIRM_SESSION = CONFIRM_DIR  # the `session` the jobs' specs name (rl_core/sessiondir.py owns the layout)
TEST_SPLIT = "test"
Emit = Callable[[dict[str, Any]], None]


def load_confirmation(session_dir: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(confirm_file(session_dir))
    except TrialDirError:
        return None


def skip_confirmation(session_dir: Path, reason: str) -> dict[str, Any]:
    """Record that this session has no test-split verdict, and why (confirm.json: the report shows it)."""
    skipped = {"split": TEST_SPLIT, "skipped": reason, "trials": [], "winner": None, "holds": False,
               "text": f"No test-split confirmation: {reason}."}
    write_json_atomic(confirm_file(session_dir), skipped)
    return skipped


def job_specs(session_dir: Path, plan: Plan, picks: list[dict[str, Any]], seeds: int) -> list[TrialSpec]:
    """Evaluation-only jobs for the base and each pick on the test split, plus the winner's retrains."""
    c = plan.constraints
    test_eval = {"split": TEST_SPLIT, "limit": 0, "every_steps": 0, "pass_k": 0, "samples": 0, "before": False}
    evaluate = {"max_steps": 0, "max_seconds": None, "checkpoint_every": 0}
    specs = [TrialSpec.from_json({"trial_id": "base", "session": CONFIRM_SESSION, "model": c.model,
                                  "dataset": c.dataset, "seed": c.seed,
                                  "budget": evaluate, "eval": test_eval})]
    for row in picks:
        spec = _result_spec(session_dir, row["trial_id"])
        hparams = {**(spec.get("hparams") or {}), "lora_rank": 0, "sft_steps": 0}  # the saved weights, as they are
        specs.append(TrialSpec.from_json({**spec, "trial_id": row["trial_id"], "session": CONFIRM_SESSION,
                                          "hparams": hparams, "budget": evaluate, "eval": test_eval,
                                          "init_from": {"trial": row["trial_id"],
                                                        "weights": str(Path(row["adapter_path"]).resolve())}}))
    if seeds and picks:
        winner = picks[0]["trial_id"]
        spec = _result_spec(session_dir, winner)
        for s in range(1, seeds + 1):
            budget = {**(spec.get("budget") or {}), "checkpoint_every": 0}
            specs.append(TrialSpec.from_json({**spec, "trial_id": f"{winner}-seed{s}", "session": CONFIRM_SESSION,
                                              "seed": int(spec.get("seed", 0)) + 1000 * s, "budget": budget,
                                              "eval": {**test_eval}}))
    return specs


def run_confirmation(session_dir: Path, plan: Plan | dict[str, Any], launcher: Launcher, *, emit: Emit,
                     poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, Any] | None:
    """Run (or finish, after a restart) the confirmation and write confirm.json; None when skipped."""
    done = load_confirmation(session_dir)
    if done is not None:
        return done
    plan = as_plan(plan)
    top_k = plan.constraints.confirm_top_k
    rows = [r for r in leaderboard(session_dir) if r["status"] == "succeeded" and r["adapter_path"]]
    picks = rows[:top_k]
    if top_k <= 0 or not picks:
        return None
    specs = job_specs(session_dir, plan, picks, plan.constraints.confirm_seeds)
    emit({"type": "confirm_started", "trials": [p["trial_id"] for p in picks], "jobs": len(specs)})
    handles = [launcher.submit(spec.to_json()) for spec in specs]
    # A simulated cluster's clock (cluster/virtual.py) stands in for real time, as in the loop.
    now = getattr(launcher, "virtual_now", None) or time.monotonic
    deadline = None if timeout_s is None else now() + timeout_s
    results = _wait(launcher, handles, poll_s, deadline, now)
    outcomes = {spec.trial_id: _final_outcomes(session_dir, spec.trial_id) for spec in specs}
    verdict = build_verdict(picks, outcomes, seeds=[s.trial_id for s in specs if "-seed" in s.trial_id])
    verdict["failed_jobs"] = sorted(tid for tid, r in results.items() if (r or {}).get("status") != "succeeded")
    write_json_atomic(confirm_file(session_dir), verdict)
    emit({"type": "confirm_done", "verdict": verdict})
    return verdict


def _wait(launcher: Launcher, handles: list[TrialHandle], poll_s: float, deadline: float | None,
          now: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    from cluster.base import TERMINAL

    pending, results = list(handles), {}
    while pending:
        for handle in list(pending):
            if launcher.status(handle) in TERMINAL:
                results[handle.trial_id] = launcher.result(handle)
                pending.remove(handle)
        if deadline is not None and now() > deadline:
            for handle in pending:
                launcher.cancel(handle)
                results[handle.trial_id] = None
            break
        if pending:
            time.sleep(poll_s)
    return results


def _result_spec(session_dir: Path, trial_id: str) -> dict[str, Any]:
    return (read_json_object(trial_dir(session_dir, trial_id) / RESULT_FILE) or {}).get("spec") or {}


def _final_outcomes(session_dir: Path, job: str) -> dict[str, bool] | None:
    rows = read_jsonl(confirm_job_dir(session_dir, job) / EVAL_FILE)
    final = rows[-1] if rows else None
    return final.get("outcomes") if final and final.get("split") == TEST_SPLIT else None


def build_verdict(picks: list[dict[str, Any]], outcomes: dict[str, dict[str, bool] | None],
                  seeds: list[str] | None = None) -> dict[str, Any]:
    """Paired test-split comparisons of each pick with the base, Holm across the picks."""
    base = outcomes.get("base")
    out: dict[str, Any] = {"split": TEST_SPLIT, "alpha": ALPHA_2SE, "trials": [], "winner": None, "holds": False}
    if not base:
        out["text"] = "The base policy's test evaluation failed: no verdict."
        return out
    acc, se, n = accuracy(base)
    out.update(n=n, base={"accuracy": acc, "stderr": se})
    compared = [(row, outcomes.get(row["trial_id"])) for row in picks]
    compared = [(row, o) for row, o in compared if o]
    comparisons = [paired(base, o) for _, o in compared]
    decisions = decide(dict(enumerate(comparisons))).values()
    for (row, o), cmp, d in zip(compared, comparisons, decisions, strict=True):
        t_acc, t_se, _ = accuracy(o)
        out["trials"].append({
            "trial_id": row["trial_id"], "dev_accuracy": row.get("dev_accuracy_after"),
            "dev_gain": row.get("gain"), "dev_gain_stderr": row.get("gain_stderr"),
            "test_accuracy": t_acc, "test_stderr": t_se, "diff": cmp.diff, "diff_se": cmp.se, "z": cmp.z,
            "b_only": cmp.b_only, "a_only": cmp.a_only, "p_mcnemar": cmp.p_mcnemar, "p_sign": cmp.p_sign,
            "p_holm": d.p_holm, "beats_base": d.beats})
    if out["trials"]:
        first = out["trials"][0]
        out["winner"] = first["trial_id"]
        out["holds"] = bool(first["beats_base"])
    if seeds:
        runs = [accuracy(o)[0] for s in seeds if (o := outcomes.get(s))]
        out["seeds"] = {"trials": seeds, "test_accuracy": runs,
                        "mean": statistics.fmean(runs) if runs else None,
                        "sd": statistics.stdev(runs) if len(runs) > 1 else None}
    out["text"] = verdict_text(out)
    return out


def verdict_text(v: dict[str, Any]) -> str:
    if not v.get("trials"):
        return "No trial's test evaluation finished: no verdict."
    w = v["trials"][0]
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    head = (f"{w['trial_id']} (dev winner, dev {pct(w['dev_accuracy'])}) scores {pct(w['test_accuracy'])} on the "
            f"sealed test split (n={v['n']}) vs the base's {pct(v['base']['accuracy'])}: "
            f"{100 * w['diff']:+.1f} ± {100 * w['diff_se']:.1f} points (paired), McNemar p={w['p_mcnemar']:.3g}, "
            f"Holm-corrected one-sided sign-test p={w['p_holm']:.3g} over {len(v['trials'])} trial(s) compared")
    if w["beats_base"]:
        tail = "it beats the base policy on test."
    elif w["diff"] > 0:
        tail = ("the dev winner does NOT hold on test: its gain is within noise after correcting for the "
                "trials compared (needs 2 paired standard errors).")
    else:
        tail = "the dev winner does NOT hold on test: it is no better than the base policy there."
    seeds = v.get("seeds")
    if seeds and seeds.get("mean") is not None:
        spread = f" ± {100 * seeds['sd']:.1f} (sd)" if seeds.get("sd") is not None else ""
        tail += (f" Retrained with {len(seeds['test_accuracy'])} fresh seed(s): test "
                 f"{100 * seeds['mean']:.1f}%{spread}.")
    return f"{head}; {tail}"
