"""From a free-text goal to a Plan: objective (metric, direction, target) and constraints.

The goal is read by the regex rules below; with an LLM planner (Gemini or OpenAI-compatible) the
LLM then fills in what the rules did not find ("five tries", "sixty-five percent"): a number the
user wrote as digits is always the rules' reading. Every value not found takes its documented
default, and CLI overrides win over both. `Plan.sources` records where each value came from, so
the plan shown to the user says what was read and what was assumed. If the LLM cannot be reached
within its wait, the rules' reading stands and a plan note says so.

Rules (case-insensitive; the first match wins):
- trials:   "12 trials" / "12 experiments" / "12 runs"                      default 8, at most 1000
- parallel: "2 at a time" / "2 in parallel" / "2 concurrent" / "2 slots"     default 2 (<= trials), at most 256
- budget:   "in 30 minutes" / "within 2 hours" / "budget of 45 min"          default none, at most 30 days
- target:   "to 60%" / "above 0.6" / "reach 70 percent" (absolute accuracy, at most 100%);
            "by 10 points" / "+5 points" switches the metric to gain over the base policy
A number is taken as written or refused: "-2 trials", "2.7 trials" and "1e9 trials" are GoalErrors
naming the text, never read as 2, 2 or the default. A flag or config `target` of 1 or less is a
fraction, above 1 a percentage ("60" means 60%); above 100% is refused.
- metric:   "accuracy" (dev execution accuracy, the default) or "gain"/"improve by"
- model:    "builtin:NAME", "tiny-gemma", "micro-gemma", "gemma-3-270m", or "model <path>"
- dataset:  "spider", "bird", "builtin"/"built-in", or "dataset <path>"
A goal in which none of these (nor a verb such as raise/improve/maximise) can be found is refused
with GoalError; so is a goal asking to lower accuracy.
"""

from __future__ import annotations

import os
import re
from typing import Any

from agent.plan import (
    GOAL_KEYS,
    LAUNCHER_LIMITS,
    MAX_BUDGET_MINUTES,
    OVERRIDE_KEYS,
    SETTINGS,
    VALUE_KEYS,
    Constraints,
    GoalError,
    Objective,
    Plan,
    fair_share_s,
)
from agent.planners.llm import (
    DEFAULT_GEMINI_MODEL,
    DEFAULT_OPENAI_MODEL,
    LLMError,
    Progress,
    call_json,
    gemini_api_key,
    openai_api_key,
    openai_base_url,
    silent_endpoint,
)
from agent.settings import read_config, tracking_settings
from tools.search_space import SearchSpace, SearchSpaceError, is_pretrained, pretrained_note

__all__ = ["Constraints", "GoalError", "Objective", "Plan", "goal_schema", "parse_goal_rules", "plan_goal"]
MAX_TRIALS = int(SETTINGS["trials"].hi or 0)
MAX_PARALLEL = int(SETTINGS["parallel"].hi or 0)


# --- regex rules ------------------------------------------------------------------------------
# A number as the user wrote it, sign and exponent included, so "-2" or "1e9" is seen whole and
# refused instead of being read as "2" or missed; "1,000" is a thousands separator.
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?"
_NUM = rf"(?<![\w.,-])([-+]?{_DIGITS})"
_SIGNED = rf"(?<![\w.,-])([-+]{_DIGITS})"
_RULES: dict[str, list[str]] = {
    "trials": [rf"{_NUM}\s*(?:trials?|experiments?|runs?|configs?|configurations?)\b"],
    "parallel": [rf"{_NUM}\s*(?:at a time|in parallel|concurrent(?:ly)?|parallel|slots?|workers?)\b",
                 rf"\bparallel(?:ism)?\s*(?:of\s*)?{_NUM}\b"],
    "budget": [rf"\b(?:in|within|under|budget(?: of)?|for|max(?:imum)?)\s*{_NUM}\s*(minutes?|mins?|m|hours?|hrs?|h)\b"],
    "gain": [rf"\bby\s*{_NUM}\s*(?:points?|pts|pp|%)", rf"{_SIGNED}\s*(?:points?|pts|pp)\b"],
    "target": [rf"\b(?:to|reach(?:es|ing)?|above|at least|over|beyond|exceed(?:s|ing)?|hit|past)\s*{_NUM}\s*(%|percent)",
               r"\b(?:to|reach(?:es|ing)?|above|at least|over|beyond|exceed(?:s|ing)?|hit|past)\s*(0?\.\d+)\b"],
}
_INTENT = re.compile(r"\b(raise|improve|increase|boost|maximi[sz]e|better|beat|optimi[sz]e|tune|train|"
                     r"accuracy|gain|research|find|search|push|lift)\b", re.I)
_LOWER = re.compile(r"\b(lower|reduce|decrease|minimi[sz]e|worsen)\b[^.]*\baccuracy\b", re.I)
_MODELS = [(re.compile(r"\bmodel\s+(?:at\s+|from\s+)?((?:\.{0,2}/|~/)\S+)", re.I), None),
           (re.compile(r"\b(builtin:[\w.-]+)", re.I), None),
           (re.compile(r"\bmicro[- ]gemma\b", re.I), "builtin:micro-gemma"),
           (re.compile(r"\btiny[- ]gemma\b", re.I), "builtin:tiny-gemma"),
           (re.compile(r"\b(gemma-3-270m(?:-it)?)\b", re.I), "google/{0}")]
_DATASETS = [(re.compile(r"\b(?:dataset|data)\s+(?:at\s+|from\s+)?((?:\.{0,2}/|~/)\S+)", re.I), None),
             (re.compile(r"\bspider\b", re.I), "spider"), (re.compile(r"\bbird\b", re.I), "bird"),
             (re.compile(r"\bbuilt-?in\b", re.I), "builtin")]


def _first(rules: list[str], text: str) -> re.Match[str] | None:
    for rule in rules:
        match = re.search(rule, text, re.I)
        if match:
            return match
    return None


def parse_goal_rules(goal: str) -> dict[str, Any]:
    """Values the regex rules find in the goal (only those found); GoalError for a number that is
    written but not allowed (negative, fractional, out of range), quoting the goal's words."""
    found: dict[str, Any] = {}
    if m := _first(_RULES["trials"], goal):
        found["trials"] = _whole_in_goal(m, "trials", MAX_TRIALS)
    if m := _first(_RULES["parallel"], goal):
        found["parallel"] = _whole_in_goal(m, "parallel trials", MAX_PARALLEL)
    if m := _first(_RULES["budget"], goal):
        value, unit = _number(m), m.group(2).lower()
        minutes = value * 60 if unit.startswith("h") else value
        if not 0 < minutes <= MAX_BUDGET_MINUTES:
            _refuse(m, "the time budget must be more than 0 and at most 30 days")
        found["budget_minutes"] = minutes
    if m := _first(_RULES["gain"], goal):
        points = _number(m)
        if not 0 < points <= 100:
            _refuse(m, "a gain target must be more than 0 and at most 100 points")
        found["metric"], found["target"] = "gain", points / 100
    elif m := _first(_RULES["target"], goal):
        value = _number(m)
        percent = (m.lastindex or 0) >= 2 and m.group(2)
        if percent and not 0 < value <= 100:
            _refuse(m, "an accuracy target must be more than 0% and at most 100%")
        found["target"] = value / 100 if percent else value
    if "metric" not in found and re.search(r"\b(gain|improve(?:ment)? over)\b", goal, re.I):
        found["metric"] = "gain"
    for pattern, template in _MODELS:
        if m := pattern.search(goal):
            found["model"] = template.format(m.group(1).lower()) if template and m.groups() else (
                template or m.group(1))
            break
    for pattern, name in _DATASETS:
        if m := pattern.search(goal):
            found["dataset"] = name or m.group(1)
            break
    return found


def _number(m: re.Match[str]) -> float:
    return float(m.group(1).replace(",", ""))


def _refuse(m: re.Match[str], rule: str) -> None:
    raise GoalError(f'the goal says "{m.group(0).strip()}": {rule}; rephrase it or use the flag')


def _whole_in_goal(m: re.Match[str], name: str, high: int) -> int:
    value = _number(m)
    if not value.is_integer() or not 1 <= value <= high:
        _refuse(m, f"{name} must be a whole number from 1 to {high}")
    return int(value)


# --- plan assembly ----------------------------------------------------------------------------
def plan_goal(goal: str, overrides: dict[str, Any] | None = None, progress: Progress | None = None) -> Plan:
    """Parse a goal into a Plan (see the module docstring). Precedence: overrides (CLI flags) >
    the `config` file > the goal text > defaults. The settings and their checks are agent/plan.py's.

    `config` names a TOML or JSON file holding any setting (trials = 12, launcher = "k8s" or
    a [launcher] table with its options, ...) and/or search-space sections ([params.<name>],
    [fixed]; see tools/search_space.py). Raises GoalError for anything that cannot be understood.
    `progress` receives a line per LLM attempt while an LLM planner reads the goal."""
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_options, space_sections = read_config(cli["config"]) if cli.get("config") else ({}, {})
    overrides = {**file_options, **cli}
    unknown = set(overrides) - OVERRIDE_KEYS
    if unknown:
        raise GoalError(f"unknown setting {sorted(unknown)[0]!r}; known: {', '.join(sorted(OVERRIDE_KEYS))}")
    goal = (goal or "").strip()
    if not goal:
        raise GoalError('the goal is empty; say what to improve, e.g. "raise dev accuracy, 8 trials, 2 at a time"')
    option = {k: SETTINGS[k].parse(overrides.get(k, SETTINGS[k].default))
              for k in ("launcher", "launcher_options", "pruner")}
    planner = _planner_config(overrides)
    plan = Plan(goal=goal, planner=planner, launcher=_launcher(option["launcher"], option["launcher_options"]),
                pruner=option["pruner"])

    found, found_by = _read_goal(goal, planner, progress)
    if planner.get("goal_fallback"):
        plan.notes.append(planner["goal_fallback"])
    values = {**found, **{k: v for k, v in overrides.items() if k in VALUE_KEYS}}
    for key in VALUE_KEYS:
        origin = "override" if key in cli else ("config" if key in file_options else None)
        plan.sources[key] = origin or found_by.get(key, "default")
    _apply(plan, values)
    try:
        space = SearchSpace.for_model(plan.constraints.model)
        space.apply_overrides(space_sections)
    except SearchSpaceError as exc:
        raise GoalError(f"{cli.get('config')}: {exc}") from None
    if plan.constraints.max_steps is not None:
        space.params.pop("max_steps", None)
        space.fixed["budget.max_steps"] = plan.constraints.max_steps
    if is_pretrained(plan.constraints.model):
        plan.notes.append(pretrained_note(plan.constraints.model))
    _narrow_for_launcher(plan, space)
    plan.search_space = space.to_json()
    plan.tracking = tracking_settings(file_options.get("tracking"), cli.get("tracking"))
    return plan


def _launcher(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The launcher's settings; a tinker launcher without an endpoint takes $TINKER_BASE_URL, kept in
    the plan so a resumed session talks to the same endpoint (preflight refuses none at all)."""
    settings = {"name": name, **options}
    if name == "tinker" and not settings.get("endpoint") and os.environ.get("TINKER_BASE_URL"):
        settings["endpoint"] = os.environ["TINKER_BASE_URL"]
    return settings


def _narrow_for_launcher(plan: Plan, space: SearchSpace) -> None:
    """Narrow the space (and branching) to what the launcher's trials can run (agent/plan.py's
    LAUNCHER_LIMITS), with a plan note for each change, so no trial is refused for it later."""
    limits = LAUNCHER_LIMITS.get(plan.launcher["name"])
    if limits is None:
        return
    name = plan.launcher["name"]
    for path, (value, why) in limits.pins.items():
        field_name = path.rsplit(".", 1)[-1]
        param = space.params.get(field_name)
        before = space.fixed.get(path)
        searched = param is not None and (param.choices != [value] if param.kind == "categorical" else True)
        space.fix(path, value)
        if searched or (before is not None and before != value):
            plan.notes.append(f"{field_name} pinned to {value!r} for the {name} launcher: {why}")
    rank, why = limits.lora_rank
    if change := _lora_only(space, rank):
        plan.notes.append(f"lora_rank {change} for the {name} launcher: {why}")
    if plan.constraints.branching:
        plan.constraints.branching = False
        plan.notes.append(f"branching off for the {name} launcher: {limits.branching}")


def _lora_only(space: SearchSpace, rank: int) -> str | None:
    """Take rank 0 (full fine-tuning) out of the space; what changed, or None."""
    param = space.params.get("lora_rank")
    if param is not None and param.kind == "categorical":
        kept = [c for c in param.choices or [] if c >= 1]
        if kept and len(kept) < len(param.choices or []):
            param.choices, param.default = kept, param.default if param.default in kept else (
                rank if rank in kept else kept[0])
            return f"searched over {kept} (first {param.default}), not 0"
        if kept:
            return None
    elif param is not None and (param.high or 0) >= 1:
        if (param.low or 0) >= 1:
            return None
        param.low, param.default = 1, max(1, param.default or rank)
        return "searched from 1, not 0"
    if param is None and (space.fixed.get("hparams.lora_rank") or 0) >= 1:
        return None
    space.params.pop("lora_rank", None)
    space.fix("hparams.lora_rank", rank)
    return f"pinned to {rank}"


def _planner_config(overrides: dict[str, Any]) -> dict[str, Any]:
    name = SETTINGS["planner"].parse(overrides.get("planner") or ("gemini" if gemini_api_key() else "offline"))
    if name == "gemini" and not gemini_api_key():
        raise GoalError("the gemini planner needs an API key: export GEMINI_API_KEY=... (or use --planner offline)")
    config: dict[str, Any] = {"name": name}
    if name == "gemini":
        config.update(model=overrides.get("gemini_model", DEFAULT_GEMINI_MODEL),
                      base_url=overrides.get("gemini_base_url") or os.environ.get("OPENRL_AGENT_GEMINI_BASE_URL"))
    elif name == "openai":
        config.update(model=overrides.get("openai_model") or os.environ.get("OPENRL_AGENT_OPENAI_MODEL")
                      or DEFAULT_OPENAI_MODEL, base_url=openai_base_url({"base_url": overrides.get("openai_base_url")}))
        if not config["base_url"] and not openai_api_key():
            raise GoalError("the openai planner needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local server "
                            "(vLLM, Ollama, llama.cpp), or use --planner offline")
    if name != "offline" and overrides.get("planner_wait_s") is not None:
        config["wait_s"] = SETTINGS["planner_wait_s"].parse(overrides["planner_wait_s"])
    if name != "offline" and (silent := silent_endpoint(config)):
        raise GoalError(f"{silent}; check that the server is up and serving, or use --planner offline")
    return config


_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "choice": "string"}


def goal_schema() -> dict[str, Any]:
    """The JSON schema an LLM fills when it reads a goal: the settings the goal text may state."""
    properties: dict[str, Any] = {
        "understood": {"type": "boolean"},
        "reason": {"type": "string", "description": "if not understood: what is missing or unclear"},
    }
    for name in GOAL_KEYS:
        s = SETTINGS[name]
        properties[name] = {"type": _JSON_TYPES[s.kind], "description": s.help}
        if s.choices:
            properties[name]["enum"] = list(s.choices)
    properties["target"]["description"] = "absolute accuracy or gain, as a fraction (0-1)"
    return {"type": "object", "properties": properties, "required": ["understood"]}


def _read_goal(goal: str, planner: dict[str, Any], progress: Progress | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Values found in the goal, and who found each ("goal" for the rules, else the LLM's name)."""
    found = parse_goal_rules(goal)
    if _LOWER.search(goal):
        raise GoalError("the agent raises accuracy; it cannot aim to lower it. Rephrase the goal, "
                        'e.g. "raise dev accuracy"')
    by = dict.fromkeys(found, "goal")
    if planner["name"] != "offline":
        try:
            read = _read_goal_with_llm(goal, planner, progress)
        except LLMError as exc:
            planner["goal_fallback"] = (f"{planner['name']} could not read the goal ({exc}); "
                                        "the regex rules read it instead")
        else:
            read = {k: v for k, v in read.items() if k not in found}  # digits the user wrote stand
            by.update(dict.fromkeys(read, planner["name"]))
            return {**found, **read}, by
    if not found and not _INTENT.search(goal):
        raise GoalError(f"could not understand the goal {goal!r}: name what to improve and, optionally, the "
                        'budget, e.g. "raise dev execution accuracy of tiny-gemma, 8 trials, 2 at a time"')
    return found, by


def _read_goal_with_llm(goal: str, planner: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
    """The values the LLM reads from the goal (only those it states); GoalError if it says it is no goal."""
    prompt = (
        "You turn a research goal for RL post-training (GRPO) of a text-to-SQL model into settings.\n"
        "Metric: dev_accuracy_after (dev execution accuracy) or gain (accuracy gain over the base model).\n"
        "Only fill fields the goal states; set understood=false with a reason if it is not a goal about "
        "training or evaluating a text-to-SQL model.\n"
        f"Goal: {goal}")
    data = call_json(planner, prompt, goal_schema(), progress=progress, what="a reading of the goal")
    if not isinstance(data, dict):
        raise LLMError("the reply was not a JSON object")
    if not data.get("understood", False):
        raise GoalError(f"could not understand the goal: {data.get('reason') or 'no reason given'}; "
                        'say what to improve, e.g. "raise dev accuracy, 8 trials, 2 at a time"')
    return {k: data[k] for k in GOAL_KEYS if data.get(k) is not None}


def _apply(plan: Plan, values: dict[str, Any]) -> None:
    """Each value checked by its setting's declaration and set on the plan's typed sections."""
    for key, value in values.items():
        setting = SETTINGS[key]
        section = plan.constraints if setting.section == "constraints" else plan.objective
        if key == "target":
            value = _target(value, plan.sources.get("target"))
        setattr(section, key, setting.parse(value))
    c = plan.constraints
    if c.parallel > c.trials:
        plan.notes.append(f"parallel {c.parallel} > trials {c.trials}; running {c.trials} at a time")
        c.parallel = c.trials
    if c.trial_seconds is None and c.budget_minutes is not None:
        # Fair share: every slot runs trials/parallel trials within the budget.
        c.trial_seconds = fair_share_s(c)
        plan.sources["trial_seconds"] = "budget share"


def _target(value: Any, source: str | None) -> float | None:
    """The target as a fraction. The goal rules already give one; a flag, config or LLM value of 1
    or less is a fraction and above 1 a percentage. Never more than 100%."""
    if value is None:
        return None
    number = SETTINGS["target"].parse(value)
    if source != "goal" and number > 1:
        number /= 100
    if number > 1:
        raise GoalError(f"target must be at most 100% (1.0), got {value!r}")
    return number
