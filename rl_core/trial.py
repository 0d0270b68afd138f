"""Run one trial: `python -m rl_core.trial spec.json --out DIR [--resume]` or `run_trial(spec, out)`.

The trial directory follows docs/contracts.md: spec.json, metrics.jsonl, eval.jsonl,
samples.jsonl, adapter/, checkpoints/, and result.json written last and atomically. Every
failure becomes a `failed` result with a classified error (bad_spec, oom, nan_loss, model_load,
timeout, crash) instead of a traceback, so the agent can read what went wrong.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rl_core import trialdir as td
from rl_core.branching import before_from_parent, lineage, paired_se, restore_parent_optimizer, save_weights
from rl_core.sessiondir import single_trial_dir
from rl_core.spec import SpecError, TrialSpec


class TrialError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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

    def result(self, spec: TrialSpec, status: str, error: dict[str, str] | None,
               metrics: td.ResultMetrics, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
        weights = td.WEIGHTS_DIR if (self.root / td.WEIGHTS_DIR).exists() else None
        result = td.make_result(spec.trial_id, status, metrics=metrics, error=error, spec=spec.to_json(),
                                adapter_path=weights, lineage=lineage)
        td.write_result(self.root, result)
        return result


def run_trial(spec: TrialSpec | dict[str, Any], out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Run a trial to completion and return its result (also written to out_dir/result.json).

    Never raises for trial failures: they come back as status "failed" with a classified error.
    """
    out = TrialDir(Path(out_dir))
    t_start = time.time()
    if isinstance(spec, dict):
        try:
            spec = TrialSpec.from_json(spec)
        except SpecError as exc:
            result = td.failed_result(spec, "bad_spec", str(exc))
            td.write_result(out.root, result)
            return result
    done = out.read_result()
    if resume and done is not None and done.get("status") == "succeeded" and done.get("spec") == spec.to_json():
        return done  # nothing left to do (a changed spec, e.g. a larger budget, continues instead)
    (out.root / td.RESULT_FILE).unlink(missing_ok=True)
    spec.save(out.root / td.SPEC_FILE)
    previous = signal.signal(signal.SIGTERM, _raise_stop) if _in_main_thread() else None
    try:
        metrics = execute(spec, out, resume=resume, t_start=t_start)
        return out.result(spec, "succeeded", None, metrics, lineage=lineage(spec, metrics.to_json()))
    except (Exception, _Stop) as exc:
        kind, message = classify(exc)
        print(f"trial {spec.trial_id} failed ({kind}): {message}", file=sys.stderr, flush=True)
        if kind == "crash":
            traceback.print_exc(file=sys.stderr)
        return out.result(spec, "failed", {"kind": kind, "message": message},
                          td.ResultMetrics(wall_s=round(time.time() - t_start, 1)))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def execute(spec: TrialSpec, out: TrialDir, *, resume: bool, t_start: float) -> td.ResultMetrics:
    """Set up, evaluate, train within budget, evaluate again; returns result.json's metrics."""
    import torch

    torch.manual_seed(spec.seed)
    reward = _reward_spec(spec)  # fail on a bad reward before paying for the model
    policy = _load_policy(spec)
    env = _build_env(spec, policy, reward)
    try:
        return _train_and_evaluate(spec, out, policy, env, resume=resume, t_start=t_start)
    finally:
        env.close()  # sandboxes hold DuckDB connections and worker threads or processes


def _train_and_evaluate(spec: TrialSpec, out: TrialDir, policy: Any, env: Any, *, resume: bool,
                        t_start: float) -> dict[str, Any]:
    import torch

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
    subset_ids = dev_ids[: spec.eval.subset or None]  # intermediate evals: a small fixed subset
    clock = _Clock()
    checkpoint = out.latest_checkpoint() if resume else None
    if checkpoint is not None:
        state = torch.load(checkpoint, weights_only=False, map_location="cpu")  # the RNG state must stay a CPU tensor
        trainer.load_state_dict(state)
        clock.train_s = state["train_s"]
        for name in (td.METRICS_FILE, td.SAMPLES_FILE, td.EVAL_FILE, td.REPORT_FILE):
            out.truncate_after(name, trainer.step_count)
        print(f"resumed from {checkpoint.name} (step {trainer.step_count})", flush=True)
    else:
        for name in (td.METRICS_FILE, td.SAMPLES_FILE, td.EVAL_FILE, td.REPORT_FILE):
            (out.root / name).unlink(missing_ok=True)
        if hp.sft_steps:
            _sft_stage(spec, env, policy, out)
        restore_parent_optimizer(spec, trainer)
        evaluate_only = spec.budget.max_steps == 0  # the final evaluation is all there is
        if not evaluate_only and (spec.eval.before or not before_from_parent(spec, dev_ids, out)):
            _evaluate(spec, engine, env, dev_ids, out, step=0, t_start=t_start, pass_k=True)
        if not evaluate_only and report_ids:
            _evaluate(spec, engine, env, report_ids, out, step=0, t_start=t_start, pass_k=False, report=True)
    before = next((r for r in out.read_lines(td.EVAL_FILE) if r["step"] == 0), None)
    budget = spec.budget
    while (budget.max_steps is None or trainer.step_count < budget.max_steps) and \
            (budget.max_seconds is None or clock.train_s < budget.max_seconds):
        metrics, groups = trainer.step()
        clock.train_s += metrics["t_step"]
        metrics["elapsed_s"] = round(time.time() - t_start, 2)
        out.append(td.METRICS_FILE, metrics)
        _log_samples(spec, env, out, metrics["step"], groups)
        _progress(spec, metrics)
        step = trainer.step_count
        if spec.eval.every_steps and step % spec.eval.every_steps == 0 and step != budget.max_steps:
            _evaluate(spec, engine, env, subset_ids, out, step=step, t_start=t_start, pass_k=False)
        if budget.checkpoint_every and step % budget.checkpoint_every == 0:
            _save_checkpoint(out, {**trainer.state_dict(), "train_s": clock.train_s})
    after = _evaluate(spec, engine, env, dev_ids, out, step=trainer.step_count, t_start=t_start, pass_k=True)
    if report_ids:
        report_after = _evaluate(spec, engine, env, report_ids, out, step=trainer.step_count, t_start=t_start,
                                 pass_k=False, report=True)
    if trainer.step_count > 0:  # an evaluation-only run has nothing new to save
        save_weights(policy, trainer, out)
    rows = out.read_lines(td.METRICS_FILE)
    last = rows[-5:]
    report = None
    if report_ids:
        report_before = next((r for r in out.read_lines(td.REPORT_FILE) if r["step"] == 0), None)
        report = td.SplitFigures.measured(spec.eval.report_split, report_before, report_after,
                                          paired_se(report_before, report_after))
    k = spec.eval.pass_k
    return td.ResultMetrics(
        eval=td.SplitFigures.measured(spec.eval.split, before, after, paired_se(before, after)), report=report,
        steps=trainer.step_count, wall_s=round(time.time() - t_start, 1), train_s=round(clock.train_s, 1),
        reward_mean_last=round(sum(r["reward_mean"] for r in last) / len(last), 4) if last else None,
        pass_k=k, pass_before=before.get(f"pass@{k}") if k and before else None,
        pass_after=after.get(f"pass@{k}") if k else None)


class _Clock:
    train_s: float = 0.0  # seconds spent in GRPO steps: the budget counts these, not evals


def _load_policy(spec: TrialSpec) -> Any:
    from rl_core.policy import PolicyLoadError, load_policy, resolve_device

    hp = spec.hparams
    try:
        device = resolve_device(spec.device)
    except PolicyLoadError as exc:  # checked before paying for the model
        raise TrialError("bad_spec", str(exc)) from exc
    try:
        policy = load_policy(spec.model, init_weights=spec.init_from.weights or None,
                             continue_adapter=spec.init_from.optimizer,
                             lora_rank=hp.lora_rank, lora_alpha=hp.lora_alpha,
                             lora_dropout=hp.lora_dropout, target_modules=hp.target_modules, seed=spec.seed)
    except Exception as exc:  # a model that cannot load is the spec's problem, classified apart
        raise TrialError("model_load", f"{type(exc).__name__}: {exc}") from exc
    if hp.lora_rank == 0:
        policy.model.requires_grad_(True)
    policy.model.to(device)
    print(f"policy {spec.model} on {device}", flush=True)
    return policy


def _reward_spec(spec: TrialSpec) -> Any:
    import sql_env

    try:
        return sql_env.RewardSpec.from_json({"components": spec.reward.components, "params": spec.reward.params})
    except ValueError as exc:
        raise TrialError("bad_spec", f"reward: {exc}") from exc


def _build_env(spec: TrialSpec, policy: Any, reward: Any) -> Any:
    import sql_env

    try:
        return sql_env.SQLEnvironment(dataset=spec.dataset, reward=reward, prompt_style=policy.prompt_style,
                                      tokenizer=policy.tokenizer)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise TrialError("bad_spec", str(exc)) from exc


def _sft_stage(spec: TrialSpec, env: Any, policy: Any, out: TrialDir) -> None:
    """Optional supervised warm-up on gold SQL before the GRPO steps (the `sft_steps` knob)."""
    import sql_env
    from rl_core.sft import SFTConfig, completion_end_id, train_sft

    gold = {e.id: e.gold_sql for e in sql_env.load_dataset(spec.dataset, spec.train_split)}
    pairs = [(env.prompt(i), gold[i]) for i in env.example_ids(spec.train_split) if i in gold]
    t0 = time.time()
    ticker = _Ticker("sft step")
    losses = train_sft(policy.model, policy.tokenizer, pairs,
                       SFTConfig(steps=spec.hparams.sft_steps, lr=spec.hparams.sft_learning_rate,
                                 batch_size=spec.hparams.sft_batch_size, schedule="constant", seed=spec.seed),
                       on_step=lambda step, loss: ticker(step + 1, spec.hparams.sft_steps, f"loss={loss:.3f}"),
                       end_id=completion_end_id(policy.model, policy.tokenizer, policy.prompt_style))
    print(f"sft {len(losses)} steps loss={losses[-1]:.3f} t={time.time() - t0:.1f}s", flush=True)


def _evaluate(spec: TrialSpec, engine: Any, env: Any, dev_ids: list[str], out: TrialDir, *, step: int,
              t_start: float, pass_k: bool, report: bool = False) -> dict[str, Any]:
    """Greedy accuracy on `dev_ids`, appended to eval.jsonl (or, with `report`, to report.jsonl as
    the eval.report_split's row)."""
    from rl_core.evaluate import greedy_accuracy, pass_at_k

    hp = spec.hparams
    split = spec.eval.report_split if report else spec.eval.split
    result = greedy_accuracy(engine, env, dev_ids, max_new_tokens=hp.max_new_tokens,
                             on_progress=_Ticker(f"eval step {step} {split} greedy"))
    row: dict[str, Any] = {"step": step, "split": split, "accuracy": round(result.accuracy, 4),
                           "stderr": round(result.stderr, 4), "n": result.n,
                           "outcomes": {example_id: bool(v.correct) for example_id, _, v in result.items}}
    if pass_k and spec.eval.pass_k:
        k = spec.eval.pass_k
        pass_ids = dev_ids[: spec.eval.pass_limit or None]
        row[f"pass@{k}"], row["sample_accuracy"] = pass_at_k(
            engine, env, pass_ids, k=k, temperature=hp.temperature, top_p=hp.top_p, max_new_tokens=hp.max_new_tokens,
            on_progress=_Ticker(f"eval step {step} pass@{k}"))
        row["pass_n"] = len(pass_ids)
    row["elapsed_s"] = round(time.time() - t_start, 2)
    out.append(td.REPORT_FILE if report else td.EVAL_FILE, row)
    print(f"eval step {step} {split} acc={row['accuracy']:.3f}±{row['stderr']:.3f} n={row['n']}", flush=True)
    return row


class _Ticker:
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


def _log_samples(spec: TrialSpec, env: Any, out: TrialDir, step: int, groups: list[Any]) -> None:
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


def _progress(spec: TrialSpec, m: dict[str, Any]) -> None:
    total = spec.budget.max_steps if spec.budget.max_steps is not None else "?"
    print(f"step {m['step']}/{total} reward={m['reward_mean']:.2f} acc={m['batch_accuracy']:.2f} "
          f"kl={m['kl']:.3g} t={m['t_step']:.1f}s", flush=True)


def _save_checkpoint(out: TrialDir, state: dict[str, Any]) -> None:
    import torch

    out.checkpoints.mkdir(exist_ok=True)
    path = out.checkpoints / f"step_{state['step']}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in out.checkpoints.glob("step_*.pt"):  # keep the newest only: tiny disk, same resume
        if old != path:
            old.unlink()


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl_core.trial", description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="trial spec JSON (see examples/trial.json)")
    parser.add_argument("--out", default=None, help="trial directory (default: runs/trials/<trial_id>)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    args = parser.parse_args(argv)
    try:
        spec = TrialSpec.load(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.out is not None:  # a launcher waits for result.json: tell it why nothing ran
            td.write_result(Path(args.out), td.failed_result(_raw_json(args.spec), "bad_spec", str(exc)))
        return 2
    result = run_trial(spec, args.out or single_trial_dir(spec.trial_id), resume=args.resume)
    return 0 if result["status"] == "succeeded" else 1


def _raw_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    sys.exit(main())
