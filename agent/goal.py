"""From a free-text goal to a Plan: objective (metric, direction, target) and constraints.

Without an LLM planner the goal is read by the regex rules below; every value not found in the
goal takes its documented default, and CLI overrides win over both. `Plan.sources` records where
each value came from, so the plan shown to the user says what was read and what was assumed.

Rules (case-insensitive; the first match wins):
- trials:   "12 trials" / "12 experiments" / "12 runs"                      default 8
- parallel: "2 at a time" / "2 in parallel" / "2 concurrent" / "2 slots"     default 2 (<= trials)
- budget:   "in 30 minutes" / "within 2 hours" / "budget of 45 min"          default none
- target:   "to 60%" / "above 0.6" / "reach 70 percent" (absolute accuracy);
            "by 10 points" / "+5 points" switches the metric to gain over the base policy
- metric:   "accuracy" (dev execution accuracy, the default) or "gain"/"improve by"
- model:    "builtin:NAME", "tiny-gemma", "micro-gemma", "gemma-3-270m", or "model <path>"
- dataset:  "spider", "bird", "builtin"/"built-in", or "dataset <path>"
A goal in which none of these (nor a verb such as raise/improve/maximise) can be found is refused
with GoalError; so is a goal asking to lower accuracy.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

METRICS = {"dev_accuracy_after": "dev execution accuracy after training",
           "gain": "dev execution accuracy gain over the base policy"}
DEFAULT_TRIALS = 8
DEFAULT_PARALLEL = 2
DEFAULT_MODEL = "builtin:tiny-gemma"
DEFAULT_DATASET = "builtin"
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


class GoalError(ValueError):
    """The goal (or an override) cannot be understood; the message says how to phrase it."""


@dataclass
class Objective:
    metric: str = "dev_accuracy_after"
    direction: str = "maximize"
    target: float | None = None  # stop early once the best trial reaches it


@dataclass
class Constraints:
    trials: int = DEFAULT_TRIALS
    parallel: int = DEFAULT_PARALLEL
    budget_minutes: float | None = None
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    seed: int = 0
    eval_limit: int | None = None  # None: the trial spec's default
    eval_every_steps: int = 0  # >0: intermediate dev evals, which the pruner reads
    trial_seconds: float | None = None  # per-trial wall limit; None: fair share of the budget
    max_steps: int | None = None  # pins budget.max_steps instead of searching it


@dataclass
class Plan:
    goal: str
    objective: Objective = field(default_factory=Objective)
    constraints: Constraints = field(default_factory=Constraints)
    planner: dict[str, Any] = field(default_factory=lambda: {"name": "offline"})
    launcher: dict[str, Any] = field(default_factory=lambda: {"name": "local"})
    search_space: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"  # "median" | "none"
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        data = dict(data)
        data["objective"] = Objective(**data.get("objective", {}))
        data["constraints"] = Constraints(**data.get("constraints", {}))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --- regex rules ------------------------------------------------------------------------------
_NUM = r"(\d+(?:\.\d+)?)"
_RULES: dict[str, list[str]] = {
    "trials": [rf"\b{_NUM}\s*(?:trials?|experiments?|runs?|configs?|configurations?)\b"],
    "parallel": [rf"\b{_NUM}\s*(?:at a time|in parallel|concurrent(?:ly)?|parallel|slots?|workers?)\b",
                 rf"\bparallel(?:ism)?\s*(?:of\s*)?{_NUM}\b"],
    "budget": [rf"\b(?:in|within|under|budget(?: of)?|for|max(?:imum)?)\s*{_NUM}\s*(minutes?|mins?|m|hours?|hrs?|h)\b"],
    "gain": [rf"\bby\s*\+?{_NUM}\s*(?:points?|pts|pp|%)", rf"\+{_NUM}\s*(?:points?|pts|pp)\b"],
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
    """Values the regex rules find in the goal (only those found)."""
    found: dict[str, Any] = {}
    if m := _first(_RULES["trials"], goal):
        found["trials"] = int(float(m.group(1)))
    if m := _first(_RULES["parallel"], goal):
        found["parallel"] = int(float(m.group(1)))
    if m := _first(_RULES["budget"], goal):
        value, unit = float(m.group(1)), m.group(2).lower()
        found["budget_minutes"] = value * 60 if unit.startswith("h") else value
    if m := _first(_RULES["gain"], goal):
        found["metric"], found["target"] = "gain", float(m.group(1)) / 100
    elif m := _first(_RULES["target"], goal):
        value = float(m.group(1))
        found["target"] = value / 100 if (m.lastindex or 0) >= 2 and m.group(2) else value
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


# --- plan assembly ----------------------------------------------------------------------------
_OVERRIDES = {"trials", "parallel", "budget_minutes", "model", "dataset", "seed", "eval_limit",
              "eval_every_steps", "trial_seconds", "max_steps", "metric", "direction", "target",
              "planner", "launcher", "launcher_options", "config", "pruner", "gemini_model", "gemini_base_url"}


def api_key() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")


def plan_goal(goal: str, overrides: dict[str, Any] | None = None) -> Any:
    """Parse a goal into a Plan (see the module docstring). Precedence: overrides (CLI flags) >
    the `config` file > the goal text > defaults.

    `config` names a TOML or JSON file holding any override key (trials = 12, launcher = "k8s" or
    a [launcher] table with its options, ...) and/or search-space sections ([params.<name>],
    [fixed]; see tools/search_space.py). Raises GoalError for anything that cannot be understood."""
    from tools.search_space import SearchSpace, SearchSpaceError, is_pretrained, pretrained_note

    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_options, space_sections = _read_config(cli["config"]) if cli.get("config") else ({}, {})
    overrides = {**file_options, **cli}
    unknown = set(overrides) - _OVERRIDES
    if unknown:
        raise GoalError(f"unknown setting {sorted(unknown)[0]!r}; known: {', '.join(sorted(_OVERRIDES))}")
    goal = (goal or "").strip()
    if not goal:
        raise GoalError('the goal is empty; say what to improve, e.g. "raise dev accuracy, 8 trials, 2 at a time"')
    planner = _planner_config(overrides)
    plan = Plan(goal=goal, planner=planner,
                launcher={"name": overrides.get("launcher", "local"), **overrides.get("launcher_options", {})})
    if plan.launcher["name"] not in ("local", "k8s"):
        raise GoalError(f"launcher {plan.launcher['name']!r} is unknown; use local or k8s")

    found, source = _read_goal(goal, planner)
    values = {**found, **{k: v for k, v in overrides.items() if k in _VALUE_KEYS}}
    for key in _VALUE_KEYS:
        origin = "override" if key in cli else ("config" if key in file_options else None)
        plan.sources[key] = origin or (source if key in found else "default")
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
    plan.search_space = space.to_json()
    plan.pruner = overrides.get("pruner", "median")
    if plan.pruner not in ("median", "none"):
        raise GoalError(f"pruner {plan.pruner!r} is unknown; use median or none")
    return plan


def _read_config(path: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(option keys, search-space sections) of a TOML or JSON config file."""
    import json
    import tomllib
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except OSError:
        raise GoalError(f"config file {path} not found; check the --config path") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise GoalError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise GoalError(f"{path} must hold a table/object of settings")
    space = {k: data.pop(k) for k in ("params", "fixed") if k in data}
    data.pop("config", None)
    if isinstance(data.get("launcher"), dict):  # [launcher] name = "k8s", namespace = ...
        table = dict(data.pop("launcher"))
        data["launcher"] = table.pop("name", "local")
        data["launcher_options"] = {**table, **data.get("launcher_options", {})}
    return data, space


_VALUE_KEYS = ("trials", "parallel", "budget_minutes", "model", "dataset", "seed", "eval_limit",
               "eval_every_steps", "trial_seconds", "max_steps", "metric", "direction", "target")


def _planner_config(overrides: dict[str, Any]) -> dict[str, Any]:
    name = overrides.get("planner") or ("gemini" if api_key() else "offline")
    if name not in ("gemini", "offline"):
        raise GoalError(f"planner {name!r} is unknown; use gemini or offline")
    if name == "gemini" and not api_key():
        raise GoalError("the gemini planner needs an API key: export GEMINI_API_KEY=... (or use --planner offline)")
    config: dict[str, Any] = {"name": name}
    if name == "gemini":
        config.update(model=overrides.get("gemini_model", DEFAULT_GEMINI_MODEL),
                      base_url=overrides.get("gemini_base_url") or os.environ.get("OPENRL_AGENT_GEMINI_BASE_URL"))
    return config


def _read_goal(goal: str, planner: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Values found in the goal, and who found them ("gemini" or "goal" for the regex rules)."""
    if planner["name"] == "gemini":
        from agent.planners.gemini import GeminiError, parse_goal_with_gemini

        try:
            return parse_goal_with_gemini(goal, planner), "gemini"
        except GeminiError as exc:
            planner["goal_fallback"] = f"Gemini could not parse the goal ({exc}); used the regex rules"
    found = parse_goal_rules(goal)
    if _LOWER.search(goal):
        raise GoalError("the agent raises accuracy; it cannot aim to lower it. Rephrase the goal, "
                        'e.g. "raise dev accuracy"')
    if not found and not _INTENT.search(goal):
        raise GoalError(f"could not understand the goal {goal!r}: name what to improve and, optionally, the "
                        'budget, e.g. "raise dev execution accuracy of tiny-gemma, 8 trials, 2 at a time"')
    return found, "goal"


def _apply(plan: Plan, values: dict[str, Any]) -> None:
    c, o = plan.constraints, plan.objective
    for key in ("trials", "parallel", "seed", "eval_every_steps"):
        if key in values:
            setattr(c, key, _int(key, values[key], low=0 if key in ("seed", "eval_every_steps") else 1))
    for key in ("eval_limit", "max_steps"):
        if key in values:
            setattr(c, key, _int(key, values[key], low=1))
    for key in ("budget_minutes", "trial_seconds"):
        if key in values:
            setattr(c, key, _positive(key, values[key]))
    for key in ("model", "dataset"):
        if key in values:
            setattr(c, key, str(values[key]))
    o.metric = values.get("metric", o.metric)
    if o.metric not in METRICS:
        raise GoalError(f"metric {o.metric!r} is unknown; use one of {', '.join(METRICS)}")
    o.direction = values.get("direction", o.direction)
    if o.direction != "maximize":
        raise GoalError("the objective can only be maximised (accuracy or gain); drop the direction setting")
    if values.get("target") is not None:
        target = float(values["target"])
        o.target = target / 100 if target > 1 else target  # "60" means 60%
    if c.parallel > c.trials:
        plan.notes.append(f"parallel {c.parallel} > trials {c.trials}; running {c.trials} at a time")
        c.parallel = c.trials
    if c.trial_seconds is None and c.budget_minutes is not None:
        # Fair share: every slot runs trials/parallel trials within the budget.
        c.trial_seconds = max(30.0, c.budget_minutes * 60 * c.parallel / c.trials)
        plan.sources["trial_seconds"] = "budget share"


def _int(name: str, value: Any, low: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise GoalError(f"{name} must be a whole number, got {value!r}") from None
    if number < low or number != float(value):
        raise GoalError(f"{name} must be a whole number >= {low}, got {value!r}")
    return number


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GoalError(f"{name} must be a number, got {value!r}") from None
    if number <= 0:
        raise GoalError(f"{name} must be positive, got {value!r}")
    return number
