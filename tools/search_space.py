"""The search space: Optuna distributions for GRPO hyperparameters and the reward, and the mapping
from one point of it to a trial spec (docs/contracts.md).

Parameter names and where they land in the spec:
- a `rl_core.spec.HParams` field name (``learning_rate``, ``lora_rank``, ...) -> ``hparams.<name>``
- ``max_steps`` -> ``budget.max_steps``
- ``reward_<component>`` -> ``reward.components.<component>`` (0 drops the component; the binary
  ``execution_match`` component is always on with weight 1, it anchors the scale)

Defaults suit the built-in tiny policy; they start from the stable corner measured in
../shared/notes/grpo-calibration.md (lr 2e-4 as measured on the built-in benchmark, T=0.7, full fine-tuning, no KL, binary reward).
A TOML file overrides them:

    [params.learning_rate]        # replace one parameter's range
    low = 1e-5
    high = 3e-4
    log = true
    default = 1e-4
    [params.lora_rank]
    choices = [0, 16]             # categorical
    [params.kl_beta]
    fixed = 0.0                   # pin: leaves the search, every spec gets the value
    [fixed]                       # any spec value (dotted path), not searched
    "hparams.max_new_tokens" = 64
    "eval.limit" = 200

Precedence when a spec is built: searched params > session constraints (model, dataset, eval
limit, per-trial seconds) > ``[fixed]`` > TrialSpec defaults.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna.distributions as od

HPARAM_NAMES = frozenset({
    "learning_rate", "warmup_steps", "schedule", "lora_rank", "lora_alpha", "lora_dropout", "kl_beta",
    "group_size", "prompts_per_step", "clip_eps_low", "clip_eps_high", "ppo_epochs", "temperature",
    "top_p", "max_new_tokens", "loss_type", "scale_rewards", "dynamic_sampling", "grad_clip",
    "weight_decay", "grad_accum", "sft_steps", "sampling_rounds", "sft_learning_rate",
})
REWARD_COMPONENTS = frozenset({"execution_match", "partial_credit", "executes", "format",
                               "length_penalty", "schema_link"})


class SearchSpaceError(ValueError):
    """A search-space file or parameter the user wrote is invalid; the message says the fix."""


@dataclass
class Param:
    name: str
    kind: str  # "float" | "int" | "categorical"
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: list[Any] | None = None

    def __post_init__(self) -> None:
        _check_target(self.name)
        if self.kind == "categorical":
            if not self.choices:
                raise SearchSpaceError(f"params.{self.name}: a categorical needs a non-empty `choices` list")
            if self.default not in self.choices:
                self.default = self.choices[0]
            return
        if self.kind not in ("float", "int"):
            raise SearchSpaceError(f"params.{self.name}: kind must be float, int or categorical")
        if self.low is None or self.high is None or self.low > self.high:
            raise SearchSpaceError(f"params.{self.name}: needs low <= high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"params.{self.name}: a log-scale range needs low > 0 (use log = false for 0)")
        if self.default is None or not self.low <= self.default <= self.high:
            self.default = self.low if self.default is None else min(max(self.default, self.low), self.high)

    def distribution(self) -> od.BaseDistribution:
        if self.kind == "categorical":
            return od.CategoricalDistribution(self.choices)
        if self.kind == "int":
            return od.IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return od.FloatDistribution(self.low, self.high, log=self.log)

    def clamp(self, value: Any) -> tuple[Any, str | None]:
        """A legal value for `value` and why it changed (None if it did not). Raises when unusable."""
        if self.kind == "categorical":
            if value in self.choices:
                return value, None
            numeric = [c for c in self.choices if isinstance(c, int | float) and not isinstance(c, bool)]
            if numeric and isinstance(value, int | float) and not isinstance(value, bool):
                near = min(numeric, key=lambda c: abs(c - value))
                return near, f"{self.name}={value!r} is not a choice {self.choices}; used nearest {near!r}"
            raise SearchSpaceError(f"{self.name}={value!r} is not one of {self.choices}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SearchSpaceError(f"{self.name}={value!r} is not a number")
        clamped = min(max(value, self.low), self.high)
        if self.kind == "int":
            step = self.step or 1
            clamped = int(round((clamped - self.low) / step) * step + self.low)
        if clamped != value:
            return clamped, f"{self.name}={value!r} is outside [{self.low}, {self.high}]; clamped to {clamped!r}"
        return clamped, None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}


def _check_target(name: str) -> None:
    if name in HPARAM_NAMES or name == "max_steps":
        return
    if name.startswith("reward_") and name[len("reward_"):] in REWARD_COMPONENTS:
        return
    raise SearchSpaceError(
        f"unknown parameter {name!r}: use a trial hparam ({', '.join(sorted(HPARAM_NAMES))}), "
        f"max_steps, or reward_<component> with a component in {sorted(REWARD_COMPONENTS)}")


def default_params() -> dict[str, Param]:
    specs = [
        Param("learning_rate", "float", 2e-4, low=1e-5, high=1e-3, log=True),
        Param("lora_rank", "categorical", 0, choices=[0, 8, 16, 32]),  # 0 = full fine-tuning
        Param("kl_beta", "categorical", 0.0, choices=[0.0, 0.001, 0.01, 0.04]),
        Param("group_size", "categorical", 8, choices=[4, 8, 16]),
        Param("prompts_per_step", "categorical", 16, choices=[4, 8, 16]),
        Param("clip_eps_low", "float", 0.2, low=0.1, high=0.3),
        Param("clip_eps_high", "float", 0.28, low=0.2, high=0.4),
        Param("temperature", "float", 0.7, low=0.5, high=1.1),
        Param("loss_type", "categorical", "dapo", choices=["grpo", "dr_grpo", "dapo"]),
        Param("max_steps", "int", 60, low=20, high=120, step=10),
        Param("reward_executes", "float", 0.0, low=0.0, high=0.3),
        Param("reward_partial_credit", "categorical", 0.0, choices=[0.0, 0.1, 0.3]),  # 0 = off
        Param("reward_format", "float", 0.0, low=0.0, high=0.2),
        Param("reward_length_penalty", "float", 0.0, low=0.0, high=0.1),
    ]
    return {p.name: p for p in specs}


def pretrained_params() -> dict[str, Param]:
    """The defaults changed for a pretrained checkpoint (gemma-3-270m, a GGUF, a local HF directory)
    instead of the tiny built-in policy, from docs/gemma.md's runs: LoRA, never full fine-tuning
    (268M parameters and a 262k vocabulary on CPU); lr 5e-5 (2e-4 made the drift KL spike); small
    batches (a 270M step on 2 cores is 15-35 s at 2 prompts x 4 completions)."""
    params = default_params()
    params.update({p.name: p for p in [
        Param("learning_rate", "float", 5e-5, low=1e-5, high=2e-4, log=True),
        Param("lora_rank", "categorical", 16, choices=[8, 16, 32]),
        Param("group_size", "categorical", 4, choices=[4, 8]),
        Param("prompts_per_step", "categorical", 2, choices=[2, 4, 8]),
        Param("max_steps", "int", 20, low=10, high=60, step=10),
    ]})
    return params


# Fixed for a pretrained checkpoint: a base model first needs the answer format, which 30
# supervised steps on gold SQL gave gemma-3-270m (0% -> 45% dev, docs/gemma.md); 48 new tokens
# cover the built-in gold SQL; 2 warmup steps (runs are 10-60 steps, not hundreds); greedy
# evaluation of 60 dev questions takes ~2 minutes on 2 cores (a session's eval limit overrides it).
PRETRAINED_FIXED = {"hparams.sft_steps": 30, "hparams.sft_learning_rate": 2e-4, "hparams.sft_batch_size": 8,
                    "hparams.max_new_tokens": 48, "hparams.warmup_steps": 2, "eval.limit": 60}


def is_pretrained(model: str) -> bool:
    """Whether `model` names a pretrained checkpoint: anything the policy loader does not build
    itself (its built-ins are exactly the `builtin:` names, rl_core.policy.BUILTIN_PREFIX)."""
    return not model.startswith("builtin:")


def _sci(x: float) -> str:
    """5e-5, not 5e-05."""
    return f"{x:.0e}".replace("e-0", "e-")


def pretrained_note(model: str) -> str:
    """What the pretrained preset changes, in the plan's words, read off the preset itself."""
    p, f = pretrained_params(), PRETRAINED_FIXED
    rank, lr = p["lora_rank"], p["learning_rate"]
    return (f"{model} is a pretrained checkpoint: LoRA (rank {'/'.join(map(str, rank.choices))}, {rank.default} "
            f"first), lr {_sci(lr.low)}..{_sci(lr.high)} starting at {_sci(lr.default)}, {p['prompts_per_step'].default} "
            f"prompts x {p['group_size'].default} completions, {f['hparams.sft_steps']} supervised steps on gold "
            f"SQL before GRPO, {f['eval.limit']} dev questions per evaluation (docs/gemma.md); a config's "
            "params and fixed sections override this")


@dataclass
class SearchSpace:
    params: dict[str, Param] = field(default_factory=default_params)
    fixed: dict[str, Any] = field(default_factory=dict)  # dotted spec path -> value

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: str) -> SearchSpace:
        """The default space for `model`: the calibrated tiny-policy recipe for built-ins, the
        pretrained preset (`pretrained_params`, `PRETRAINED_FIXED`) for anything else."""
        if not is_pretrained(model):
            return cls()
        return cls(params=pretrained_params(), fixed=dict(PRETRAINED_FIXED))

    @classmethod
    def load(cls, path: str | Path | None = None) -> SearchSpace:
        """Defaults, overridden by a TOML file when one is given."""
        space = cls()
        if path is None:
            return space
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise SearchSpaceError(f"search-space file {path} not found; check the --config path") from None
        except tomllib.TOMLDecodeError as exc:
            raise SearchSpaceError(f"{path} is not valid TOML: {exc}") from None
        space.apply_overrides(data)
        return space

    def apply_overrides(self, data: dict[str, Any]) -> None:
        unknown = set(data) - {"params", "fixed"}
        if unknown:
            raise SearchSpaceError(f"unknown section [{sorted(unknown)[0]}]; use [params.<name>] or [fixed]")
        for name, body in data.get("params", {}).items():
            if not isinstance(body, dict):
                raise SearchSpaceError(f"params.{name} must be a table, e.g. [params.{name}] low = ... high = ...")
            if "fixed" in body:
                _check_target(name)
                self.params.pop(name, None)
                self.fixed[_spec_path(name)] = body["fixed"]
                continue
            self.params[name] = _param_from_table(name, body, self.params.get(name))
        for path, value in data.get("fixed", {}).items():
            self.fixed.update(_flatten(path, value))

    def to_json(self) -> dict[str, Any]:
        return {"params": {n: p.describe() for n, p in self.params.items()}, "fixed": dict(self.fixed)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchSpace:
        params = {n: Param(**{"default": None, **body, "name": n}) for n, body in data.get("params", {}).items()}
        return cls(params=params, fixed=dict(data.get("fixed", {})))

    # --- use ---------------------------------------------------------------------------------
    def distributions(self) -> dict[str, od.BaseDistribution]:
        return {n: p.distribution() for n, p in self.params.items()}

    def defaults(self) -> dict[str, Any]:
        return {n: p.default for n, p in self.params.items()}

    def validate(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Clamp a proposal into the space. Unknown or unusable values are dropped (Optuna fills
        them); every change comes back as a sentence the planner can read."""
        clean, notes = {}, []
        for name, value in params.items():
            param = self.params.get(name)
            if param is None:
                notes.append(f"{name} is not a searchable parameter; rejected "
                             f"(searchable: {', '.join(sorted(self.params))})")
                continue
            try:
                clean[name], note = param.clamp(value)
            except SearchSpaceError as exc:
                notes.append(f"{exc}; rejected")
                continue
            if note:
                notes.append(note)
        return clean, notes

    def build_spec(self, params: dict[str, Any], *, base: dict[str, Any]) -> dict[str, Any]:
        """A trial spec: TrialSpec defaults < `fixed` < `base` (session values) < params."""
        spec: dict[str, Any] = {"hparams": {}, "reward": {"components": {"execution_match": 1.0}, "params": {}},
                                "budget": {}, "eval": {}}
        for path, value in self.fixed.items():
            _set_path(spec, path, value)
        for path, value in base.items():
            _set_path(spec, path, value)
        for name, value in params.items():
            _set_path(spec, _spec_path(name), value)
        components = spec["reward"]["components"]
        spec["reward"]["components"] = {k: v for k, v in components.items() if v != 0}
        return spec


def _spec_path(name: str) -> str:
    if name == "max_steps":
        return "budget.max_steps"
    if name.startswith("reward_"):
        return "reward.components." + name[len("reward_"):]
    return "hparams." + name


def _param_from_table(name: str, body: dict[str, Any], old: Param | None) -> Param:
    allowed = {"kind", "low", "high", "log", "step", "choices", "default"}
    unknown = set(body) - allowed - {"fixed"}
    if unknown:
        raise SearchSpaceError(f"params.{name}: unknown key {sorted(unknown)[0]!r}; use {sorted(allowed)} or fixed")
    kind = body.get("kind") or ("categorical" if "choices" in body else None)
    if kind is None:
        numbers = [body.get("low"), body.get("high")]
        kind = old.kind if old and old.kind != "categorical" else (
            "int" if all(isinstance(v, int) for v in numbers if v is not None) else "float")
    base = asdict(old) if old is not None and old.kind == kind else {"name": name, "kind": kind, "default": None}
    base.update({k: v for k, v in body.items() if k != "kind"}, name=name, kind=kind)
    if kind == "categorical":
        base.update(low=None, high=None, log=False, step=None)
    return Param(**base)


def _flatten(path: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and not path.endswith(("components", "params")):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{path}.{k}", v))
        return out
    return {path: value}


def _set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = copy.deepcopy(value)
