"""The trial runner's phases, read top to bottom: `prepare` (splits, engine, trainer), `start` (resume
from a checkpoint, or the supervised stage, the parent's optimizer and the evaluation before),
`train` (GRPO steps within the budget, intermediate evaluations, checkpoints) and `finish` (the
evaluation after, the saved weights, the result metrics). `rl_core/trial.py` loads the policy and
the environment and calls them in that order.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl_core import trialdir as td
from rl_core.branching import before_from_parent, paired_se, restore_parent_optimizer, save_weights
from rl_core.evalcache import cached_row, eval_key, weights_digest
from rl_core.spec import SpecError, TrialSpec


class _Stop(BaseException):
    """Raised from the SIGTERM handler: the launcher stopped the trial (deadline or cancel)."""


def classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception to the contract's error kinds."""
    from rl_core.trainer import NonFiniteLoss

    if isinstance(exc, TrialError):
        return exc.kind, str(exc)
    if isinstance(exc, SpecError):
        return "bad_spec", str(exc)
    if isinstance(exc, _Stop):
        return "timeout", "stopped by SIGTERM (launcher deadline or cancel)"
    if isinstance(exc, NonFiniteLoss):
        return "nan_loss", str(exc)
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or type(exc).__name__ == "OutOfMemoryError":
        return "oom", f"out of memory: {text[:300]}; lower prompts_per_step, group_size or max_new_tokens"
    return "crash", f"{type(exc).__name__}: {text[:500]}"


class TrialError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TrialDir:
    """The runner's view of its trial directory (file names and formats: rl_core.trialdir)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.checkpoints = root / td.CHECKPOINT_DIR

    def append(self, name: str, row: dict[str, Any]) -> None:
        td.append_jsonl(self.root / name, row)

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        return td.read_jsonl(self.root / name)

    def truncate_after(self, name: str, step: int) -> None:
        td.truncate_jsonl(self.root / name, step)

    def read_result(self) -> dict[str, Any] | None:
        try:
            return td.read_result(self.root)
        except td.TrialDirError:
            return None  # a damaged result of an earlier run is replaced by this run's

    def latest_checkpoint(self) -> Path | None:
        found = sorted(self.checkpoints.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        return found[-1] if found else None

    def refuse(self, raw: Any, exc: Exception) -> dict[str, Any]:
        """The failed result of a spec that does not validate (`raw`: what was given), written."""
        result = td.failed_result(raw, "bad_spec", str(exc))
        td.write_result(self.root, result)
        return result

    def fail(self, spec: TrialSpec, exc: BaseException, t_start: float) -> dict[str, Any]:
        """The failed result of a trial that raised, classified, said on stderr and written."""
        kind, message = classify(exc)
        print(f"trial {spec.trial_id} failed ({kind}): {message}", file=sys.stderr, flush=True)
        return self.result(spec, "failed", {"kind": kind, "message": message},
                           td.ResultMetrics(wall_s=round(time.time() - t_start, 1)))

    def result(self, spec: TrialSpec, status: str, error: dict[str, str] | None,
               metrics: td.ResultMetrics, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
        weights = td.WEIGHTS_DIR if (self.root / td.WEIGHTS_DIR).exists() else None
        result = td.make_result(spec.trial_id, status, metrics=metrics, error=error, spec=spec.to_json(),
                                adapter_path=weights, lineage=lineage)
        td.write_result(self.root, result)
        return result


@dataclass
class Run:
    """One trial in progress: what the phases share."""

    spec: TrialSpec
    out: TrialDir
    policy: Any
    env: Any
    engine: Any
    trainer: Any
    train_ids: list[str]
    dev_ids: list[str]
    report_ids: list[str]
    t_start: float
    train_s: float = 0.0  # seconds spent in GRPO steps: the budget counts these, not evaluations
    resumed: bool = False
    _digest: str | None = field(default=None, repr=False)

    def evaluate(self, ids: list[str], *, pass_k: bool, report: bool = False) -> dict[str, Any]:
        return evaluate(self.spec, self.engine, self.env, ids, self.out, step=self.trainer.step_count,
                        t_start=self.t_start, pass_k=pass_k, report=report, base_key=self._base_key(ids, report))

    def _base_key(self, ids: list[str], report: bool) -> str | None:
        """The evaluation cache's key while the policy is exactly the base, else None."""
        spec = self.spec
        if (spec.init_from.weights or spec.hparams.sft_steps or self.resumed or self.trainer.step_count
                or spec.eval.pass_k):
            return None
        model = self.policy.model
        if self._digest is None:
            self._digest = base_weights_digest(model)
        param = next(model.parameters())
        return eval_key(weights=self._digest, vocab_size=len(self.policy.tokenizer),
                        prompts=[self.env.prompt(i) for i in ids], dataset=spec.dataset,
                        split=spec.eval.report_split if report else spec.eval.split,
                        max_new_tokens=spec.hparams.max_new_tokens, engine=type(self.engine).__name__,
                        device=param.device.type, dtype=str(param.dtype))


def base_weights_digest(model: Any) -> str:
    """The digest of the base weights, also under a fresh LoRA adapter (whose B = 0 leaves the base's
    outputs): adapter tensors left out, peft's wrapper names mapped back to the base's."""
    state = {name.removeprefix("base_model.model.").replace(".base_layer", ""): tensor
             for name, tensor in model.state_dict().items() if "lora_" not in name}
    return weights_digest(state)


def prepare(spec: TrialSpec, out: TrialDir, policy: Any, env: Any, t_start: float) -> Run:
    """The splits (a missing or empty one is the spec's problem), the rollout engine and the trainer."""
    from rl_core.engine import EngineUnavailable, HFEngine, VLLMEngine
    from rl_core.trainer import GRPOTrainer

    hp = spec.hparams
    try:
        train_ids = list(env.example_ids(spec.train_split))
        dev_ids = list(env.example_ids(spec.eval.split))[: spec.eval.limit or None]
    except (ValueError, FileNotFoundError) as exc:  # unknown dataset or split
        raise TrialError("bad_spec", str(exc)) from exc
    report_ids: list[str] = []
    if spec.eval.report_split:
        try:
            report_ids = list(env.example_ids(spec.eval.report_split))
        except (ValueError, FileNotFoundError) as exc:
            raise TrialError("bad_spec", f"eval.report_split: {exc}") from exc
    named = [(spec.train_split, train_ids), (spec.eval.split, dev_ids)]
    for split, ids in named + ([(spec.eval.report_split, report_ids)] if spec.eval.report_split else []):
        if not ids:
            raise TrialError("bad_spec", f"split {split!r} of dataset {spec.dataset!r} is empty; pick another split")
    engine_cls = VLLMEngine if hp.engine == "vllm" else HFEngine
    try:
        engine = engine_cls(policy.model, policy.tokenizer, stop_strings=env.stop_strings)
    except EngineUnavailable as exc:
        raise TrialError("bad_spec", str(exc)) from exc
    # The KL reference is the policy the first GRPO step starts from (after the SFT stage): the
    # trainer takes it then and keeps it in its checkpoints.
    trainer = GRPOTrainer(policy.model, env, engine, hp, train_ids, seed=spec.seed,
                          pad_id=policy.tokenizer.pad_token_id, total_steps=spec.budget.max_steps)
    return Run(spec, out, policy, env, engine, trainer, train_ids, dev_ids, report_ids, t_start)


def start(run: Run, *, resume: bool) -> dict[str, Any] | None:
    """Resume from the latest checkpoint, or start fresh: the supervised stage, the parent's optimizer
    state and the evaluation before training. Returns the evaluation row at step 0 (None if none)."""
    import torch

    spec, out = run.spec, run.out
    checkpoint = out.latest_checkpoint() if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint, weights_only=False, map_location="cpu")  # the RNG state must stay a CPU tensor
        run.trainer.load_state_dict(state)
        run.train_s, run.resumed = state["train_s"], True
        for name in (td.METRICS_FILE, td.SAMPLES_FILE, td.EVAL_FILE, td.REPORT_FILE):
            out.truncate_after(name, run.trainer.step_count)
        print(f"resumed from {checkpoint.name} (step {run.trainer.step_count})", flush=True)
    else:
        for name in (td.METRICS_FILE, td.SAMPLES_FILE, td.EVAL_FILE, td.REPORT_FILE):
            (out.root / name).unlink(missing_ok=True)
        if spec.hparams.sft_steps:
            sft_stage(spec, run.env, run.policy, out)
        restore_parent_optimizer(spec, run.trainer)
        evaluate_only = spec.budget.max_steps == 0  # the final evaluation is all there is
        if not evaluate_only and (spec.eval.before or not before_from_parent(spec, run.dev_ids, out)):
            run.evaluate(run.dev_ids, pass_k=True)
        if not evaluate_only and run.report_ids:
            run.evaluate(run.report_ids, pass_k=False, report=True)
    return next((r for r in out.read_lines(td.EVAL_FILE) if r["step"] == 0), None)


def train(run: Run) -> None:
    """GRPO steps until the step or the seconds budget is spent; intermediate evaluations on the fixed
    subset, checkpoints every `checkpoint_every` steps."""
    spec, trainer = run.spec, run.trainer
    budget = spec.budget
    subset_ids = run.dev_ids[: spec.eval.subset or None]
    while (budget.max_steps is None or trainer.step_count < budget.max_steps) and \
            (budget.max_seconds is None or run.train_s < budget.max_seconds):
        metrics, groups = trainer.step()
        run.train_s += metrics["t_step"]
        metrics["elapsed_s"] = round(time.time() - run.t_start, 2)
        run.out.append(td.METRICS_FILE, metrics)
        log_samples(spec, run.env, run.out, metrics["step"], groups)
        progress_line(spec, metrics)
        step = trainer.step_count
        if spec.eval.every_steps and step % spec.eval.every_steps == 0 and step != budget.max_steps:
            run.evaluate(subset_ids, pass_k=False)
        if budget.checkpoint_every and step % budget.checkpoint_every == 0:
            save_checkpoint(run.out, {**trainer.state_dict(), "train_s": run.train_s})


def finish(run: Run, before: dict[str, Any] | None) -> td.ResultMetrics:
    """The evaluation after training (and on the report split), the saved weights, the metrics."""
    spec, out, trainer = run.spec, run.out, run.trainer
    after = run.evaluate(run.dev_ids, pass_k=True)
    report = None
    if run.report_ids:
        report_after = run.evaluate(run.report_ids, pass_k=False, report=True)
        report_before = next((r for r in out.read_lines(td.REPORT_FILE) if r["step"] == 0), None)
        report = td.SplitFigures.measured(spec.eval.report_split, report_before, report_after,
                                          paired_se(report_before, report_after))
    if trainer.step_count > 0:  # an evaluation-only run has nothing new to save
        save_weights(run.policy, trainer, out)
    last = out.read_lines(td.METRICS_FILE)[-5:]
    k = spec.eval.pass_k
    return td.ResultMetrics(
        eval=td.SplitFigures.measured(spec.eval.split, before, after, paired_se(before, after)), report=report,
        steps=trainer.step_count, wall_s=round(time.time() - run.t_start, 1), train_s=round(run.train_s, 1),
        reward_mean_last=round(sum(r["reward_mean"] for r in last) / len(last), 4) if last else None,
        pass_k=k, pass_before=before.get(f"pass@{k}") if k and before else None,
        pass_after=after.get(f"pass@{k}") if k else None)


# --- the pieces the phases use -----------------------------------------------------------------
def sft_stage(spec: TrialSpec, env: Any, policy: Any, out: TrialDir) -> None:
    """Optional supervised warm-up on gold SQL before the GRPO steps (the `sft_steps` knob)."""
    import sql_env
    from rl_core.sft import SFTConfig, completion_end_id, train_sft

    gold = {e.id: e.gold_sql for e in sql_env.load_dataset(spec.dataset, spec.train_split)}
    pairs = [(env.prompt(i), gold[i]) for i in env.example_ids(spec.train_split) if i in gold]
    t0 = time.time()
    ticker = Ticker("sft step")
    losses = train_sft(policy.model, policy.tokenizer, pairs,
                       SFTConfig(steps=spec.hparams.sft_steps, lr=spec.hparams.sft_learning_rate,
                                 batch_size=spec.hparams.sft_batch_size, schedule="constant", seed=spec.seed),
                       on_step=lambda step, loss: ticker(step + 1, spec.hparams.sft_steps, f"loss={loss:.3f}"),
                       end_id=completion_end_id(policy.model, policy.tokenizer, policy.prompt_style))
    print(f"sft {len(losses)} steps loss={losses[-1]:.3f} t={time.time() - t0:.1f}s", flush=True)


def evaluate(spec: TrialSpec, engine: Any, env: Any, dev_ids: list[str], out: TrialDir, *, step: int,
             t_start: float, pass_k: bool, report: bool = False, base_key: str | None = None) -> dict[str, Any]:
    """Greedy accuracy on `dev_ids`, appended to eval.jsonl (or, with `report`, to report.jsonl as
    the eval.report_split's row). With `base_key` (the policy is exactly the base) the greedy
    outcomes come from rl_core.evalcache when another run already computed them."""
    from rl_core.evaluate import greedy_accuracy, pass_at_k

    hp = spec.hparams
    split = spec.eval.report_split if report else spec.eval.split

    def greedy() -> dict[str, Any]:
        result = greedy_accuracy(engine, env, dev_ids, max_new_tokens=hp.max_new_tokens,
                                 on_progress=Ticker(f"eval step {step} {split} greedy"))
        return {"accuracy": round(result.accuracy, 4), "stderr": round(result.stderr, 4), "n": result.n,
                "outcomes": {example_id: bool(v.correct) for example_id, _, v in result.items}}

    cached = False
    if base_key is None:
        figures = greedy()
    else:
        figures, cached = cached_row(base_key, greedy)
    row: dict[str, Any] = {"step": step, "split": split, **figures}
    if cached:
        row["cached"] = True  # the base's outcomes, computed by an earlier run with the same key
    if pass_k and spec.eval.pass_k:
        k = spec.eval.pass_k
        pass_ids = dev_ids[: spec.eval.pass_limit or None]
        row[f"pass@{k}"], row["sample_accuracy"] = pass_at_k(
            engine, env, pass_ids, k=k, temperature=hp.temperature, top_p=hp.top_p, max_new_tokens=hp.max_new_tokens,
            on_progress=Ticker(f"eval step {step} pass@{k}"))
        row["pass_n"] = len(pass_ids)
    row["elapsed_s"] = round(time.time() - t_start, 2)
    out.append(td.REPORT_FILE if report else td.EVAL_FILE, row)
    print(f"eval step {step} {split} acc={row['accuracy']:.3f}±{row['stderr']:.3f} n={row['n']}"
          + (" (cached base)" if cached else ""), flush=True)
    return row


class Ticker:
    """Prints `label done/total` when a long phase (SFT, evaluation) has gone 10 s without a word:
    quiet on a laptop-sized run, a heartbeat on a real model's minutes-long one."""

    def __init__(self, label: str, every_s: float = 10.0) -> None:
        self.label, self.every_s = label, every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s and done < total:
            self.last = now
            print(" ".join(filter(None, (self.label, f"{done}/{total}", extra, f"t={now - self.start:.0f}s"))),
                  flush=True)


def log_samples(spec: TrialSpec, env: Any, out: TrialDir, step: int, groups: list[Any]) -> None:
    """A spread of completions with verdicts (one per group, round-robin) on step 1 and every 10th."""
    if not spec.eval.samples or (step != 1 and step % 10 != 0):
        return
    picked = [(g, i) for i in range(spec.hparams.group_size) for g in groups][: spec.eval.samples]
    for group, i in picked:
        res, comp = group.results[i], group.completions[i]
        out.append(td.SAMPLES_FILE, {
            "step": step, "example_id": group.example_id,
            "question": env.question(group.example_id),
            "completion": comp.text, "sql": res.metrics.get("sql"), "status": res.metrics.get("status"),
            "correct": bool(res.correct), "reward": res.reward, "error": res.metrics.get("error")})


def progress_line(spec: TrialSpec, m: dict[str, Any]) -> None:
    total = spec.budget.max_steps if spec.budget.max_steps is not None else "?"
    print(f"step {m['step']}/{total} reward={m['reward_mean']:.2f} acc={m['batch_accuracy']:.2f} "
          f"kl={m['kl']:.3g} t={m['t_step']:.1f}s", flush=True)


def save_checkpoint(out: TrialDir, state: dict[str, Any]) -> None:
    import torch

    out.checkpoints.mkdir(exist_ok=True)
    path = out.checkpoints / f"step_{state['step']}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in out.checkpoints.glob("step_*.pt"):  # keep the newest only: tiny disk, same resume
        if old != path:
            old.unlink()
