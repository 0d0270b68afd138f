"""The trial spec: one JSON document fully describes a trial, and this module is its only owner.

Every field is declared once below with its metadata (type, default, allowed range or choices,
whether the search may vary it and its default search range, help text). Derived from it, never
copied: the search space (`tools.search_space`), the planners' JSON schemas (built from the search
space), the pretrained-model preset (`rl_core.presets`, in these fields' terms), the README's
config reference (`python -m rl_core.spec --reference`), and the validation below. Adding a hyperparameter is one
`spec_field(...)` line here plus its use in the trainer.

Torch-free on purpose: the agent, the CLI and the cluster launchers import this module to validate
specs without paying for (or having) torch. Every message names the field and says the fix.

Keys starting with "_" (e.g. "_comment") are documentation and are ignored, so example specs can
explain themselves in plain JSON; every other unknown key is an error.

Defaults are the stable corner measured in docs/grpo-calibration.md and docs/grpo-tuning.md:
rollouts at T=0.7, binary execution reward, no std scaling, lr 2e-4 with 10 warmup steps, 16
prompts x 8 per step, full fine-tuning of the tiny policy, dynamic sampling, 2 PPO epochs, clip
0.2/0.28, token-level (dapo) loss aggregation.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rl_core.fields import FieldInfo, Search, SpecError, _check, spec_field, unknown_key_message
from rl_core.trialdir import write_json_atomic

CURRICULA = ("uniform", "pass_rate")  # rl_core/curriculum.py's samplers (make_sampler)

__all__ = ["FieldInfo", "Search", "SpecError", "TrialSpec", "info_of", "searchable_fields", "spec_field",
           "unknown_key_message"]

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCHEDULES = ("constant", "cosine")
ENGINES = ("hf", "vllm")


def _validate_section(obj: Any, prefix: str) -> None:
    for f in fields(obj):
        if f.metadata:
            info_of(prefix + f.name).check(getattr(obj, f.name))


# --- sections ---------------------------------------------------------------------------------
@dataclass
class HParams:
    learning_rate: float = spec_field(2e-4, "AdamW learning rate of the GRPO stage", lo=0, hi=1, lo_open=True,
                                      search=Search(1e-5, 1e-3, log=True))
    warmup_steps: int = spec_field(10, "linear warm-up steps of the learning rate", lo=0, searchable=True)
    schedule: str = spec_field("constant", "learning-rate schedule after warm-up", choices=SCHEDULES,
                               searchable=True)
    lora_rank: int = spec_field(0, "LoRA rank; 0 = full fine-tuning", lo=0, hi=1024,
                                search=Search(choices=(0, 8, 16, 32)))
    lora_alpha: int = spec_field(32, "LoRA scaling alpha", lo=0, lo_open=True, searchable=True)
    lora_dropout: float = spec_field(0.0, "LoRA dropout (off in the log-prob forwards)", lo=0, hi=0.9,
                                     searchable=True)
    target_modules: str | list[str] = spec_field("all-linear", "LoRA target modules", kind="modules")
    kl_beta: float = spec_field(0.0, "weight of the k3 KL penalty to the starting policy", lo=0,
                                search=Search(choices=(0.0, 0.001, 0.01, 0.04)))
    group_size: int = spec_field(8, "completions sampled per prompt (GRPO group)", lo=2,
                                 search=Search(choices=(4, 8, 16)))
    prompts_per_step: int = spec_field(16, "prompts per optimizer step", lo=1, search=Search(choices=(4, 8, 16)))
    clip_eps_low: float = spec_field(0.2, "PPO clip below the ratio 1", lo=0, hi=1, lo_open=True,
                                     search=Search(0.1, 0.3))
    clip_eps_high: float = spec_field(0.28, "PPO clip above the ratio 1 (clip-higher)", lo=0, lo_open=True,
                                      search=Search(0.2, 0.4))
    ppo_epochs: int = spec_field(2, "passes over each batch of rollouts", lo=1, hi=16, searchable=True)
    temperature: float = spec_field(0.7, "sampling temperature of rollouts", lo=0, hi=3, lo_open=True,
                                    search=Search(0.5, 1.1))
    top_p: float = spec_field(1.0, "nucleus sampling of rollouts (log-probs ignore the nucleus)", lo=0, hi=1,
                              lo_open=True, searchable=True)
    max_new_tokens: int = spec_field(64, "generation cap; built-in gold SQL is at most 64 tokens with EOS",
                                     lo=1, hi=4096, searchable=True)
    loss_type: str = spec_field("dapo", "loss aggregation: grpo (sequence mean), dr_grpo, dapo (token mean)",
                                choices=LOSS_TYPES, search=Search(choices=LOSS_TYPES))
    scale_rewards: bool = spec_field(False, "divide advantages by the group's reward std", searchable=True)
    dynamic_sampling: bool = spec_field(True, "true: draw extra batches and train only on groups whose "
                                       "rewards differ; false: train on every group drawn", searchable=True)
    grad_clip: float = spec_field(1.0, "gradient-norm clip; 0 = off", lo=0, searchable=True)
    weight_decay: float = spec_field(0.0, "AdamW weight decay", lo=0, hi=1, searchable=True)
    entropy_coef: float = spec_field(0.0, "entropy bonus weight (token-mean entropy of the sampled tokens)",
                                     lo=0, hi=0.1, searchable=True)
    grad_accum: int = spec_field(1, "micro-batches per step; must divide prompts_per_step", lo=1, searchable=True)
    sft_steps: int = spec_field(0, "supervised steps on gold SQL before GRPO (a warm start)", lo=0,
                                searchable=True)
    sampling_rounds: int = spec_field(3, "candidate batches dynamic sampling may draw per step", lo=1, hi=16,
                                      searchable=True)
    sft_learning_rate: float = spec_field(1e-3, "learning rate of the supervised stage", lo=0, hi=1,
                                          lo_open=True, searchable=True)
    sft_batch_size: int = spec_field(32, "examples per supervised step", lo=1, searchable=True)
    curriculum: str = spec_field("uniform", "which prompts a step draws: uniform (a seeded shuffle) or pass_rate "
                                 "(favour pass rates near 1/2, rest prompts without signal)", choices=CURRICULA,
                                 search=Search(choices=CURRICULA))
    engine: str = spec_field("hf", "rollout engine: hf (transformers) or vllm (gpu extra; unverified)",
                             choices=ENGINES)

    def __post_init__(self) -> None:
        _check(not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or self.group_size >= 2,
               f"hparams.group_size: GRPO needs at least 2 completions per prompt, got {self.group_size}")
        _validate_section(self, "hparams.")
        _check(self.prompts_per_step % self.grad_accum == 0,
               f"hparams.grad_accum ({self.grad_accum}) must divide prompts_per_step ({self.prompts_per_step})")


@dataclass
class RewardConfig:
    """`sql_env.RewardSpec` as JSON; the trial runner hands it to sql_env, which owns the component names."""

    components: dict[str, float] = spec_field({"execution_match": 1.0}, "reward components and their weights",
                                              kind="object")
    params: dict[str, Any] = spec_field({}, "reward component settings (sql_env.RewardParams)", kind="object")

    def __post_init__(self) -> None:
        _check(isinstance(self.components, dict) and len(self.components) > 0,
               'reward.components must map component names to weights, e.g. {"execution_match": 1.0}')
        for name, weight in self.components.items():
            _check(isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight),
                   f"reward.components.{name} must be a finite number, got {weight!r}")
        _check(isinstance(self.params, dict), "reward.params must be an object (use {} for none)")


# Default search ranges of reward weights (search-space names `reward_<component>`); 0 drops the
# component. execution_match is the anchor (always 1) and is not searched. The names must be
# sql_env's reward components (a test holds them together).
REWARD_SEARCH: dict[str, Search | None] = {
    "executes": Search(0.0, 0.3),
    "partial_credit": Search(choices=(0.0, 0.1, 0.3)),
    "format": Search(0.0, 0.2),
    "length_penalty": Search(0.0, 0.1),
    "schema_link": None,  # searchable through a [params.reward_schema_link] table; not by default
}


@dataclass
class Budget:
    max_steps: int | None = spec_field(200, "GRPO steps (null: until max_seconds)", kind="int", lo=0,
                                       nullable=True, search=Search(20, 120, step=10, start=60))
    max_seconds: float | None = spec_field(480.0, "seconds of GRPO steps (evaluation not counted; null: no "
                                           "limit)", kind="float", lo=0, lo_open=True, nullable=True)
    checkpoint_every: int = spec_field(50, "steps between checkpoints for --resume; 0 disables them", lo=0)
    eval_seconds: float | None = spec_field(None, "the launcher's estimate of evaluation seconds, added to the "
                                            "wall-time limit", kind="float", lo=0, nullable=True)

    def __post_init__(self) -> None:
        _validate_section(self, "budget.")
        _check(self.max_steps is not None or self.max_seconds is not None,
               "budget needs max_steps and/or max_seconds; set at least one")

    def wall_limit_s(self) -> float | None:
        """What a launcher allows the whole process: training + evaluation + model loading, with margin.
        One formula for the local slots and Kubernetes' activeDeadlineSeconds."""
        if self.max_seconds is None:
            return None
        evals = self.eval_seconds if self.eval_seconds is not None else 2 * self.max_seconds
        return float(self.max_seconds + evals + 300)


@dataclass
class EvalConfig:
    split: str = spec_field("dev", "split evaluated greedily before, during and after training")
    limit: int = spec_field(400, "items of the split evaluated (0 = all)", lo=0)
    every_steps: int = spec_field(0, "intermediate evaluations every N steps (0 = before and after only)", lo=0)
    subset: int = spec_field(0, "items used by intermediate evaluations (0 = `limit`): a small fixed subset "
                             "for early stopping", lo=0)
    pass_k: int = spec_field(0, ">0: also pass@k at the rollout temperature before and after", lo=0, hi=256)
    pass_limit: int = spec_field(0, "items for pass@k (0 = the same items as greedy)", lo=0)
    samples: int = spec_field(32, "sample completions with verdicts written per logged step", lo=0)
    before: bool = spec_field(True, "evaluate before training (skip when the start is already measured)")
    report_split: str = spec_field("", "a second split evaluated whole, before and after training only (\"\" = "
                                   "none): the held-out report of a recipe tuned on `split`; sealed in sessions")

    def __post_init__(self) -> None:
        _validate_section(self, "eval.")
        _check(self.split != "", 'eval.split must name a split, e.g. "dev"')
        _check(self.report_split != self.split,
               f"eval.report_split and eval.split are both {self.split!r}; report on another split or set "
               'report_split to ""')


@dataclass
class InitFrom:
    """Where the policy's weights come from when not the base model: another trial's saved weights."""

    trial: str = spec_field("", "trial_id of the parent (lineage); \"\" = start from the base model")
    weights: str = spec_field("", "path of the parent's saved weights directory (the trial's `adapter/`)")
    optimizer: bool = spec_field(False, "also restore the parent's optimizer state (continue unchanged)")
    step: int = spec_field(0, "the parent's step count at the branch point", lo=0)
    train_s: float = spec_field(0.0, "the parent's cumulative training seconds at the branch point", lo=0)

    def __post_init__(self) -> None:
        _validate_section(self, "init_from.")
        _check(bool(self.trial) == bool(self.weights),
               "init_from needs both trial and weights (or neither, to start from the base model)")


_SECTIONS = {"hparams": HParams, "reward": RewardConfig, "budget": Budget, "eval": EvalConfig,
             "init_from": InitFrom}


@dataclass
class TrialSpec:
    trial_id: str = spec_field("trial", "letters, digits, '-', '_' and '.'")
    session: str = spec_field("", "the research session (\"\" outside one)")
    model: str = spec_field("builtin:tiny-gemma", "builtin:tiny-gemma, builtin:micro-gemma, gemma-3-270m, a GGUF "
                            "file or a local Hugging Face directory")
    dataset: str = spec_field("builtin", "a dataset name known to sql_env, or a dataset directory")
    train_split: str = spec_field("train", "split GRPO samples prompts from")
    hparams: HParams = field(default_factory=HParams)
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = spec_field(0, "seed of sampling, data order and initialisation", lo=0)
    budget: Budget = field(default_factory=Budget)
    eval: EvalConfig = field(default_factory=EvalConfig)
    init_from: InitFrom = field(default_factory=InitFrom)
    device: str = spec_field("auto", "auto (a CUDA GPU when torch sees one, else CPU), cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        _validate_section(self, "")
        for name in ("trial_id", "model", "dataset", "train_split"):
            _check(getattr(self, name).strip() != "", f"{name} must be a non-empty string")
        _check(all(c.isalnum() or c in "-_." for c in self.trial_id),
               f"trial_id {self.trial_id!r} may hold only letters, digits, '-', '_' and '.'")
        _check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
               f"device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got {self.device!r}")
        _check(self.train_split != self.eval.split,
               f"train_split and eval.split are both {self.train_split!r}; evaluate on a held-out split")
        _check(self.train_split != self.eval.report_split,
               f"train_split and eval.report_split are both {self.train_split!r}; report on a held-out split")
        _check(self.hparams.schedule != "cosine" or self.budget.max_steps is not None,
               "hparams.schedule \"cosine\" needs budget.max_steps (it decays to zero there); "
               "set max_steps or use \"constant\"")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrialSpec:
        _check(isinstance(data, dict), "a trial spec must be a JSON object")
        data = _without_comments(data)
        _reject_unknown(data, {f.name for f in fields(cls)}, "")
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
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise SpecError(f"cannot read spec {path}: {why}; check the path") from None
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
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise SpecError(unknown_key_message(prefix + unknown[0], sorted(prefix + k for k in known)))


def _collect(cls: type, prefix: str) -> list[FieldInfo]:
    out = []
    for f in fields(cls):
        if f.name in _SECTIONS and cls is TrialSpec:
            out += _collect(_SECTIONS[f.name], f.name + ".")
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        out.append(FieldInfo(prefix + f.name, m["kind"], default, m["help"], m["lo"], m["hi"], m["lo_open"],
                             m["choices"], m["nullable"], m["searchable"], m["search"]))
    return out


FIELDS: dict[str, FieldInfo] = {f.path: f for f in _collect(TrialSpec, "")}


def info_of(path: str) -> FieldInfo:
    try:
        return FIELDS[path]
    except KeyError:
        raise SpecError(unknown_key_message(path, sorted(FIELDS))) from None


def searchable_fields() -> dict[str, FieldInfo]:
    """Search-space name -> field, for every field a [params.<name>] table may vary."""
    return {f.name: f for f in FIELDS.values() if f.searchable}


# --- the README's config reference ------------------------------------------------------------
def reference_markdown() -> str:
    """The table of every spec field, as the README shows it (a test holds the README to this)."""
    rows = ["| field | type | default | allowed | search | what |", "|---|---|---|---|---|---|"]
    for f in FIELDS.values():
        search = "no"
        if f.search is not None:
            s = f.search
            search = ("default: " + " / ".join(json.dumps(c) for c in s.choices) if s.choices
                      else f"default: {s.low:g}..{s.high:g}{' log' if s.log else ''}")
        elif f.searchable:
            search = "yes"
        allowed = f.describe_range().replace("|", "\\|")
        rows.append(f"| `{f.path}` | {f.kind} | `{json.dumps(f.default)}` | {allowed} | {search} | {f.help} |")
    comps = ", ".join(f"`reward_{c}`" for c in REWARD_SEARCH)
    rows.append("")
    rows.append(f"Reward weights are searched as {comps} (0 drops the component; `execution_match` "
                "is the anchor at 1).")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m rl_core.spec --reference
    if sys.argv[1:] == ["--reference"]:
        print(reference_markdown())
    else:
        print("usage: python -m rl_core.spec --reference   (prints the README's config reference)")
