"""Screens: a challenger races the incumbent at equal steps on the fixed dev subset.

A line is a chain of `continue`s, each resuming its parent's whole trainer state. A challenger is a
`branch` from one of the line's checkpoints P that also carries P's whole state (weights, optimizer
moments, KL reference, prompt order, schedule position: agent.lineage.parent_init), with one change
(a rule's fix or an explore step). Its reference is the line's own `continue` of P: the incumbent
from the same state. Both evaluate the same fixed dev subset every `screen_steps` of their own steps
(which both count from P), so every common step is a paired comparison of two policies that differ
only by the challenger's change.

- Stop: at a common step the challenger trails by more than one paired standard error. It is
  cancelled there (pruned) and costs no more compute.
- Replace: the challenger takes over the line only with paired evidence at the product's winner
  rule at the last common step (rl_core.stats.decide: exact sign test, Holm-adjusted over the
  challengers of that checkpoint, at least 2 SE). Differences within the noise keep the incumbent.

Verdicts are kept in the session's screens.json (rl_core.sessiondir.screens_file): a challenger's
verdict can become final after it finished (when its reference is still running), when the study
no longer takes attributes for it. The planners and the report read them from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rl_core.sessiondir import screens_file
from rl_core.stats import Paired, decide, paired
from rl_core.trialdir import EVAL_FILE, read_jsonl, write_json_atomic
from tools.leaderboard import load_screens

STOPPED, REPLACES, KEPT, WAITING = "stopped", "replaces", "incumbent kept", "waiting"


@dataclass(frozen=True)
class Screen:
    """A challenger against its reference at their last common evaluation step."""

    step: int  # the challenger's own step count (equal to the reference's at this point)
    n: int  # dev-subset questions both answered
    diff: float  # challenger accuracy - reference accuracy on those questions
    se: float  # paired standard error of the difference
    verdict: str  # STOPPED, REPLACES, KEPT or WAITING (still running and not behind)
    reference: str  # the incumbent's trial id
    p_holm: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        what = {STOPPED: "stopped: behind by more than 1 SE", REPLACES: "replaces the incumbent (winner rule)",
                KEPT: "incumbent kept (within the noise)", WAITING: "racing"}[self.verdict]
        return (f"vs {self.reference} at step {self.step}: {100 * self.diff:+.1f} ± {100 * self.se:.1f} "
                f"points on {self.n} dev questions, {what}")


def subset_outcomes(trial_dir: Path) -> dict[int, dict[str, bool]]:
    """The intermediate evaluations of a trial, by its own step (step 0, the start, left out: both
    racers start from the same weights)."""
    out: dict[int, dict[str, bool]] = {}
    for row in read_jsonl(Path(trial_dir) / EVAL_FILE):
        step, outcomes = row.get("step"), row.get("outcomes")
        if isinstance(step, int) and step > 0 and isinstance(outcomes, dict) and outcomes:
            out[step] = outcomes
    return out


def race(challenger_dir: Path, reference_dir: Path) -> tuple[int, Paired] | None:
    """The paired comparison at the last step both have evaluated on the same questions."""
    mine, theirs = subset_outcomes(challenger_dir), subset_outcomes(reference_dir)
    common = [s for s in sorted(mine) if s in theirs and set(mine[s]) & set(theirs[s])]
    if not common:
        return None
    step = common[-1]
    return step, paired(theirs[step], mine[step])


def screen(challenger_dir: Path, reference_dir: Path, reference: str, *, finished: bool,
           rivals: list[Paired] | None = None) -> Screen | None:
    """The challenger's standing now. `finished`: it ran its last step (no more screens), so the
    verdict is final; `rivals`: the last comparisons of the other challengers of the same
    checkpoint, for Holm's adjustment over every challenger tried there."""
    found = race(challenger_dir, reference_dir)
    if found is None:
        return None
    step, cmp = found
    if cmp.diff < -cmp.se:
        return Screen(step, cmp.n, cmp.diff, cmp.se, STOPPED, reference)
    if not finished:
        return Screen(step, cmp.n, cmp.diff, cmp.se, WAITING, reference)
    comparisons = {"challenger": cmp, **{f"rival{i}": r for i, r in enumerate(rivals or [])}}
    verdict = decide(comparisons)["challenger"]
    return Screen(step, cmp.n, cmp.diff, cmp.se, REPLACES if verdict.beats else KEPT, reference, verdict.p_holm)


def reference_of(rows: list[dict[str, Any]], challenger: dict[str, Any]) -> dict[str, Any] | None:
    """The incumbent a challenger races: the line's `continue` of the challenger's parent."""
    if challenger.get("action") != "branch" or not challenger.get("parent"):
        return None
    refs = [r for r in rows if r.get("action") == "continue" and r.get("parent") == challenger["parent"]
            and r.get("trial_id") != challenger.get("trial_id")]
    return min(refs, key=lambda r: r.get("number", 0)) if refs else None


FINAL = (STOPPED, REPLACES, KEPT)


load = load_screens  # every recorded screen, by challenger trial id


def record(session_dir: Path, challenger: str, found: Screen) -> None:
    data = load(session_dir)
    data[challenger] = found.to_json()
    write_json_atomic(screens_file(session_dir), data)
