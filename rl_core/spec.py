"""The trial spec: one JSON document fully describes a trial (see docs/contracts.md).

Torch-free on purpose: the agent, the CLI and the cluster launchers import this module to
validate specs without paying for (or having) torch. One dataclass per component, each
validated in `__post_init__`; every message names the field and says the fix.

Keys starting with "_" (e.g. "_comment") are documentation and are ignored, so example specs
can explain themselves in plain JSON; every other unknown key is an error.

Defaults are the stable corner measured in ../shared/notes/grpo-calibration.md (third round):
rollouts at T=0.7, binary execution reward, no std scaling, lr 2e-4 (measured on the built-in
benchmark; the calibration used 1e-4) with 10 warmup steps, 16 prompts x 8 per step,
full fine-tuning of the tiny policy, dynamic sampling, 2 PPO epochs, clip 0.2/0.28.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCHEDULES = ("constant", "cosine")
ENGINES = ("hf", "vllm")


class SpecError(ValueError):
    """A spec a user wrote is invalid; the message says which field and how to fix it."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SpecError(message)


def _number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
            integer: bool = False, lo_open: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    is_num = isinstance(value, int) if integer else isinstance(value, int | float)
    _check(is_num and not isinstance(value, bool), f"{name} must be {kind}, got {value!r}")
    if lo is not None:
        ok = value > lo if lo_open else value >= lo
        _check(ok, f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None:
        _check(value <= hi, f"{name} must be <= {hi}, got {value!r}")


@dataclass
class HParams:
    learning_rate: float = 2e-4
    warmup_steps: int = 10
    schedule: str = "constant"
    lora_rank: int = 0  # 0 = full fine-tuning
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    kl_beta: float = 0.0
    group_size: int = 8
    prompts_per_step: int = 16
    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.28
    ppo_epochs: int = 2
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 64  # built-in gold SQL is at most 64 tokens with EOS; long tails cost whole batches
    loss_type: str = "dapo"  # token-level mean: +15.3 vs +13.5 for "grpo" over 3 seeds (docs/grpo-tuning.md)
    scale_rewards: bool = False
    dynamic_sampling: bool = True
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    grad_accum: int = 1
    sft_steps: int = 0
    # Dynamic sampling draws up to this many candidate batches per step to fill it with mixed groups.
    sampling_rounds: int = 3
    sft_learning_rate: float = 1e-3
    sft_batch_size: int = 32
    engine: str = "hf"  # rollouts: "hf" (transformers generate) or "vllm" (gpu extra; unverified)

    def __post_init__(self) -> None:
        p = "hparams."
        _number(p + "learning_rate", self.learning_rate, lo=0, hi=1, lo_open=True)
        _number(p + "warmup_steps", self.warmup_steps, lo=0, integer=True)
        _check(self.schedule in SCHEDULES, f"{p}schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _number(p + "lora_rank", self.lora_rank, lo=0, hi=1024, integer=True)
        _number(p + "lora_alpha", self.lora_alpha, lo=0, lo_open=True)
        _number(p + "lora_dropout", self.lora_dropout, lo=0, hi=0.9)
        tm = self.target_modules
        _check(isinstance(tm, str) or (isinstance(tm, list) and tm and all(isinstance(m, str) for m in tm)),
               f"{p}target_modules must be \"all-linear\" or a non-empty list of module names, got {tm!r}")
        _number(p + "kl_beta", self.kl_beta, lo=0)
        _number(p + "group_size", self.group_size, integer=True)
        _check(self.group_size >= 2, f"{p}group_size: GRPO needs at least 2 completions per prompt, "
                                     f"got {self.group_size}")
        _number(p + "prompts_per_step", self.prompts_per_step, lo=1, integer=True)
        _number(p + "clip_eps_low", self.clip_eps_low, lo=0, hi=1, lo_open=True)
        _number(p + "clip_eps_high", self.clip_eps_high, lo=0, lo_open=True)
        _number(p + "ppo_epochs", self.ppo_epochs, lo=1, hi=16, integer=True)
        _number(p + "temperature", self.temperature, lo=0, hi=3, lo_open=True)
        _number(p + "top_p", self.top_p, lo=0, hi=1, lo_open=True)
        _number(p + "max_new_tokens", self.max_new_tokens, lo=1, hi=4096, integer=True)
        _check(self.loss_type in LOSS_TYPES, f"{p}loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        _check(isinstance(self.scale_rewards, bool), f"{p}scale_rewards must be true or false")
        _check(isinstance(self.dynamic_sampling, bool), f"{p}dynamic_sampling must be true or false")
        _number(p + "grad_clip", self.grad_clip, lo=0)
        _number(p + "weight_decay", self.weight_decay, lo=0, hi=1)
        _number(p + "grad_accum", self.grad_accum, lo=1, integer=True)
        _check(self.prompts_per_step % self.grad_accum == 0,
               f"{p}grad_accum ({self.grad_accum}) must divide prompts_per_step ({self.prompts_per_step})")
        _number(p + "sft_steps", self.sft_steps, lo=0, integer=True)
        _number(p + "sampling_rounds", self.sampling_rounds, lo=1, hi=16, integer=True)
        _number(p + "sft_learning_rate", self.sft_learning_rate, lo=0, hi=1, lo_open=True)
        _number(p + "sft_batch_size", self.sft_batch_size, lo=1, integer=True)
        _check(self.engine in ENGINES, f"{p}engine must be one of {ENGINES}, got {self.engine!r}")


@dataclass
class RewardConfig:
    """`sql_env.RewardSpec` as JSON; the trial runner hands it to sql_env, which checks names."""

    components: dict[str, float] = field(default_factory=lambda: {"execution_match": 1.0})
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(isinstance(self.components, dict) and len(self.components) > 0,
               'reward.components must map component names to weights, e.g. {"execution_match": 1.0}')
        for name, weight in self.components.items():
            _number(f"reward.components.{name}", weight)
        _check(isinstance(self.params, dict), "reward.params must be an object (use {} for none)")


@dataclass
class Budget:
    max_steps: int | None = 200
    max_seconds: float | None = 480
    checkpoint_every: int = 50  # steps between checkpoints for --resume; 0 disables them

    def __post_init__(self) -> None:
        _check(self.max_steps is not None or self.max_seconds is not None,
               "budget needs max_steps and/or max_seconds; set at least one")
        if self.max_steps is not None:
            _number("budget.max_steps", self.max_steps, lo=0, integer=True)
        if self.max_seconds is not None:
            _number("budget.max_seconds", self.max_seconds, lo=0, lo_open=True)
        _number("budget.checkpoint_every", self.checkpoint_every, lo=0, integer=True)


@dataclass
class EvalConfig:
    split: str = "dev"
    limit: int = 400  # dev items evaluated greedily (0 = all)
    every_steps: int = 0  # intermediate evals; 0 = only before and after
    pass_k: int = 0  # >0: also pass@k at the rollout temperature before and after
    pass_limit: int = 0  # dev items for pass@k (the first ones; 0 = the same items as greedy)
    samples: int = 32  # sample completions with verdicts written to samples.jsonl per logged step
    before: bool = True  # the "before" eval; skipping it saves time when the start is known

    def __post_init__(self) -> None:
        _check(isinstance(self.split, str) and self.split != "", "eval.split must name a split, e.g. \"dev\"")
        _number("eval.limit", self.limit, lo=0, integer=True)
        _number("eval.every_steps", self.every_steps, lo=0, integer=True)
        _number("eval.pass_k", self.pass_k, lo=0, hi=256, integer=True)
        _number("eval.pass_limit", self.pass_limit, lo=0, integer=True)
        _number("eval.samples", self.samples, lo=0, integer=True)
        _check(isinstance(self.before, bool), "eval.before must be true or false")


_SECTIONS = {"hparams": HParams, "reward": RewardConfig, "budget": Budget, "eval": EvalConfig}


@dataclass
class TrialSpec:
    trial_id: str = "trial"
    session: str = ""
    model: str = "builtin:tiny-gemma"
    dataset: str = "builtin"
    train_split: str = "train"
    hparams: HParams = field(default_factory=HParams)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"  # "auto" (a CUDA GPU when torch sees one, else CPU), "cpu", "cuda" or "cuda:N"

    def __post_init__(self) -> None:
        for name in ("trial_id", "model", "dataset", "train_split"):
            value = getattr(self, name)
            _check(isinstance(value, str) and value.strip() != "", f"{name} must be a non-empty string")
        _check(isinstance(self.session, str), "session must be a string (\"\" outside a session)")
        _check(all(c.isalnum() or c in "-_." for c in self.trial_id),
               f"trial_id {self.trial_id!r} may hold only letters, digits, '-', '_' and '.'")
        _number("seed", self.seed, lo=0, integer=True)
        _check(isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {self.device!r}")
        _check(self.train_split != self.eval.split,
               f"train_split and eval.split are both {self.train_split!r}; evaluate on a held-out split")
        _check(self.hparams.schedule != "cosine" or self.budget.max_steps is not None,
               "hparams.schedule \"cosine\" needs budget.max_steps (it decays to zero there); "
               "set max_steps or use \"constant\"")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrialSpec:
        _check(isinstance(data, dict), "a trial spec must be a JSON object")
        data = _without_comments(data)
        top = {f.name for f in fields(cls)}
        _reject_unknown(data, top, "")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            section = _SECTIONS.get(key)
            if section is None:
                kwargs[key] = value
                continue
            _check(isinstance(value, dict), f"{key} must be a JSON object")
            value = _without_comments(value)
            _reject_unknown(value, {f.name for f in fields(section)}, key + ".")
            kwargs[key] = section(**value)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrialSpec:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"cannot read spec {path}: {exc.strerror}; check the path") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        return cls.from_json(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(Path(path), self.to_json())


def _without_comments(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("_"))}


def _reject_unknown(data: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        hint = ", ".join(sorted(known))
        raise SpecError(f"unknown key {prefix}{unknown[0]!s}; valid keys{' in ' + prefix[:-1] if prefix else ''}: {hint}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file + os.replace so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
