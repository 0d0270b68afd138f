"""A trial run as a client of a Tinker-compatible endpoint (this project's `openrl-agent serve` or
another): `python -m rl_core.serve.client_trial <spec.json> --out DIR --endpoint URL`.

The trial directory is the one `rl_core.trial` writes (spec.json, metrics.jsonl, eval.jsonl with
per-question outcomes, samples.jsonl, result.json through `rl_core.trialdir`), so launchers, the
leaderboard and the report read it unchanged. The model, its training and its sampling live behind
the endpoint; this process holds the tokenizer and the environment (DuckDB rewards) only.

The GRPO step is the trainer's (rl_core/grpo.py) as Tinker operations: a sampler snapshot, G
completions per prompt (dynamic sampling keeps groups with reward spread, up to sampling_rounds
draws), group-relative advantages, then `ppo_epochs` x (`forward_backward` with the `ppo` loss and
advantages pre-scaled for `loss_type`, `optim_step` with the step's learning rate). Departures:
log-probs are the endpoint's, at temperature 1 (the trainer's are tempered); no KL penalty, entropy
bonus, supervised stage, parent weights, report split or resume (a spec that asks is refused as
bad_spec); the LoRA alpha is the endpoint's; `entropy` is estimated as the mean negative log-prob
of the sampled tokens. The final weights stay on the endpoint (`tinker.json` names them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_core import trialdir as td
from rl_core.branching import paired_se
from rl_core.engine import Completion, encode_prompt
from rl_core.runner import TrialDir, TrialError, evaluate, log_samples
from rl_core.spec import SpecError, TrialSpec

SCALE = {"dapo": lambda n, lengths, S, T: n, "grpo": lambda n, lengths, S, T: lengths * S,
         "dr_grpo": lambda n, lengths, S, T: S * T}


@dataclass
class TinkerCompletion(Completion):
    logprobs: list[float] | None = None


@dataclass
class Group:  # what log_samples reads
    example_id: str
    completions: list[TinkerCompletion]
    results: list[Any]


class TinkerEngine:
    """rl_core.engine.Engine over a Tinker sampler: `sync()` snapshots the current weights."""

    def __init__(self, training_client: Any, tokenizer: Any, stop_strings: tuple[str, ...]) -> None:
        self.tc, self.tokenizer, self.stop = training_client, tokenizer, list(stop_strings) or None
        self.sync()

    def sync(self) -> None:
        self.sampler = self.tc.save_weights_and_get_sampling_client().result()

    def generate(self, prompts, *, n: int, temperature: float, top_p: float, max_new_tokens: int):
        from tinker import types

        params = types.SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=self.stop)
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        futures = [self.sampler.sample(types.ModelInput.from_ints(i), n, params) for i in ids]
        return [[TinkerCompletion(i, list(s.tokens), self.tokenizer.decode(list(s.tokens), skip_special_tokens=True),
                                  s.stop_reason == "stop", list(s.logprobs or []))
                 for s in f.result().sequences] for i, f in zip(ids, futures, strict=True)]


def check_supported(spec: TrialSpec) -> None:
    hp = spec.hparams
    asked = {"hparams.kl_beta": hp.kl_beta > 0, "hparams.entropy_coef": hp.entropy_coef > 0,
             "hparams.sft_steps": hp.sft_steps > 0, "hparams.engine=vllm": hp.engine != "hf",
             "init_from": bool(spec.init_from.weights), "eval.report_split": bool(spec.eval.report_split)}
    refused = [k for k, v in asked.items() if v]
    if refused:
        raise TrialError("bad_spec", f"the tinker launcher does not run {', '.join(refused)}: use the local or "
                                     "k8s launcher for these")
    if hp.lora_rank < 1:
        raise TrialError("bad_spec", "the tinker launcher trains LoRA adapters only: set hparams.lora_rank >= 1")


def collect(engine: TinkerEngine, env: Any, sampler: Any, hp: Any, t_score: list[float]
            ) -> tuple[list[Group], list[Group]]:
    generated, kept = [], []
    for _ in range(hp.sampling_rounds if hp.dynamic_sampling else 1):
        ids = sampler.take(hp.prompts_per_step)
        outs = engine.generate([env.prompt(i) for i in ids], n=hp.group_size, temperature=hp.temperature,
                               top_p=hp.top_p, max_new_tokens=hp.max_new_tokens)
        t0 = time.perf_counter()
        scores = env.score_many([(i, [c.text for c in cs]) for i, cs in zip(ids, outs, strict=True)])
        t_score.append(time.perf_counter() - t0)
        for i, cs, rs in zip(ids, outs, scores, strict=True):
            group = Group(i, cs, list(rs))
            sampler.observe(i, [r.reward for r in rs], [r.correct for r in rs])  # the curriculum learns
            generated.append(group)
            spread = max(r.reward for r in rs) - min(r.reward for r in rs) > 1e-8
            if spread or not hp.dynamic_sampling:
                kept.append(group)
        if len(kept) >= hp.prompts_per_step or not hp.dynamic_sampling:
            break
    return generated, kept[: hp.prompts_per_step]


def datums(groups: list[Group], hp: Any) -> list[Any]:
    """One ppo datum per completion, its advantage divided so a token sum is the `loss_type` aggregate."""
    import torch
    from tinker import types

    from rl_core.grpo import group_advantages

    adv_PG = group_advantages(torch.tensor([[r.reward for r in g.results] for g in groups]), scale=hp.scale_rewards)
    comps = [c for g in groups for c in g.completions]
    n_tokens = sum(len(c.token_ids) for c in comps)
    data = []
    for c, a in zip(comps, adv_PG.reshape(-1).tolist(), strict=True):
        scale = SCALE[hp.loss_type](n_tokens, len(c.token_ids), len(comps), hp.max_new_tokens)
        n_prompt = len(c.prompt_ids) - 1
        data.append(types.Datum(model_input=types.ModelInput.from_ints(c.prompt_ids + c.token_ids[:-1]),
                                loss_fn_inputs={"target_tokens": c.prompt_ids[1:] + c.token_ids,
                                                "logprobs": [0.0] * n_prompt + (c.logprobs or []),
                                                "advantages": [0.0] * n_prompt + [a / max(scale, 1)] * len(c.token_ids)}))
    return data


def grpo_step(tc: Any, engine: TinkerEngine, env: Any, sampler: Any, hp: Any, step: int, total: int | None) -> tuple[dict, list]:
    from tinker import types

    from rl_core.trainer import lr_factor

    t0 = time.perf_counter()
    engine.sync()
    t_score: list[float] = []
    generated, kept = collect(engine, env, sampler, hp, t_score)
    t1 = time.perf_counter()
    lr = hp.learning_rate * lr_factor(step, hp.warmup_steps, hp.schedule, total)
    train = {"loss": 0.0, "grad_norm": 0.0}
    if kept:
        data, config = datums(kept, hp), {"clip_low_threshold": 1 - hp.clip_eps_low, "clip_high_threshold": 1 + hp.clip_eps_high}
        adam = types.AdamParams(learning_rate=lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=hp.weight_decay,
                                grad_clip_norm=hp.grad_clip)
        for _ in range(hp.ppo_epochs):
            fb, op = tc.forward_backward(data, "ppo", loss_fn_config=config), tc.optim_step(adam)
            train["loss"] = fb.result().metrics.get("loss:sum", 0.0)
            train["grad_norm"] = (op.result().metrics or {}).get("grad_norm", 0.0)
    comps = [(c, r) for g in generated for c, r in zip(g.completions, g.results, strict=True)]
    lps = [lp for c, _ in comps for lp in (c.logprobs or [])]
    metrics = {"step": step + 1, "reward_mean": statistics.fmean(r.reward for _, r in comps),
               "batch_accuracy": statistics.fmean(bool(r.correct) for _, r in comps),
               "kl": 0.0, "entropy": -statistics.fmean(lps) if lps else 0.0, "clip_frac": 0.0,
               "completion_len": statistics.fmean(len(c.token_ids) for c, _ in comps), **train, "lr": lr,
               "groups_kept": len(kept), "t_generate": round(t1 - t0 - sum(t_score), 3), "t_score": round(sum(t_score), 3), "t_train": round(time.perf_counter() - t1, 3)}
    for name in comps[0][1].components if comps else ():
        metrics[f"reward/{name}"] = statistics.fmean(r.components.get(name, 0.0) for _, r in comps)
    metrics["t_step"] = round(time.perf_counter() - t0, 3)
    return metrics, generated


def execute(spec: TrialSpec, out: TrialDir, endpoint: str | None, t_start: float) -> td.ResultMetrics:
    import tinker

    import sql_env
    from rl_core.curriculum import make_sampler

    check_supported(spec)
    service = tinker.ServiceClient(base_url=endpoint)
    hp = spec.hparams
    try:
        tc = service.create_lora_training_client(base_model=spec.model, rank=hp.lora_rank, seed=spec.seed).result()
        tokenizer = tc.get_tokenizer()
        reward = sql_env.RewardSpec.from_json({"components": spec.reward.components, "params": spec.reward.params})
        env = sql_env.SQLEnvironment(dataset=spec.dataset, reward=reward, prompt_style="plain", tokenizer=tokenizer)
        try:
            engine = TinkerEngine(tc, tokenizer, tuple(env.stop_strings))
            dev_ids = list(env.example_ids(spec.eval.split))[: spec.eval.limit or None]
            sampler = make_sampler(hp.curriculum, list(env.example_ids(spec.train_split)), spec.seed)
            for name in (td.METRICS_FILE, td.SAMPLES_FILE, td.EVAL_FILE):
                (out.root / name).unlink(missing_ok=True)
            before = evaluate(spec, engine, env, dev_ids, out, step=0, t_start=t_start, pass_k=True)
            steps, train_s = 0, 0.0
            budget = spec.budget
            while (budget.max_steps is None or steps < budget.max_steps) and \
                    (budget.max_seconds is None or train_s < budget.max_seconds):
                metrics, groups = grpo_step(tc, engine, env, sampler, hp, steps, budget.max_steps)
                steps, train_s = steps + 1, train_s + metrics["t_step"]
                metrics["elapsed_s"] = round(time.time() - t_start, 2)
                out.append(td.METRICS_FILE, metrics)
                log_samples(spec, env, out, steps, groups)
                print(f"step {steps} reward={metrics['reward_mean']:.2f} t={metrics['t_step']:.1f}s", flush=True)
            engine.sync()
            after = evaluate(spec, engine, env, dev_ids, out, step=steps, t_start=t_start, pass_k=True)
            saved = tc.save_state(f"{spec.trial_id}-final").result().path
            td.write_json_atomic(out.root / "tinker.json", {"endpoint": endpoint, "model_id": tc.model_id, "weights": saved})
        finally:
            env.close()
    finally:
        service.close("success").result()
    last = out.read_lines(td.METRICS_FILE)[-5:]
    k = spec.eval.pass_k
    return td.ResultMetrics(
        eval=td.SplitFigures.measured(spec.eval.split, before, after, paired_se(before, after)), steps=steps,
        wall_s=round(time.time() - t_start, 1), train_s=round(train_s, 1),
        reward_mean_last=round(statistics.fmean(r["reward_mean"] for r in last), 4) if last else None,
        pass_k=k, pass_before=before.get(f"pass@{k}") if k else None, pass_after=after.get(f"pass@{k}") if k else None)


def run(spec_path: str, out_dir: str, endpoint: str | None) -> dict[str, Any]:
    out, t_start = TrialDir(Path(out_dir)), time.time()
    try:
        spec = TrialSpec.load(spec_path)
    except SpecError as exc:
        return out.refuse(None, exc)
    spec.save(out.root / td.SPEC_FILE)
    try:
        return out.result(spec, "succeeded", None, execute(spec, out, endpoint, t_start))
    except Exception as exc:
        return out.fail(spec, exc, t_start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rl_core.serve.client_trial", description=__doc__.splitlines()[0])
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument("--endpoint", default=None, help="the Tinker API base URL (default: $TINKER_BASE_URL)")
    a = p.parse_args(argv)
    return 0 if run(a.spec, a.out, a.endpoint)["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
