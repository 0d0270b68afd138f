"""The trial tree and the session's verdict, from per-question outcomes (rl_core.stats).

- Tree: each trial with its parent, its dev accuracy, its change over its parent (the policy it
  started from) and over the base policy, each with a paired standard error (both evaluations on
  the same dev questions), and the GRPO seconds and steps its weights carry in all.
- Verdict: when the session has confirmed on the sealed test split (runs/<s>/confirm.json), that
  is the headline. Without it (a paused session, a dataset without a test split) the verdict is
  on dev and says so: a trial "beats the base" under rl_core.stats' winner rule (the exact sign
  test of the questions it fixed and broke, Holm-corrected over every trial compared, plus a gain
  of at least 2 paired standard errors), and it is labelled as chosen and measured on the same split.
"""

from __future__ import annotations

from typing import Any

from agent.report.files import TrialFiles
from rl_core.stats import Paired, accuracy, paired, winners


def _final_outcomes(t: TrialFiles | None) -> dict[str, bool] | None:
    if t is None or not t.evals:
        return None
    return t.evals[-1].get("outcomes") or None


def base_outcomes(trials: list[TrialFiles]) -> dict[str, bool] | None:
    """The base policy's dev outcomes: the step-0 evaluation of a trial that started from it."""
    for t in trials:
        first = t.evals[0] if t.evals else {}
        if first.get("step") == 0 and not first.get("from_parent") and not (t.spec.get("init_from") or {}).get("trial"):
            if first.get("outcomes") and not (t.spec.get("hparams") or {}).get("sft_steps"):
                return first["outcomes"]
    return None


def trial_tree(rows: list[dict[str, Any]], trials: list[TrialFiles]) -> list[dict[str, Any]]:
    """One node per succeeded trial, and per challenger stopped at a screen, parents before children
    (depth-first from the roots)."""
    files = {t.trial_id: t for t in trials}
    base = base_outcomes(trials)
    done = {r["trial_id"]: r for r in rows if r["status"] == "succeeded" or (r["status"] == "pruned" and r.get("screen"))}
    nodes = {}
    for tid, r in done.items():
        outcomes = _final_outcomes(files.get(tid))
        over_base = paired(base, outcomes) if base and outcomes else None
        nodes[tid] = {
            "trial_id": tid, "parent": r.get("parent"), "action": r.get("action", "fresh"),
            "accuracy": r.get("accuracy"), "gain_over_parent": r.get("gain"),
            "gain_over_parent_se": r.get("gain_stderr"),
            "gain_over_base": over_base.diff if over_base else None,
            "gain_over_base_se": over_base.se if over_base else None,
            "p_over_base": over_base.p_sign if over_base else None,
            "steps_total": r.get("steps_total"), "train_s_total": r.get("train_s_total"), "depth": 0,
            "status": r["status"], "screen": r.get("screen"),
        }
    order: list[dict[str, Any]] = []

    def visit(tid: str, depth: int) -> None:
        node = nodes[tid]
        node["depth"] = depth
        order.append(node)
        for child in sorted(c for c, n in nodes.items() if n["parent"] == tid):
            visit(child, depth + 1)

    for tid in sorted(t for t, n in nodes.items() if n["parent"] not in nodes):
        visit(tid, 0)
    return order


def dev_verdict(tree: list[dict[str, Any]], trials: list[TrialFiles]) -> dict[str, Any]:
    """Which trials beat the base on dev (rl_core.stats.winners), labelled as chosen on the same split."""
    base = base_outcomes(trials)
    files = {t.trial_id: t for t in trials}
    comps: dict[str, Paired] = {}
    for node in tree:
        outcomes = _final_outcomes(files.get(node["trial_id"]))
        if base and outcomes:
            comps[node["trial_id"]] = paired(base, outcomes)
    if not tree:
        return {"beats_base": False, "source": "dev", "text": "No trial has finished successfully yet."}
    best = max(tree, key=lambda n: n["accuracy"] or 0.0)
    if not comps:
        return {"beats_base": False, "source": "dev",
                "text": f"Best trial {best['trial_id']} (dev {100 * (best['accuracy'] or 0):.1f}%); the base "
                        "policy's per-question dev outcomes were not recorded, so no paired comparison."}
    names = list(comps)
    beats = sorted(winners(comps))
    b = comps.get(best["trial_id"])
    acc, _, n = accuracy(base)
    figures = (f"{best['trial_id']}: dev {100 * (best['accuracy'] or 0):.1f}% vs the base's {100 * acc:.1f}% "
               f"(n={n})" + (f", {100 * b.diff:+.1f} ± {100 * b.se:.1f} points paired" if b else ""))
    caveat = ("chosen and measured on dev (not confirmed on the sealed test split, so the best of "
              f"{len(names)} is flattered by the choice)")
    if best["trial_id"] in beats:
        text = f"{figures}: beats the base on dev after Holm's correction over {len(names)} trials; {caveat}."
    else:
        text = f"{figures}: not a significant gain over the base on dev (2 paired SE after Holm); {caveat}."
    return {"beats_base": best["trial_id"] in beats, "source": "dev", "text": text, "winners_dev": beats}


def session_verdict(tree: list[dict[str, Any]], trials: list[TrialFiles],
                    confirm: dict[str, Any] | None) -> dict[str, Any]:
    if confirm and confirm.get("trials"):
        return {"beats_base": bool(confirm.get("holds")), "source": "test", "text": confirm["text"],
                "confirm": confirm}
    verdict = dev_verdict(tree, trials)
    if confirm and confirm.get("skipped"):  # why there is no test verdict (agent/confirm.py skip_confirmation)
        verdict["text"] += f" No test-split confirmation: {confirm['skipped']}."
    return verdict
