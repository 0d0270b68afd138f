"""GRPO on the built-in text-to-SQL benchmark, written only against the tinker SDK.

    openrl-agent serve --model builtin:tiny-gemma            # in one terminal (or any Tinker endpoint)
    TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-local \
        python examples/tinker_grpo.py --steps 30             # in another

Training and sampling go through the SDK only; the environment (prompts, DuckDB-verified rewards)
is this project's `sql_env`, run by the client. One step:

1. `save_weights_and_get_sampling_client()`: a sampler on a snapshot of the current adapter.
2. G completions for each of P train prompts at temperature 1 (the sampler's log-probs are the
   model's own at T = 1, so the importance ratio starts at exactly 1), stopping at the SQL's end.
3. Rewards from `sql_env`; advantages r - mean(group); groups without reward spread are dropped.
4. One `forward_backward` with the `ppo` loss on datums (prompt + completion, targets shifted by
   one, the sampler's log-probs, the advantage on completion tokens and 0 on the prompt), then
   `optim_step`. Tinker's losses are sums over tokens, so the aggregation is put into the
   advantages: `dapo` divides each by the batch's completion-token count (a token mean), `grpo`
   by (completion length x number of sequences) (a mean per sequence, then over sequences).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import tinker
from tinker import types


def scaled_advantages(adv: list[float], lengths: list[int], aggregation: str) -> list[float]:
    """Per-sequence advantages divided so that a per-token SUM equals the project's aggregation."""
    if aggregation == "dapo":
        total = max(sum(lengths), 1)
        return [a / total for a in adv]
    if aggregation == "grpo":
        return [a / (max(n, 1) * len(adv)) for a, n in zip(adv, lengths, strict=True)]
    raise ValueError(f"aggregation must be dapo or grpo, got {aggregation!r}")


def rl_datum(prompt: list[int], seq, advantage: float) -> types.Datum:
    """Inputs prompt + completion[:-1]; targets shifted by one; loss only on completion tokens."""
    tokens = list(seq.tokens)
    n_prompt = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(prompt + tokens[:-1]),
        loss_fn_inputs={"target_tokens": prompt[1:] + tokens,
                        "logprobs": [0.0] * n_prompt + list(seq.logprobs),
                        "advantages": [0.0] * n_prompt + [advantage] * len(tokens)})


def grpo_step(tc, tokenizer, env, ids: list[str], args) -> dict[str, float]:
    sampler = tc.save_weights_and_get_sampling_client().result()
    params = types.SamplingParams(max_tokens=args.max_tokens, temperature=1.0, stop=list(env.stop_strings) or None)
    prompts = {i: tokenizer.encode(env.prompt(i)) for i in ids}
    futures = {i: sampler.sample(types.ModelInput.from_ints(prompts[i]), args.group_size, params) for i in ids}
    groups, rewards, correct = [], [], []
    for i, fut in futures.items():
        seqs = fut.result().sequences
        scores = env.score(i, [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in seqs])
        r = [s.reward for s in scores]
        rewards += r
        correct += [s.correct for s in scores]
        if max(r) - min(r) > 1e-8:
            groups.append((prompts[i], seqs, [x - statistics.fmean(r) for x in r]))
    metrics = {"reward_mean": statistics.fmean(rewards), "batch_accuracy": statistics.fmean(correct),
               "groups_kept": len(groups)}
    if groups:
        flat = [(p, s, a) for p, seqs, adv in groups for s, a in zip(seqs, adv, strict=True)]
        scaled = scaled_advantages([a for _, _, a in flat], [len(s.tokens) for _, s, _ in flat], args.aggregation)
        data = [rl_datum(p, s, a) for (p, s, _), a in zip(flat, scaled, strict=True)]
        fb = tc.forward_backward(data, "ppo", loss_fn_config={"clip_low_threshold": 1 - args.clip,
                                                              "clip_high_threshold": 1 + args.clip})
        op = tc.optim_step(types.AdamParams(learning_rate=args.lr, grad_clip_norm=1.0))
        metrics["loss"] = fb.result().metrics["loss:sum"]
        op.result()
    return metrics


def accuracy(tc, tokenizer, env, ids: list[str], max_tokens: int) -> float:
    sampler = tc.save_weights_and_get_sampling_client().result()
    greedy = types.SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=list(env.stop_strings) or None)
    futures = {i: sampler.sample(types.ModelInput.from_ints(tokenizer.encode(env.prompt(i))), 1, greedy) for i in ids}
    hits = [env.score(i, [tokenizer.decode(f.result().sequences[0].tokens, skip_special_tokens=True)])[0].correct
            for i, f in futures.items()]
    return statistics.fmean(hits)


def run(args, base_url: str | None = None, log=print) -> list[dict[str, float]]:
    from sql_env import SQLEnvironment  # the reward: DuckDB-verified execution match

    service = tinker.ServiceClient(base_url=base_url)
    env = SQLEnvironment(dataset="builtin", prompt_style="plain")
    history = []
    try:
        tc = service.create_lora_training_client(base_model=args.model, rank=args.rank, seed=args.seed).result()
        tokenizer = tc.get_tokenizer()
        rng = random.Random(args.seed)
        train = list(env.example_ids("train"))
        dev = list(env.example_ids("dev"))[:args.eval]
        if dev:
            log(f"dev accuracy before: {accuracy(tc, tokenizer, env, dev, args.max_tokens):.3f} (n={len(dev)})")
        for step in range(args.steps):
            t0 = time.perf_counter()
            m = grpo_step(tc, tokenizer, env, rng.sample(train, args.prompts), args)
            m["step_s"] = time.perf_counter() - t0
            history.append(m)
            log(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
        if dev:
            log(f"dev accuracy after: {accuracy(tc, tokenizer, env, dev, args.max_tokens):.3f} (n={len(dev)})")
    finally:
        env.close()
        service.close("success").result()
    return history


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="builtin:tiny-gemma")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (P)")
    p.add_argument("--group-size", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--aggregation", choices=("dapo", "grpo"), default="dapo")
    p.add_argument("--eval", type=int, default=100, help="dev examples scored greedily before and after (0: none)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    run(parse())
