"""The search space: Optuna distributions for GRPO hyperparameters and the reward, and the mapping
from one point of it to a validated trial spec (docs/contracts.md).

Everything here is derived from the spec's owner, `rl_core.spec`: which fields may be searched,
their default ranges (a field's `search`), the values each accepts, and the pretrained preset.
Parameter names and where they land in the spec:
- a searchable `hparams` field (``learning_rate``, ``lora_rank``, ...) -> ``hparams.<name>``
- ``max_steps`` -> ``budget.max_steps``
- ``reward_<component>`` -> ``reward.components.<component>`` (0 drops the component; the binary
  ``execution_match`` component is always on with weight 1, it anchors the scale)

A TOML file overrides the defaults:

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

Every range, choice and fixed value is checked against the spec when the file is read, so a typo or
an impossible value fails before a session exists. Precedence when a spec is built: searched params >
session constraints (model, dataset, eval limit, per-trial seconds) > ``[fixed]`` > spec defaults.
"""

from __future__ import annotations

import copy
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna.distributions as od

from rl_core import spec as contract
from rl_core.presets import PRESETS, preset_for
from rl_core.spec import FIELDS, REWARD_SEARCH, Search, SpecError, TrialSpec

HPARAM_NAMES = frozenset(n for n, f in contract.searchable_fields().items() if f.path.startswith("hparams."))
REWARD_COMPONENTS = frozenset({"execution_match", *REWARD_SEARCH})


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
            if not isinstance(self.choices, list | tuple) or not self.choices:
                raise SearchSpaceError(f"params.{self.name}: a categorical needs a non-empty `choices` list")
            self.choices = list(self.choices)
            for choice in self.choices:
                _check_value(self.name, choice, "choice")
            if self.default not in self.choices:
                self.default = self.choices[0]
            return
        if self.kind not in ("float", "int"):
            raise SearchSpaceError(f"params.{self.name}: kind must be float, int or categorical")
        for key in ("low", "high") + (("default",) if self.default is not None else ()):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise SearchSpaceError(f"params.{self.name}: {key} must be a number, got {value!r}")
        if self.kind == "int" and not all(float(v).is_integer() for v in (self.low, self.high)):
            raise SearchSpaceError(f"params.{self.name}: an integer range needs whole low/high, "
                                   f"got {self.low!r}..{self.high!r}")
        for key in ("low", "high"):
            _check_value(self.name, getattr(self, key), key)
        if self.low > self.high:
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
    if name in contract.searchable_fields():
        return
    if name.startswith("reward_") and name[len("reward_"):] in REWARD_COMPONENTS:
        return
    hint = ""
    if name in {f.name for f in FIELDS.values()}:
        hint = f" ({name} is a spec field the search does not vary; pin it under [fixed] instead)"
    raise SearchSpaceError(
        f"unknown parameter {name!r}{hint}: use a searchable field ({', '.join(sorted(contract.searchable_fields()))}) "
        f"or reward_<component> with a component in {sorted(REWARD_COMPONENTS)}")


def _check_value(name: str, value: Any, what: str) -> None:
    """A range end or choice the spec would refuse fails now, naming the parameter and the rule."""
    if name.startswith("reward_"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SearchSpaceError(f"params.{name}: {what} must be a number (a reward weight), got {value!r}")
        return
    try:
        FIELDS[_spec_path(name)].check(value)
    except SpecError as exc:
        raise SearchSpaceError(f"params.{name}: {what} {value!r} is not allowed ({exc})") from None


def _param(name: str, search: Search, default: Any) -> Param:
    default = search.start if search.start is not None else default
    if search.choices is not None:
        return Param(name, "categorical", default, choices=list(search.choices))
    kind = "int" if FIELDS.get(_spec_path(name)) is not None and FIELDS[_spec_path(name)].kind == "int" else "float"
    return Param(name, kind, default, low=search.low, high=search.high, log=search.log, step=search.step)


def default_params() -> dict[str, Param]:
    """The default space, read off the spec: every field with a `search` range, plus reward weights."""
    params = {f.name: _param(f.name, f.search, f.default) for f in FIELDS.values() if f.search is not None}
    for component, search in REWARD_SEARCH.items():
        if search is not None:
            params[f"reward_{component}"] = _param(f"reward_{component}", search, 0.0)
    return params


def pretrained_params() -> dict[str, Param]:
    """The default space changed by the spec's pretrained preset (rl_core.presets.PRESETS)."""
    params = default_params()
    for name, search in PRESETS["pretrained"].search.items():
        params[name] = _param(name, search, None)
    return params


PRETRAINED_FIXED = dict(PRESETS["pretrained"].fixed)


def is_pretrained(model: str) -> bool:
    """Whether `model` names a pretrained checkpoint (the spec's preset rule)."""
    return preset_for(model) == "pretrained"


def _sci(x: float) -> str:
    """5e-5, not 5e-05."""
    return f"{x:.0e}".replace("e-0", "e-")


def pretrained_note(model: str) -> str:
    """What the pretrained preset changes, in the plan's words, read off the preset itself."""
    p, f = pretrained_params(), PRETRAINED_FIXED
    rank, lr = p["lora_rank"], p["learning_rate"]
    return (f"{model} is a pretrained checkpoint: LoRA (rank {'/'.join(map(str, rank.choices))}, {rank.default} "
            f"first), lr {_sci(lr.low)}..{_sci(lr.high)} starting at {_sci(lr.default)}, {p['prompts_per_step'].default} "
            f"prompts x {p['group_size'].default} completions at T {p['temperature'].default:g}, KL "
            f"{p['kl_beta'].default:g}, {f['hparams.sft_steps']} supervised steps on gold SQL before GRPO, "
            f"{p['max_steps'].default} GRPO steps, {f['eval.limit']} dev questions per evaluation (docs/gemma.md); "
            "a config's params and fixed sections override this")


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
        """Apply [params.<name>] and [fixed] sections; every value is checked against the spec."""
        if not isinstance(data, dict):
            raise SearchSpaceError("a search-space config must be a table with [params.<name>] and/or [fixed]")
        unknown = set(data) - {"params", "fixed"}
        if unknown:
            raise SearchSpaceError(f"unknown section [{sorted(unknown)[0]}]; use [params.<name>] or [fixed]")
        params, fixed = data.get("params", {}), data.get("fixed", {})
        if not isinstance(params, dict):
            raise SearchSpaceError(f"params must be tables, e.g. [params.learning_rate] low = 1e-5, got {params!r}")
        if not isinstance(fixed, dict):
            raise SearchSpaceError(f'fixed must be a table, e.g. [fixed] "hparams.max_new_tokens" = 64, got {fixed!r}')
        for name, body in params.items():
            if not isinstance(body, dict):
                raise SearchSpaceError(f"params.{name} must be a table, e.g. [params.{name}] low = ... high = ...")
            if "fixed" in body:
                _check_target(name)
                if set(body) != {"fixed"}:
                    raise SearchSpaceError(f"params.{name}: `fixed` pins the value; remove the other keys "
                                           f"({', '.join(sorted(set(body) - {'fixed'}))})")
                self.params.pop(name, None)
                self.fix(_spec_path(name), body["fixed"])
                continue
            self.params[name] = _param_from_table(name, body, self.params.get(name))
        for path, value in fixed.items():
            for flat, v in _flatten(path, value).items():
                self.fix(flat, v)

    def fix(self, path: str, value: Any) -> None:
        """Pin a spec value (dotted path), checked against the spec's owner now."""
        check_fixed(path, value)
        self.fixed[path] = value
        for name in [n for n in self.params if _spec_path(n) == path]:
            del self.params[name]  # a pinned field is no longer searched

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

    def build_spec(self, params: dict[str, Any], *, base: dict[str, Any]) -> TrialSpec:
        """A validated trial spec: spec defaults < `fixed` < `base` (session values, dotted paths) <
        params. Raises SpecError (naming the field and the fix) when the result is not a valid spec."""
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
        return TrialSpec.from_json(spec)

    def check(self, base: dict[str, Any]) -> None:
        """Fail now, not at launch: the spec at the defaults and at every range end and choice of
        every parameter must validate. Raises SearchSpaceError naming the parameter."""
        defaults = self.defaults()
        try:
            self.build_spec(defaults, base=base)
        except SpecError as exc:
            raise SearchSpaceError(f"the default trial of this search space is not a valid spec: {exc}") from None
        for name, param in self.params.items():
            values = param.choices if param.kind == "categorical" else [param.low, param.high]
            for value in values:
                try:
                    self.build_spec({**defaults, name: value}, base=base)
                except SpecError as exc:
                    raise SearchSpaceError(f"params.{name} = {value!r} would make an invalid trial: {exc}") from None


def check_fixed(path: str, value: Any) -> None:
    """A [fixed] path must name a spec field (or a reward component / reward param) and hold a value
    the field accepts."""
    parts = path.split(".")
    if path.startswith("reward.components."):
        component = path[len("reward.components."):]
        if component not in REWARD_COMPONENTS:
            raise SearchSpaceError(f"fixed.{path}: unknown reward component {component!r}; "
                                   f"known: {', '.join(sorted(REWARD_COMPONENTS))}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SearchSpaceError(f"fixed.{path} must be a number (a reward weight), got {value!r}")
        return
    if path.startswith("reward.params.") and len(parts) == 3:
        return  # sql_env owns reward params: checked with the whole reward at plan time
    if path in ("trial_id", "session"):
        raise SearchSpaceError(f"fixed.{path} is set by the session for each trial; remove it")
    try:
        contract.info_of(path).check(value)
    except SpecError as exc:
        raise SearchSpaceError(f"fixed: {exc}") from None


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
