"""GeminiPlanner: Gemini (google-genai) proposes the next trials as structured JSON.

The prompt holds the goal, the search space (ranges and choices), the leaderboard, a summary of
each finished trial's curves, and failure samples (wrong SQL with its verdict), so the model can
refine the reward weights and not only the hyperparameters. The reply must match a JSON schema
built from the search space; values outside it are clamped or rejected (tools.search_space), and
each reason is fed back in the next round's prompt.

API errors, timeouts and unparseable replies are retried `retries` times with exponential backoff
(`backoff_s`, doubling); after that the round falls back to the offline planner and the result
says so (the loop records it in rounds.json). The API key is read from GEMINI_API_KEY or
GOOGLE_API_KEY and never stored; `base_url` (HttpOptions) points the client at another endpoint.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agent.planners.base import PlannerResult, PlanningContext, Proposal


class GeminiError(RuntimeError):
    """Gemini did not give a usable answer after all retries."""


def _client(config: dict[str, Any]) -> Any:
    from google import genai
    from google.genai import types

    from agent.goal import api_key

    options = types.HttpOptions(base_url=config.get("base_url") or None,
                                timeout=int(float(config.get("timeout_s", 60)) * 1000))
    return genai.Client(api_key=api_key() or "missing-key", http_options=options)


def generate_json(config: dict[str, Any], prompt: str, schema: dict[str, Any]) -> Any:
    """One structured-output call with retries and backoff; raises GeminiError at the end."""
    from google.genai import types

    client = _client(config)
    retries = int(config.get("retries", 3))
    delay = float(config.get("backoff_s", 1.0))
    errors: list[str] = []
    for attempt in range(retries + 1):
        try:
            response = client.models.generate_content(
                model=config.get("model", "gemini-2.5-flash"), contents=prompt,
                config=types.GenerateContentConfig(response_mime_type="application/json",
                                                   response_json_schema=schema, temperature=0.4))
            return json.loads(response.text or "")
        except Exception as exc:  # noqa: BLE001 - API, network and parse errors all mean "try again"
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        if attempt < retries:
            time.sleep(delay * 2**attempt)
    raise GeminiError(f"{retries + 1} attempts failed; last: {errors[-1]}")


# --- goal parsing ---------------------------------------------------------------------------
GOAL_SCHEMA = {
    "type": "object",
    "properties": {
        "understood": {"type": "boolean"},
        "reason": {"type": "string", "description": "if not understood: what is missing or unclear"},
        "metric": {"type": "string", "enum": ["dev_accuracy_after", "gain"]},
        "target": {"type": "number", "description": "absolute accuracy (0-1) or gain (0-1)"},
        "trials": {"type": "integer"}, "parallel": {"type": "integer"},
        "budget_minutes": {"type": "number"}, "model": {"type": "string"}, "dataset": {"type": "string"},
    },
    "required": ["understood"],
}


def parse_goal_with_gemini(goal: str, config: dict[str, Any]) -> dict[str, Any]:
    """The values Gemini reads from the goal (only those it states); GoalError if not understood."""
    from agent.goal import GoalError

    prompt = (
        "You turn a research goal for RL post-training (GRPO) of a text-to-SQL model into settings.\n"
        "Metric: dev_accuracy_after (dev execution accuracy) or gain (accuracy gain over the base model).\n"
        "Only fill fields the goal states; set understood=false with a reason if it is not a goal about "
        "training or evaluating a text-to-SQL model.\n"
        f"Goal: {goal}")
    data = generate_json(config, prompt, GOAL_SCHEMA)
    if not isinstance(data, dict):
        raise GeminiError("the reply was not a JSON object")
    if not data.get("understood", False):
        raise GoalError(f"could not understand the goal: {data.get('reason') or 'no reason given'}; "
                        'say what to improve, e.g. "raise dev accuracy, 8 trials, 2 at a time"')
    keys = ("metric", "target", "trials", "parallel", "budget_minutes", "model", "dataset")
    return {k: data[k] for k in keys if data.get(k) is not None}


# --- proposals -------------------------------------------------------------------------------
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
            "properties": {"params": {"type": "object", "properties": props},
                           "rationale": {"type": "string", "description": "one or two sentences: why this config"}}}
    return {"type": "object", "required": ["proposals"],
            "properties": {"analysis": {"type": "string"},
                           "proposals": {"type": "array", "items": item, "minItems": 1}}}


def build_prompt(ctx: PlanningContext) -> str:
    lines = [
        "You are the research planner of an autoresearch agent for GRPO post-training of a small LLM on "
        "text-to-SQL. Rewards are computed by executing the SQL in DuckDB.",
        f"Goal: {ctx.goal}",
        f"Objective: maximise {ctx.objective.get('metric')} (target: {ctx.objective.get('target')}).",
        f"Round {ctx.round}. Propose exactly {ctx.k} trial configs, each with a short rationale. Parameters "
        "you leave out are chosen by Optuna's TPE sampler. reward_<component> params are reward weights "
        "(execution_match is fixed at 1.0): use them to fix what the failure samples show.",
        "Search space: " + json.dumps(ctx.space.to_json()["params"]),
    ]
    if ctx.feedback:
        lines.append("Your last proposals were corrected: " + " | ".join(ctx.feedback[-12:]))
    if not ctx.trials:
        lines.append("No trials have finished yet.")
    for t in ctx.trials[-12:]:
        summary = t.get("summary", {})
        row = {k: t.get(k) for k in ("trial_id", "round", "status", "score", "gain", "gain_stderr", "params")}
        if t.get("error"):
            row["error"] = t["error"]
        row["curve"] = {k: v for k, v in summary.get("curve", {}).items() if v is not None}
        samples = summary.get("samples", {})
        row["sample_status_share"] = samples.get("status_share")
        row["failure_samples"] = samples.get("failures", [])[:3]
        lines.append("Trial: " + json.dumps(row, default=str))
    return "\n".join(lines)


class GeminiPlanner:
    name = "gemini"

    def __init__(self, config: dict[str, Any], fallback: Any) -> None:
        self.config = config
        self.fallback = fallback

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        if ctx.k <= 0:
            return PlannerResult([], self.name)
        try:
            data = generate_json(self.config, build_prompt(ctx), proposal_schema(ctx))
            raw = data.get("proposals") if isinstance(data, dict) else None
            if not isinstance(raw, list):
                raise GeminiError("the reply had no proposals list")
        except GeminiError as exc:
            result = self.fallback.propose(ctx)
            result.planner = f"{self.fallback.name} (fallback)"
            result.fallback = f"gemini failed: {exc}"
            return result
        return self._validated(ctx, raw)

    def _validated(self, ctx: PlanningContext, raw: list[Any]) -> PlannerResult:
        proposals, notes = [], []
        if len(raw) > ctx.k:
            notes.append(f"{len(raw)} proposals for {ctx.k} slots; kept the first {ctx.k}")
        for i, item in enumerate(raw[: ctx.k]):
            if not isinstance(item, dict) or not isinstance(item.get("params", {}), dict):
                notes.append(f"proposal {i + 1} was not an object with params; rejected")
                continue
            clean, why = ctx.space.validate(item.get("params") or {})
            notes += [f"proposal {i + 1}: {w}" for w in why]
            proposals.append(Proposal(clean, str(item.get("rationale") or "no rationale given")[:500]))
        while len(proposals) < ctx.k:
            proposals.append(Proposal({}, "Gemini proposed fewer configs than slots: Optuna's TPE fills this one"))
        return PlannerResult(proposals, self.name, notes)
