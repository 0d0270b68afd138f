"""LLMPlanner: an LLM (Gemini or any OpenAI-compatible server) proposes the next trials as JSON.

The prompt holds the goal, the search space (ranges and choices), the best finished trials by
score (not the latest: the top of the leaderboard must never drop out of view), the latest
failures, the trials running now (so it does not propose them again), each trial's curve summary,
failure samples (wrong SQL with its verdict) and its parent when it was branched from another.
The reply must match a JSON schema derived from the search space (`ctx.space.params`); values
outside it are clamped or rejected (tools.search_space), and each reason is fed back in the next
round's prompt. A proposal may `continue` or `branch` from a parent, which must be a finished,
succeeded trial; any other parent makes it a fresh start, with a note saying so.

One round waits at most `wait_s` seconds for the LLM (agent.planners.llm), reporting a progress
line per attempt, then falls back to the offline planner; the result says why (the loop records
it in rounds.json).
"""

from __future__ import annotations

import json
from typing import Any

from agent.planners.base import ACTIONS, PlannerResult, PlanningContext, Proposal
from agent.planners.llm import LLMError, Progress, call_json

BEST_SHOWN = 10  # finished trials shown best-first; older failures beyond FAILED_SHOWN are counted only
FAILED_SHOWN = 4
MAX_SFT_STEPS = 400  # a supervised stage longer than this is a different experiment (docs/grpo-calibration.md)


def proposal_schema(ctx: PlanningContext) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, p in ctx.space.params.items():
        if p.kind == "categorical":
            kinds = {type(c).__name__ for c in p.choices}
            props[name] = {"type": "string" if kinds == {"str"} else "number",
                           "description": f"one of {p.choices}"}
        else:
            props[name] = {"type": "integer" if p.kind == "int" else "number",
                           "description": f"{p.low} to {p.high}{' (log scale)' if p.log else ''}"}
    item = {"type": "object", "required": ["params", "rationale"],
            "properties": {
                "params": {"type": "object", "properties": props},
                "rationale": {"type": "string", "description": "one or two sentences: why this config"},
                "action": {"type": "string", "enum": list(ACTIONS),
                           "description": "fresh (default): from the base policy; continue: train parent further; "
                                          "branch: start from parent's weights with changed params"},
                "parent": {"type": "string", "description": "for continue/branch: a succeeded trial_id"},
                "supervised_steps": {"type": "integer", "description": f"0 to {MAX_SFT_STEPS}: supervised steps "
                                     "on gold SQL before this trial's GRPO steps (fresh or branch)"}}}
    return {"type": "object", "required": ["proposals"],
            "properties": {"analysis": {"type": "string"},
                           "proposals": {"type": "array", "items": item, "minItems": 1}}}


def shown_trials(ctx: PlanningContext) -> tuple[list[dict[str, Any]], int]:
    """The finished trials the prompt shows: the best BEST_SHOWN by score, then the latest failed or
    pruned ones; and how many are left out. Independent of the order ctx.trials comes in."""
    scored = sorted((t for t in ctx.trials if t.get("score") is not None), key=lambda t: -float(t["score"]))
    others = [t for t in ctx.trials if t.get("score") is None][-FAILED_SHOWN:]
    shown = scored[:BEST_SHOWN] + others
    return shown, len(ctx.trials) - len(shown)


def _supervised_steps(item: dict[str, Any], action: str, i: int, notes: list[str]) -> int | None:
    """The proposal's supervised stage, clamped; none for a continue (its parent has had its own)."""
    value = item.get("supervised_steps")
    if value in (None, 0):
        return None
    if action == "continue":
        notes.append(f"proposal {i}: a continue runs no supervised stage; supervised_steps ignored")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        notes.append(f"proposal {i}: supervised_steps {value!r} is not a number of steps; ignored")
        return None
    steps = min(int(value), MAX_SFT_STEPS)
    if steps != value:
        notes.append(f"proposal {i}: supervised_steps {value!r} clamped to {steps}")
    return steps or None


def _trial_row(t: dict[str, Any]) -> dict[str, Any]:
    summary = t.get("summary") or {}
    row = {k: t.get(k) for k in ("trial_id", "round", "status", "score", "gain", "gain_stderr", "params")}
    if "parent" in t:
        row["parent"] = t.get("parent")
    if t.get("error"):
        row["error"] = t["error"]
    row["curve"] = {k: v for k, v in (summary.get("curve") or {}).items() if v is not None}
    samples = summary.get("samples") or {}
    row["sample_status_share"] = samples.get("status_share")
    row["failure_samples"] = (samples.get("failures") or [])[:3]
    return row


def build_prompt(ctx: PlanningContext) -> str:
    lines = [
        "You are the research planner of an autoresearch agent for GRPO post-training of a small LLM on "
        "text-to-SQL. Rewards are computed by executing the SQL in DuckDB.",
        f"Goal: {ctx.goal}",
        f"Objective: maximise {ctx.objective.get('metric')} (target: {ctx.objective.get('target')}).",
        f"Round {ctx.round}. Propose exactly {ctx.k} trial configs, each with a short rationale. Parameters "
        "you leave out are chosen by Optuna's TPE sampler. reward_<component> params are reward weights "
        "(execution_match is fixed at 1.0): use them to fix what the failure samples show. "
        "action: fresh (default, from the base policy), continue (train a succeeded trial further: "
        "parent = its trial_id) or branch (start from parent's weights with the params you change). "
        "supervised_steps: a supervised stage on gold SQL before a fresh or branched trial's GRPO steps (on "
        "this benchmark supervised steps gained far more per second than GRPO). A branch proposed with a "
        "continue of the same parent races it at equal steps on the dev subset and is stopped once behind.",
        "Search space: " + json.dumps(ctx.space.to_json()["params"]),
    ]
    if ctx.clock is not None:
        lines.append("Clock: " + ctx.clock.describe() + ". The line that leads should keep the compute: "
                     "with one trial at a time, prefer continuing it; explore (branch) only with paired evidence "
                     "to expect a gain larger than the dev noise, or in spare slots.")
    if ctx.feedback:
        lines.append("Your last proposals were corrected: " + " | ".join(ctx.feedback[-12:]))
    shown, hidden = shown_trials(ctx)
    if not ctx.trials:
        lines.append("No trials have finished yet.")
    else:
        lines.append(f"Finished trials, best score first ({len(ctx.trials)} finished"
                     + (f"; {hidden} older failed or lower-scoring trials not shown" if hidden else "") + "):")
    lines += ["Trial: " + json.dumps(_trial_row(t), default=str) for t in shown]
    if ctx.active:
        lines.append(f"Running now ({len(ctx.active)}; do not propose these values again):")
        lines += ["Running: " + json.dumps(params, default=str) for params in ctx.active]
    return "\n".join(lines)


def _lineage(ctx: PlanningContext, item: dict[str, Any], i: int, notes: list[str]) -> tuple[str, str | None]:
    action, parent = item.get("action") or "fresh", item.get("parent") or None
    if action not in ACTIONS:
        notes.append(f"proposal {i}: action {action!r} is not one of {list(ACTIONS)}; started fresh")
        return "fresh", None
    if action == "fresh":
        return "fresh", None
    done = {t.get("trial_id") for t in ctx.succeeded()}
    if parent not in done:
        notes.append(f"proposal {i}: {action} needs a succeeded trial as parent, not {parent!r} "
                     f"(succeeded: {', '.join(sorted(map(str, done))) or 'none yet'}); started fresh")
        return "fresh", None
    return action, str(parent)


class LLMPlanner:
    """The planner protocol over `call_json`; `name` is the provider ("gemini" or "openai")."""

    def __init__(self, config: dict[str, Any], fallback: Any, progress: Progress | None = None) -> None:
        self.config = config
        self.name = str(config.get("name", "gemini"))
        self.fallback = fallback
        self.progress = progress

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        if ctx.k <= 0:
            return PlannerResult([], self.name)
        try:
            data = call_json(self.config, build_prompt(ctx), proposal_schema(ctx), progress=self.progress,
                             what=f"round {ctx.round}'s {ctx.k} proposal{'s' if ctx.k != 1 else ''}")
            raw = data.get("proposals") if isinstance(data, dict) else None
            if not isinstance(raw, list):
                raise LLMError("the reply had no proposals list")
        except LLMError as exc:
            result = self.fallback.propose(ctx)
            result.planner = f"{self.fallback.name} (fallback)"
            result.fallback = f"{self.name} failed: {exc}"
            return result
        return self._validated(ctx, raw)

    def _validated(self, ctx: PlanningContext, raw: list[Any]) -> PlannerResult:
        proposals, notes = [], []
        if len(raw) > ctx.k:
            notes.append(f"{len(raw)} proposals for {ctx.k} slots; kept the first {ctx.k}")
        for i, item in enumerate(raw[: ctx.k], start=1):
            if not isinstance(item, dict) or not isinstance(item.get("params", {}), dict):
                notes.append(f"proposal {i} was not an object with params; rejected")
                continue
            clean, why = ctx.space.validate(item.get("params") or {})
            notes += [f"proposal {i}: {w}" for w in why]
            action, parent = _lineage(ctx, item, i, notes)
            rationale = str(item.get("rationale") or "no rationale given")[:500]
            proposals.append(Proposal(clean, rationale, action=action, parent=parent,
                                      sft_steps=_supervised_steps(item, action, i, notes)))
        continued = {p.parent for p in proposals if p.action == "continue"}
        for p in proposals:  # a branch beside a continue of the same checkpoint races it (agent/screen.py)
            if p.parent in continued and any(q.action == "branch" and q.parent == p.parent for q in proposals):
                p.screened = True
        while len(proposals) < ctx.k:
            proposals.append(Proposal({}, f"{self.name} proposed fewer configs than slots: Optuna's TPE fills this one"))
        return PlannerResult(proposals, self.name, notes)
