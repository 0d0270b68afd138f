"""OfflinePlanner: Optuna's TPE for hyperparameters plus rules that read trial diagnostics.

Each round proposes k configs:
1. round 0: the search space's defaults (the calibrated recipe), so the first trial is a known-good
   baseline; later rounds: the best trial so far with the rules below applied (if none fires, its
   learning rate nudged by x0.7 or x1.4, alternating by round, as a local search step);
2. the rest: left open, so the study's TPE sampler fills every parameter at launch.

Rules (read from the best trial's curves and samples, and from failed trials):
- many failing queries: >30% of sampled SQL has a syntax/schema/runtime error -> raise the
  `executes` weight by 0.1, so running SQL earns signal before it is right;
- reward hacking: mean reward rose (> +0.05) while batch accuracy stayed flat (< +0.01) or dev
  accuracy did not gain beyond its standard error -> halve the partial-credit and format weights;
- instability: a non-finite loss, KL above 0.5, a grad norm above 10x its median, or a trial
  failed with `nan_loss` -> halve the learning rate and raise `kl_beta` to the next choice;
- no signal: reward flat and below 0.05 -> raise the rollout temperature by 0.15 (more diverse groups);
- out of memory (`oom` failure) -> halve group size and prompts per step.
Every change is clamped into the search space and written into the rationale.
"""

from __future__ import annotations

from typing import Any

from agent.planners.base import PlannerResult, PlanningContext, Proposal
from rl_core.spec import FIELDS
from tools.search_space import SearchSpace

ERROR_STATUSES = ("syntax_error", "schema_error", "runtime_error", "forbidden", "timeout")


class OfflinePlanner:
    name = "offline"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        proposals: list[Proposal] = []
        notes: list[str] = []
        if ctx.k <= 0:
            return PlannerResult([], self.name)
        best = ctx.best()
        if best is None and not ctx.trials:
            proposals.append(Proposal(ctx.space.defaults(), _baseline_rationale(ctx.space.defaults(), ctx.space.fixed)))
        else:
            params, reasons = self._exploit(ctx, best)
            clean, clamp_notes = ctx.space.validate(params)
            notes += reasons + clamp_notes
            proposals.append(Proposal(clean, "; ".join(reasons) or "explore around the best trial"))
        n_done = len(ctx.succeeded())
        while len(proposals) < ctx.k:
            proposals.append(Proposal({}, f"TPE sample from {n_done} finished trial(s): Optuna picks every "
                                          "parameter (random until enough trials are in)"))
        return PlannerResult(proposals, self.name, notes)

    def _exploit(self, ctx: PlanningContext, best: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
        base = dict(best["params"]) if best else ctx.space.defaults()
        params = dict(base)
        reasons: list[str] = []
        ref = best["trial_id"] if best else "the defaults"
        if best:
            reasons.append(f"start from best trial {best['trial_id']} (score {best['score']:.3f})")
            diag = best.get("summary", {})
            _rule_errors(params, diag, ctx.space, reasons, ref)
            _rule_hacking(params, diag, best, reasons, ref)
            _rule_unstable(params, diag.get("curve", {}), ctx.space, reasons, ref)
            _rule_no_signal(params, diag.get("curve", {}), ctx.space, reasons, ref)
        for failed in [t for t in ctx.trials if t.get("status") == "failed"][-3:]:
            kind = (failed.get("error") or {}).get("kind")
            if kind == "nan_loss" and not any("unstable" in r for r in reasons):
                _stabilise(params, ctx.space, reasons, f"{failed['trial_id']} failed with a NaN loss (unstable)")
            if kind == "oom" and not any("memory" in r for r in reasons):
                for name in ("group_size", "prompts_per_step"):
                    if name in params:
                        params[name] = max(2, int(params[name]) // 2)
                reasons.append(f"{failed['trial_id']} ran out of memory: halve group size and prompts per step")
        factor = 0.7 if ctx.round % 2 else 1.4
        for _ in range(4):  # never re-run a config already tried: step the learning rate instead
            if "learning_rate" not in params or (params != base and not ctx.tried(params)):
                break
            why = "no rule fired" if params == base else "config already tried"
            params["learning_rate"] = float(params["learning_rate"]) * factor
            reasons.append(f"{why}: local step, learning rate x{factor}")
        return params, reasons


def _bump(space: SearchSpace, params: dict[str, Any], name: str, delta: float) -> bool:
    if name not in space.params:
        return False
    params[name] = float(params.get(name, space.params[name].default)) + delta
    return True


def _rule_errors(params: dict, diag: dict, space: SearchSpace, reasons: list[str], ref: str) -> None:
    share = diag.get("samples", {}).get("status_share", {})
    failing = sum(share.get(s, 0.0) for s in ERROR_STATUSES)
    if failing > 0.3 and _bump(space, params, "reward_executes", 0.1):
        reasons.append(f"{failing:.0%} of sampled SQL in {ref} failed to execute: raise the executes weight")


def _rule_hacking(params: dict, diag: dict, best: dict, reasons: list[str], ref: str) -> None:
    curve = diag.get("curve", {})
    reward_up = (curve.get("reward_delta") or 0.0) > 0.05
    acc_flat = (curve.get("batch_accuracy_delta") or 0.0) < 0.01
    gain, stderr = best.get("gain"), best.get("gain_stderr")
    if gain is not None and stderr is not None:
        acc_flat = acc_flat or gain <= stderr
    shaping = [n for n in ("reward_partial_credit", "reward_format") if (params.get(n) or 0) > 0]
    if reward_up and acc_flat and shaping:
        for name in shaping:
            params[name] = float(params[name]) / 2
        reasons.append(f"reward rose but accuracy stayed flat in {ref} (reward hacking): "
                       f"halve {' and '.join(shaping)}")


def _rule_unstable(params: dict, curve: dict, space: SearchSpace, reasons: list[str], ref: str) -> None:
    kl, grad, med = curve.get("kl_max"), curve.get("grad_norm_max"), curve.get("grad_norm_median")
    why = None
    if curve.get("nonfinite_loss"):
        why = "a non-finite loss"
    elif kl is not None and kl > 0.5:
        why = f"KL reached {kl:.2f}"
    elif grad is not None and med and grad > 10 * med:
        why = f"grad norm spiked to {grad:.1f} (median {med:.1f})"
    if why:
        _stabilise(params, space, reasons, f"{why} in {ref} (unstable)")


def _stabilise(params: dict, space: SearchSpace, reasons: list[str], why: str) -> None:
    if "learning_rate" in params:
        params["learning_rate"] = float(params["learning_rate"]) / 2
    kl = space.params.get("kl_beta")
    if kl is not None and kl.choices:
        bigger = [c for c in sorted(kl.choices) if c > (params.get("kl_beta") or 0)]
        if bigger:
            params["kl_beta"] = bigger[0]
    reasons.append(f"{why}: halve the learning rate and raise kl_beta")


def _rule_no_signal(params: dict, curve: dict, space: SearchSpace, reasons: list[str], ref: str) -> None:
    last, delta = curve.get("reward_last"), curve.get("reward_delta")
    if last is not None and last < 0.05 and abs(delta or 0.0) < 0.02 and _bump(space, params, "temperature", 0.15):
        reasons.append(f"reward stayed near zero in {ref} (no learning signal): raise the temperature")


def _baseline_rationale(d: dict, fixed: dict | None = None) -> str:
    """The first trial's reason, naming the values it actually runs: searched defaults, else pinned
    values, else the spec's defaults (a config may pin batch settings: never "None prompts")."""
    def value(name: str) -> Any:
        if name in d:
            return d[name]
        path = "budget.max_steps" if name == "max_steps" else f"hparams.{name}"
        return (fixed or {}).get(path, FIELDS[path].default)

    sft = value("sft_steps")
    rank = value("lora_rank")
    tuning = "full fine-tuning" if rank == 0 else f"LoRA r{rank}"
    reward = "binary execution reward" if not any(
        d.get(k) for k in ("reward_executes", "reward_partial_credit", "reward_format", "reward_length_penalty")
    ) else "shaped reward"
    recipe = f"the pretrained-model preset ({sft} supervised steps first, " if sft else "the calibrated recipe ("
    return (f"baseline: the search space's defaults, {recipe}lr {_short(value('learning_rate'))}, "
            f"{value('prompts_per_step')} prompts x {value('group_size')}, T={value('temperature'):g}, "
            f"{value('loss_type')} loss, {tuning}, {reward})")


def _short(x: float) -> str:
    """2e-4 rather than 0.0002."""
    return f"{x:.1e}".replace(".0e", "e").replace("e-0", "e-").replace("e+0", "e")

