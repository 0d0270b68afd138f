"""OfflinePlanner: a population-based-training policy over the trial tree, Optuna's TPE for fresh
starts, and rules that read trial diagnostics.

Each round proposes k trials:
1. nothing finished yet: the search space's defaults (the calibrated recipe) as a known-good
   baseline, the rest left open so the study's TPE sampler fills them (fresh starts);
2. with branching on (the default), in the spirit of PBT (exploit = copy a top trial's weights,
   explore = perturb its hyperparameters), over the tree of trials:
   - the parent is the best finished trial by dev score (the next best once it has two trials
     running from it);
   - `continue` it unchanged (its weights, values and optimizer state: GRPO's gain keeps growing
     with training time) when it is the best and no plain continuation of it exists already;
   - with one trial at a time (a small machine), the leading line keeps the compute: its head is
     continued; when a move with an effect the screen can resolve is at hand (a supervised stage,
     a rule that fired), the next continuation is screened and a challenger (a branch from the same
     checkpoint, with its whole trainer state) races it at equal steps, within `explore_share` of
     the budget (agent/screen.py);
   - every other slot `branch`es from it: the rules below read the parent's curves and samples at
     the branch point; when none fires, explore: learning rate x0.8 or x1.25 and the temperature
     -/+0.1, alternating per slot, never a (parent, values) pair already tried;
3. with branching off: the best trial's values with the rules applied, started fresh (the old
   policy), the rest TPE.

Rules (read from the parent's curves and samples, and from failed trials):
- many failing queries: >30% of sampled SQL has a syntax/schema/runtime error -> raise the
  `executes` weight by 0.1, so running SQL earns signal before it is right;
- reward hacking: mean reward rose (> +0.05) while batch accuracy stayed flat (< +0.01) or dev
  accuracy did not gain beyond its standard error -> halve the partial-credit and format weights;
- instability: a non-finite loss, a one-step KL drift above 0.5 (metrics `kl`, which is
  `kl_drift`; the KL to the reference, `kl_ref`, may grow by design), a grad norm above 10x its median, or a trial
  failed with `nan_loss` -> halve the learning rate and raise `kl_beta` to the next choice;
- no signal: reward flat and below 0.05 -> raise the rollout temperature by 0.15 (more diverse groups);
- out of memory (`oom` failure) -> halve group size and prompts per step.
Every change is clamped into the search space and written into the rationale.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agent.planners.base import PlannerResult, PlanningContext, Proposal
from agent.planners.line import (
    after_continuation,
    challenge_steps,
    line_head,
    sft_moves_left,
    sft_stage_steps,
)
from rl_core.spec import FIELDS
from tools.search_space import SearchSpace

ERROR_STATUSES = ("syntax_error", "schema_error", "runtime_error", "forbidden", "timeout")


class OfflinePlanner:
    name = "offline"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        if ctx.k <= 0:
            return PlannerResult([], self.name)
        best = ctx.best()
        if best is not None and ctx.branching:
            return self._tree(ctx)
        proposals: list[Proposal] = []
        notes: list[str] = []
        if best is None and not ctx.trials:
            proposals.append(Proposal(ctx.space.defaults(), _baseline_rationale(ctx.space.defaults(), ctx.space.fixed)))
        else:
            params, reasons = self._exploit(ctx, best)
            clean, clamp_notes = ctx.space.validate(params)
            notes += reasons + clamp_notes
            proposals.append(Proposal(clean, "; ".join(reasons) or "explore around the best trial"))
        self._fill_with_tpe(ctx, proposals)
        return PlannerResult(proposals, self.name, notes)

    def _fill_with_tpe(self, ctx: PlanningContext, proposals: list[Proposal]) -> None:
        n_done = len(ctx.succeeded())
        while len(proposals) < ctx.k:
            proposals.append(Proposal({}, f"TPE sample from {n_done} finished trial(s): Optuna picks every "
                                          "parameter (random until enough trials are in)"))

    # --- the tree (PBT-style exploit and explore) ------------------------------------------------
    def _tree(self, ctx: PlanningContext) -> PlannerResult:
        if ctx.clock is not None and ctx.clock.slots == 1:
            one = self._one_line(ctx)
            if one is not None:
                return one
        parent = self._pick_parent(ctx)
        pid = parent["trial_id"]
        proposals: list[Proposal] = []
        notes: list[str] = []
        score = f"dev {parent['score']:.3f}"
        if pid == (ctx.best() or {}).get("trial_id") and not self._continued(ctx, pid):
            proposals.append(Proposal(dict(parent.get("params") or {}),
                                      f"continue {pid} ({score}) unchanged: GRPO keeps gaining with training time",
                                      "continue", pid))
        slot = 0
        move = self._move(ctx, parent)
        staged = None  # with two or more branch slots, the last tries the supervised stage
        if move is not None and move[2] and ctx.k - len(proposals) >= 2:
            staged = Proposal(move[0], f"branch from {pid} ({score}): " + "; ".join(move[1][1:]), "branch", pid,
                              sft_steps=move[2])
        while len(proposals) < ctx.k - (staged is not None):
            params, reasons = self._exploit(ctx, parent, explore=False)
            if not reasons[1:]:  # no rule fired at the branch point: PBT's explore step
                params, why = _explore(params, ctx.space, ctx.round + slot)
                reasons.append(why)
            params, clamp_notes = ctx.space.validate(params)
            notes += clamp_notes
            for _ in range(4):
                if not self._branched(ctx, pid, params):
                    break
                params, why = _explore(params, ctx.space, ctx.round + slot + 1)
                reasons.append(f"already tried from {pid}: {why}")
                params, _ = ctx.space.validate(params)
            proposals.append(Proposal(params, f"branch from {pid} ({score}): " + "; ".join(reasons[1:]), "branch", pid))
            slot += 1
        if staged is not None:
            proposals.append(staged)
        if any(p.action == "continue" for p in proposals) and any(p.action == "branch" for p in proposals):
            for p in proposals:  # side by side from one checkpoint: the branches race the continue (screens)
                p.screened = True
        return PlannerResult(proposals, self.name, notes)

    # --- one trial at a time: the incumbent line and its challengers (agent/screen.py) -------------
    def _one_line(self, ctx: PlanningContext) -> PlannerResult | None:
        """The leading line keeps the compute. When a challenger with an effect the screen can see is
        at hand (a supervised stage the line has not had, a rule that fired) and its race fits the
        time, the next continuation is screened, and a challenger forked from the same checkpoint
        races it at equal steps, within the budget's exploration share."""
        head = line_head(ctx)
        if head is None or self._continued(ctx, head["trial_id"]):
            return None
        challenger = self._challenger(ctx, head)
        if challenger is not None:
            return PlannerResult([challenger], self.name)
        move = self._move(ctx, head)
        challenged = any(r.get("parent") == head["trial_id"] and r.get("action") == "branch"
                         for r in list(ctx.trials) + list(ctx.running))
        steps = challenge_steps(after_continuation(ctx), head, move[2] if move else 0)
        screened = move is not None and steps is not None and not challenged
        why = (f"; this continuation is screened: a challenger from the same checkpoint ({move[3]}) will race "
               f"it for up to {steps} steps") if screened else ""
        return PlannerResult([Proposal(
            dict(head.get("params") or {}),
            f"continue {head['trial_id']} (dev {head['score']:.3f}), the head of the leading line: with one trial "
            "at a time the line that leads keeps the compute" + why, "continue", head["trial_id"],
            screened=screened)], self.name)

    def _move(self, ctx: PlanningContext, parent: dict[str, Any]) -> tuple[dict[str, Any], list[str], int, str] | None:
        """The challenger of `parent`'s checkpoint with the largest expected effect, if the screen can
        see it: (params, reasons, supervised steps, what it is), or None.
        1. A supervised stage on gold SQL, when the line has had none (or every earlier one won its
           race): on the built-in benchmark the same wall time spent on supervised steps gave +15 to
           +30 points over GRPO (docs/grpo-calibration.md), far above the screen's resolution.
        2. A rule that fired on the checkpoint's diagnostics (errors, reward hacking, instability,
           no signal): it fixes a diagnosed problem.
        PBT's explore step (learning rate x1.25/x0.8, temperature +-0.1) is not a one-slot move: it
        changes dev by 2 points or less, under the screen's resolution, so racing it only costs."""
        if sft_moves_left(ctx, parent):
            steps = sft_stage_steps(ctx)
            if steps:
                return (dict(parent.get("params") or {}), [f"start from {parent['trial_id']}",
                        f"a supervised stage of {steps} steps on gold SQL, then GRPO (the hand-off): on this "
                        "benchmark supervised steps gained +15 to +30 points per unit of time over GRPO"], steps,
                        f"{steps} supervised steps first")
        params, reasons = self._exploit(ctx, parent, explore=False)
        if reasons[1:]:
            return params, reasons, 0, "a rule's fix"
        return None

    def _challenger(self, ctx: PlanningContext, head: dict[str, Any]) -> Proposal | None:
        """A branch from the checkpoint the (screened) head continued from, racing the head."""
        pid = head.get("parent")
        if head.get("action") != "continue" or not head.get("screened") or not pid:
            return None
        if any(r.get("parent") == pid and r.get("action") == "branch" for r in list(ctx.trials) + list(ctx.running)):
            return None  # this checkpoint was challenged already
        parent = next((t for t in ctx.succeeded() if t["trial_id"] == pid), None)
        move = self._move(ctx, parent) if parent is not None else None
        steps = challenge_steps(ctx, head, move[2]) if move else None
        if move is None or steps is None:
            return None
        params, reasons, sft, _ = move
        params, _ = ctx.space.validate(params)
        return Proposal(params, f"challenger from {pid} (the checkpoint {head['trial_id']} continued from), racing "
                                f"it at equal steps for up to {steps} steps on the dev subset, stopped once behind "
                                f"by more than 1 SE: " + "; ".join(reasons[1:]), "branch", pid,
                        screened=True, max_steps=steps, sft_steps=sft or None)

    @staticmethod
    def _pick_parent(ctx: PlanningContext) -> dict[str, Any]:
        done = sorted(ctx.succeeded(), key=lambda t: -t["score"])
        children = Counter(r.get("parent") for r in ctx.running)
        return next((t for t in done if children[t["trial_id"]] < 2), done[0])

    @staticmethod
    def _continued(ctx: PlanningContext, pid: str) -> bool:
        rows = list(ctx.trials) + list(ctx.running)
        return any(r.get("action") == "continue" and r.get("parent") == pid for r in rows)

    @staticmethod
    def _branched(ctx: PlanningContext, pid: str, params: dict[str, Any]) -> bool:
        rows = list(ctx.trials) + list(ctx.running)
        return any(r.get("parent") == pid and all((r.get("params") or {}).get(k) == v for k, v in params.items())
                   for r in rows)

    def _exploit(self, ctx: PlanningContext, best: dict[str, Any] | None,
                 explore: bool = True) -> tuple[dict[str, Any], list[str]]:
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
        for _ in range(4 if explore else 0):  # never re-run a config already tried: step the learning rate instead
            if "learning_rate" not in params or (params != base and not ctx.tried(params)):
                break
            why = "no rule fired" if params == base else "config already tried"
            params["learning_rate"] = float(params["learning_rate"]) * factor
            reasons.append(f"{why}: local step, learning rate x{factor}")
        return params, reasons


def _explore(params: dict[str, Any], space: SearchSpace, index: int) -> tuple[dict[str, Any], str]:
    """PBT's explore: perturb the continuous knobs by a fixed factor, the direction alternating."""
    out = dict(params)
    up = index % 2 == 0
    changes = []
    if "learning_rate" in space.params:
        lr = float(out.get("learning_rate", space.params["learning_rate"].default))
        out["learning_rate"] = lr * (1.25 if up else 0.8)
        changes.append(f"learning rate x{1.25 if up else 0.8}")
    if "temperature" in space.params:
        t = float(out.get("temperature", space.params["temperature"].default))
        out["temperature"] = round(t + (0.1 if up else -0.1), 3)
        changes.append(f"temperature {'+' if up else '-'}0.1")
    return out, "explore: " + ", ".join(changes) if changes else "explore: nothing continuous to perturb"


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
    # kl_max is the largest per-step drift (metrics `kl` = `kl_drift`), never the reference KL
    kl, grad, med = curve.get("kl_max"), curve.get("grad_norm_max"), curve.get("grad_norm_median")
    why = None
    if curve.get("nonfinite_loss"):
        why = "a non-finite loss"
    elif kl is not None and kl > 0.5:
        why = f"the per-step KL drift reached {kl:.2f}"
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

