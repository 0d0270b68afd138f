"""Seconds per GRPO step: rl_core against TRL's GRPOTrainer at equal settings (not a test).

Same start (builtin:tiny-gemma, full fine-tuning), same reward (DuckDB execution match plus a
small length term, via sql_env.SQLEnvironment; see REWARD), same prompts (the built-in train split, rendered by sql_env), P prompts x
G completions per step, the same completion length cap, temperature, learning rate, one optimizer
step per batch (TRL num_iterations=1 <-> rl_core ppo_epochs=1), no KL, no dynamic sampling.
The two run alternately in one process, in blocks of --block steps, so machine load hits both
alike; each trainer's first step is warm-up and is not counted.

    nice -n 10 .venv/bin/python benchmarks/grpo_vs_trl.py [--steps 12 --block 3]

TRL is installed into the running venv on first use (`pip install trl`); it is not a dependency.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ensure_trl() -> None:
    if importlib.util.find_spec("trl") is None:
        print("installing trl into this venv (benchmark-only dependency)...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "trl"], check=True)


# Execution match plus a small length term: every group has reward variance, so rl_core (which
# skips zero-advantage groups) trains on every group just as TRL does; speed is compared on
# equal work even from a start that rarely answers correctly.
REWARD = {"components": {"execution_match": 1.0, "length_penalty": 0.1},
          "params": {"length_free_chars": 0, "length_scale_chars": 1000}}


def make_env(policy):
    import sql_env

    return sql_env.SQLEnvironment(dataset="builtin", reward=REWARD, prompt_style=policy.prompt_style,
                                  tokenizer=policy.tokenizer)


def rl_core_trainer(args, seed: int):
    import torch

    from rl_core.engine import HFEngine
    from rl_core.policy import load_policy
    from rl_core.spec import HParams
    from rl_core.trainer import GRPOTrainer

    policy = load_policy("builtin:tiny-gemma", lora_rank=0, seed=seed)
    policy.model.requires_grad_(True)
    env = make_env(policy)
    hp = HParams(prompts_per_step=args.prompts, group_size=args.group, max_new_tokens=args.max_new_tokens,
                 temperature=args.temperature, learning_rate=args.lr, warmup_steps=0, ppo_epochs=1,
                 dynamic_sampling=False, loss_type="grpo", scale_rewards=False, kl_beta=0.0)
    torch.manual_seed(seed)
    return GRPOTrainer(policy.model, env, HFEngine(policy.model, policy.tokenizer), hp, env.example_ids("train"),
                       seed=seed, pad_id=policy.tokenizer.pad_token_id)


def trl_trainer(args, seed: int, on_step_end):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rl_core.policy import load_policy

    policy = load_policy("builtin:tiny-gemma", lora_rank=0, seed=seed)
    policy.model.requires_grad_(True)
    env = make_env(policy)
    ids = env.example_ids("train")
    dataset = Dataset.from_dict({"prompt": [env.prompt(i) for i in ids], "example_id": ids})

    def execution_reward(prompts, completions, example_id, **_):
        return [env.score(eid, [text])[0].reward for eid, text in zip(example_id, completions, strict=True)]

    class Alternate(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            on_step_end(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir="/tmp/grpo_vs_trl", use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        logging_steps=1000, seed=seed, max_steps=args.steps, learning_rate=args.lr, warmup_steps=0,
        lr_scheduler_type="constant", max_grad_norm=1.0, per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=args.group, num_iterations=1,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0, beta=0.0,
        loss_type="grpo", scale_rewards="none", epsilon=0.2, epsilon_high=0.28, dataloader_num_workers=0,
        disable_dropout=True)
    return GRPOTrainer(model=policy.model, reward_funcs=execution_reward, args=config, train_dataset=dataset,
                       processing_class=policy.tokenizer, callbacks=[Alternate()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="steps per trainer (first one is warm-up)")
    parser.add_argument("--block", type=int, default=3, help="steps per turn before switching trainer")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_trl()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ours = rl_core_trainer(args, args.seed)
    times: dict[str, list[float]] = {"rl_core": [], "trl": []}

    def run_ours(n: int) -> None:
        for _ in range(n):
            metrics, _ = ours.step()
            times["rl_core"].append(metrics["t_step"])
            print(f"rl_core step {len(times['rl_core'])}: {metrics['t_step']:.2f}s "
                  f"(generate {metrics['t_generate']:.1f}s, train {metrics['t_train']:.1f}s, "
                  f"{metrics['groups_trained']}/{metrics['groups_generated']} groups trained)", flush=True)

    def after_trl_step(seconds: float) -> None:
        times["trl"].append(seconds)
        print(f"trl step {len(times['trl'])}: {seconds:.2f}s", flush=True)
        if len(times["trl"]) % args.block == 0:  # TRL finished a block: rl_core's turn
            run_ours(args.block)

    theirs = trl_trainer(args, args.seed, after_trl_step)
    run_ours(args.block)  # rl_core starts, then the callback alternates
    theirs.train()
    run_ours(max(0, args.steps - len(times["rl_core"])))
    ours_s = statistics.mean(times["rl_core"][1:])
    trl_s = statistics.mean(times["trl"][1:])
    print(f"settings: {args.prompts} prompts x {args.group} completions, max_new_tokens {args.max_new_tokens}, "
          f"T={args.temperature}, lr {args.lr}, full fine-tuning, 1 optimizer step per batch, no KL; "
          f"{len(times['rl_core']) - 1} + {len(times['trl']) - 1} timed steps, torch threads {torch.get_num_threads()}")
    print(f"rl_core: {ours_s:.2f} s/step (median {statistics.median(times['rl_core'][1:]):.2f})")
    print(f"TRL {importlib.import_module('trl').__version__} GRPOTrainer: {trl_s:.2f} s/step "
          f"(median {statistics.median(times['trl'][1:]):.2f})")
    print(f"ratio TRL / rl_core: {trl_s / ours_s:.2f}x  (target >= 1.3x)")


if __name__ == "__main__":
    main()
