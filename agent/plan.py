"""The plan's settings: each declared once, here, and everything else derived from the declaration.

A setting is what a research session is asked to do (trials, parallel slots, the time budget, the
model...), as opposed to a trial's hyperparameters (`rl_core/spec.py`). Each `Setting` below says
its type, default, range or choices, help, and who may set it: the goal text (the regex rules or
an LLM reading), the `--config` file, a CLI flag. Derived from `SETTINGS`, never copied:
- the keys `plan_goal` accepts (`OVERRIDE_KEYS`) and the values it applies (`VALUE_KEYS`);
- the LLM goal-reading schema (`goal_schema()`), from the settings the goal may set;
- the range checks (`Setting.parse`), with one message style that names the setting and the fix;
- the typed `Constraints`/`Objective` the loop receives (their defaults are the declarations');
- the README's settings reference (`python -m agent.plan --reference`; a test holds them equal).

Adding a plan setting is one `Setting(...)` line here plus its use. Torch-free, like every
contract module.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field, make_dataclass
from typing import Any

METRICS = {"dev_accuracy_after": "dev execution accuracy after training",
           "gain": "dev execution accuracy gain over the base policy"}
PLANNERS = ("offline", "gemini", "openai")
LAUNCHERS = ("local", "k8s", "tinker")
PRUNERS = ("median", "none")
MAX_BUDGET_MINUTES = 30 * 24 * 60


@dataclass(frozen=True)
class LauncherLimits:
    """What trials through a launcher cannot do. A plan for that launcher is narrowed to the rest
    (agent/goal.py applies this, one plan note per change), so its trials are never refused."""

    pins: dict[str, tuple[Any, str]]  # spec path -> (the value every trial gets, why)
    lora_rank: tuple[int, str]  # (rank used where the space offers only rank 0 or pins it, why rank 0 is out)
    branching: str  # why planners may not continue or branch from finished trials
    confirm: str  # why the session's test-split confirmation is skipped


# A trial through a Tinker endpoint is rl_core/serve/client_trial.py, which refuses the rest as bad_spec.
_ON_ENDPOINT = "trials trained through a Tinker endpoint keep their weights there"
LAUNCHER_LIMITS: dict[str, LauncherLimits] = {"tinker": LauncherLimits(
    pins={"hparams.kl_beta": (0.0, "the endpoint's losses have no KL penalty to a reference policy"),
          "hparams.entropy_coef": (0.0, "the endpoint's ppo loss has no entropy bonus"),
          "hparams.sft_steps": (0, "a client trial has no supervised stage before GRPO"),
          "hparams.engine": ("hf", "the endpoint samples; vllm is a local engine")},
    lora_rank=(16, "the endpoint trains LoRA adapters only (rank 0, full fine-tuning, is not implemented)"),
    branching=f"{_ON_ENDPOINT}, so a continuation or branch could not start from its parent's weights",
    confirm=(f"{_ON_ENDPOINT}: the test-split evaluation runs on this machine and cannot load them "
             "(the dev figures come from sampling through the endpoint)"),
)}


class GoalError(ValueError):
    """The goal (or an override) cannot be understood; the message says how to phrase it."""


@dataclass(frozen=True)
class Setting:
    """One plan setting: its contract and who may set it."""

    name: str
    kind: str  # "int" | "float" | "bool" | "str" | "choice" | "object"
    default: Any
    help: str
    section: str = "constraints"  # "constraints" | "objective" | "option" (read by plan_goal itself)
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    goal: bool = False  # the goal text may state it (rules or LLM reading)
    config: bool = True  # the --config file may set it
    flag: str | None = None  # the `openrl-agent start` flag that sets it, if any

    def parse(self, value: Any) -> Any:
        """The value as this setting holds it; GoalError naming the setting and the fix otherwise."""
        if value is None:
            if self.nullable:
                return None
            raise GoalError(f"{self.name} must be set; default {self.default!r}")
        if self.kind == "int":
            return self._int(value)
        if self.kind == "float":
            return self._float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise GoalError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in (self.choices or ()):
                raise GoalError(f"{self.name} {value!r} is unknown; use {', '.join(map(str, self.choices or ()))}")
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise GoalError(f"{self.name} must be a non-empty string, got {value!r}")
            return value
        if self.kind == "object" and not isinstance(value, dict):
            raise GoalError(f"{self.name} must be a table of settings ([{self.name}] in TOML), got {value!r}")
        return value

    def _span(self) -> str:
        if self.hi is None:
            return f">= {self.lo:g}" if self.lo is not None else ""
        return f"from {self.lo:g} to {self.hi:g}"

    def _int(self, value: Any) -> int:
        message = f"{self.name} must be a whole number {self._span()}, got {value!r}"
        if isinstance(value, bool):
            raise GoalError(message)
        try:
            number = int(value)
            whole = number == float(value)
        except (TypeError, ValueError, OverflowError):
            raise GoalError(message) from None
        if not whole or (self.lo is not None and number < self.lo) or (self.hi is not None and number > self.hi):
            raise GoalError(message)
        return number

    def _float(self, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise GoalError(f"{self.name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number) or not number > (self.lo or 0):
            raise GoalError(f"{self.name} must be a positive number, got {value!r}")
        if self.hi is not None and number > self.hi:
            raise GoalError(f"{self.name} must be at most {self.hi:g}, got {value!r}")
        return number

    def describe(self) -> str:
        if self.choices:
            return " \\| ".join(map(str, self.choices))
        if self.kind == "int":
            return self._span()
        if self.kind == "float":
            return f"> 0{f', <= {self.hi:g}' if self.hi else ''}"
        return "true \\| false" if self.kind == "bool" else ""


def _s(name: str, kind: str, default: Any, help: str, **kw: Any) -> Setting:
    return Setting(name, kind, default, help, **kw)


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    # --- what to run (constraints) ---
    _s("trials", "int", 8, "trials in the session (a continuation or branch is a trial)",
       lo=1, hi=1000, goal=True, flag="--trials"),
    _s("parallel", "int", 2, "trials running at once (capped at the usable cores unless --force-parallel)",
       lo=1, hi=256, goal=True, flag="--parallel"),
    _s("budget_minutes", "float", None, "wall-clock budget of the session, confirmation included",
       nullable=True, hi=MAX_BUDGET_MINUTES, goal=True, flag="--budget-minutes"),
    _s("model", "str", "builtin:tiny-gemma", "builtin:<name>, gemma-3-270m, or a local Hugging Face model dir",
       goal=True, flag="--model"),
    _s("dataset", "str", "builtin", "builtin, an imported dataset name, or a path", goal=True, flag="--dataset"),
    _s("seed", "int", 0, "the session's seed (trial k gets seed + k)", lo=0),
    _s("eval_limit", "int", None, "dev questions per evaluation (default: the trial spec's)", lo=1, nullable=True),
    _s("eval_every_steps", "int", 0, "> 0: intermediate dev evaluations every this many steps, which the "
       "pruner reads", lo=0),
    _s("eval_subset", "int", 100, "dev questions in the fixed subset the intermediate evaluations (and so "
       "the pruner's comparisons at equal steps) use", lo=1),
    _s("trial_seconds", "float", None, "GRPO seconds per trial (default: a fair share of the budget)",
       nullable=True),
    _s("max_steps", "int", None, "pins budget.max_steps instead of searching it", lo=1, nullable=True),
    _s("solo_speed_floor", "float", 0.9, "run only as many local trials at once as each keep this share of "
       "one's speed alone (measured; --force-parallel skips it)", hi=1.0),
    _s("branching", "bool", True, "planners may continue or branch from finished trials' weights"),
    _s("screen_steps", "int", 10, "a challenger (a branch) and the incumbent it races evaluate the fixed dev "
       "subset every this many steps; it is stopped once behind by more than one paired SE", lo=1),
    _s("explore_share", "float", 0.25, "with one trial at a time: the most of the budget challengers may take "
       "from the leading line (a challenger with a supervised stage and two screens costs about 2 minutes on "
       "the built-in policy)", lo=0.0, hi=0.5),
    _s("confirm_top_k", "int", 2, "trials (best by dev) evaluated on the sealed test split at the end; "
       "0 = none", lo=0, hi=10),
    _s("confirm_seeds", "int", 0, "retrain the winner's recipe with this many fresh seeds, evaluated on test",
       lo=0, hi=10, flag="--confirm-seeds"),
    # --- what to aim for (objective) ---
    _s("metric", "choice", "dev_accuracy_after", "what the session maximises", section="objective",
       choices=tuple(METRICS), goal=True),
    _s("direction", "choice", "maximize", "the objective is maximised", section="objective",
       choices=("maximize",)),
    _s("target", "float", None, "stop early once the best trial reaches it (a fraction; above 1 a "
       "percentage)", section="objective", nullable=True, goal=True),
    # --- read by plan_goal itself (options) ---
    _s("planner", "choice", None, "who proposes trials (default: gemini when GEMINI_API_KEY is set, else "
       "offline)", section="option", choices=PLANNERS, flag="--planner"),
    _s("launcher", "choice", "local", "where trials run", section="option", choices=LAUNCHERS, flag="--launcher"),
    _s("launcher_options", "object", {}, "the launcher's settings (a [launcher] table's other keys)",
       section="option"),
    _s("pruner", "choice", "median", "stop trials whose intermediate dev accuracy trails the median",
       section="option", choices=PRUNERS),
    _s("tracking", "object", None, "experiment trackers: tensorboard, mlflow", section="option",
       flag="--track"),
    _s("gemini_model", "str", None, "the Gemini model the planner calls", section="option"),
    _s("gemini_base_url", "str", None, "a Gemini-API-compatible endpoint", section="option"),
    _s("openai_model", "str", None, "the model an OpenAI-compatible planner calls", section="option"),
    _s("openai_base_url", "str", None, "an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp)",
       section="option"),
    _s("planner_wait_s", "float", None, "how long an LLM planner may take per call", section="option"),
    _s("config", "str", None, "a TOML or JSON file of these settings and search-space tables",
       section="option", config=False, flag="--config"),
)}

OVERRIDE_KEYS = frozenset(SETTINGS)
VALUE_KEYS = tuple(n for n, s in SETTINGS.items() if s.section in ("constraints", "objective"))
GOAL_KEYS = tuple(n for n, s in SETTINGS.items() if s.goal)


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "choice": str}


def _typed(section: str, name: str) -> type:
    """A dataclass of one section's settings: types and defaults from their declarations."""
    return make_dataclass(name, [(n, _TYPES[s.kind] | None if s.nullable else _TYPES[s.kind], field(default=s.default))
                                 for n, s in SETTINGS.items() if s.section == section])


Constraints = _typed("constraints", "Constraints")
Objective = _typed("objective", "Objective")


@dataclass
class Plan:
    """A validated plan, as `plan_goal` builds it and a session keeps it (`session.json`)."""

    goal: str
    objective: Any = field(default_factory=Objective)
    constraints: Any = field(default_factory=Constraints)
    planner: dict[str, Any] = field(default_factory=lambda: {"name": "offline"})
    launcher: dict[str, Any] = field(default_factory=lambda: {"name": "local"})
    search_space: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    tracking: dict[str, Any] = field(default_factory=dict)  # {"backends": [...], "tensorboard_dir", "mlflow_uri"}
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    id: str = ""  # the session's id once one exists

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.id:
            data.pop("id")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """The plan of a `to_json` dict or a session.json (its other keys, such as status, are ignored).
        A setting missing from an older session takes its declared default."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["objective"] = _section(Objective, data.get("objective") or {})
        known["constraints"] = _section(Constraints, data.get("constraints") or {})
        known.setdefault("launcher", {"name": "local"})
        return cls(**known)


def fair_share_s(c: Any) -> float:
    """GRPO seconds per trial when the budget is shared fairly: every slot runs trials/parallel trials."""
    return max(30.0, c.budget_minutes * 60 * c.parallel / c.trials)


def as_plan(plan: Plan | dict[str, Any]) -> Plan:
    """A Plan from a Plan or a session.json dict (the public API takes either)."""
    return plan if isinstance(plan, Plan) else Plan.from_json(plan)


def _section(kind: type, values: dict[str, Any]) -> Any:
    names = kind.__dataclass_fields__
    return kind(**{k: v for k, v in values.items() if k in names})


def reference_markdown() -> str:
    """The README's settings reference (a test holds the README to it)."""
    rows = ["| setting | type | default | allowed | goal text | flag | what |", "|---|---|---|---|---|---|---|"]
    for s in SETTINGS.values():
        rows.append(f"| `{s.name}` | {s.kind} | `{json.dumps(s.default)}` | {s.describe()} | {'yes' if s.goal else 'no'} "
                    f"| {f'`{s.flag}`' if s.flag else ''} | {s.help} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m agent.plan --reference
    if sys.argv[1:] == ["--reference"]:
        print(reference_markdown())
    else:
        print("usage: python -m agent.plan --reference   (prints the README's settings reference)")
