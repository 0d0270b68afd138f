"""Run one trial: `python -m rl_core.trial spec.json --out DIR [--resume]` or `run_trial(spec, out)`.

The phases themselves (prepare, start, train, finish) are rl_core/runner.py's; this module loads the
policy and the environment, runs the phases, and turns every outcome into a result file.
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
from rl_core.branching import lineage
from rl_core.runner import TrialDir, TrialError, _Stop, classify, finish, prepare, start, train
from rl_core.sessiondir import single_trial_dir
from rl_core.spec import SpecError, TrialSpec

__all__ = ["TrialError", "classify", "main", "run_trial"]  # classify is the runner's: the errors' one map


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
            return out.refuse(spec, exc)
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
        result = out.fail(spec, exc, t_start)
        if result["error"]["kind"] == "crash":
            traceback.print_exc(file=sys.stderr)
        return result
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
        run = prepare(spec, out, policy, env, t_start)
        before = start(run, resume=resume)
        train(run)
        return finish(run, before)
    finally:
        env.close()  # sandboxes hold DuckDB connections and worker threads or processes


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
