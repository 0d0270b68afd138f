"""The KL reference is the policy GRPO starts from: after a supervised stage, and after a resume."""

import json

import pytest
import torch

from rl_core.engine import HFEngine
from rl_core.env import StepResult
from rl_core.sft import SFTConfig, train_sft
from rl_core.trainer import GRPOTrainer
from rl_core.trial import run_trial
from tests.rl_core.test_engine import tiny_gemma, tiny_tokenizer
from tests.rl_core.test_trainer import CountA, hp

PAIRS = [("say cat:", "aaa"), ("say dog:", "dog;"), ("say sea:", "sea a"), ("say sky:", "sky")]


def sft_policy(lora: bool, seed: int = 0, sft_steps: int = 8):
    """A tiny Gemma (LoRA-wrapped or fully trainable) after `sft_steps` supervised steps."""
    tok = tiny_tokenizer()
    model = tiny_gemma(len(tok), seed=seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    else:
        model.requires_grad_(True)
    train_sft(model, tok, PAIRS, SFTConfig(steps=sft_steps, batch_size=4, lr=1e-2, warmup_steps=1))
    return model, tok


def trainer_for(model, tok, **kw):
    env = CountA()
    return GRPOTrainer(model, env, HFEngine(model, tok), hp(**kw), env.example_ids("train"), seed=0,
                       pad_id=tok.pad_token_id, total_steps=20)


def batch_of(trainer, groups):
    return trainer._collate([(g.completions[0].prompt_ids, [c.token_ids for c in g.completions]) for g in groups])


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_k3_kl_is_zero_before_the_first_grpo_step_after_sft(lora):
    model, tok = sft_policy(lora)
    trainer = trainer_for(model, tok, kl_beta=0.1, ppo_epochs=1)
    torch.manual_seed(0)
    generated, _, _ = trainer.collect()
    # one epoch: the logged KL is measured before the optimizer step, against the reference
    assert trainer.update(generated)["kl_ref"] == pytest.approx(0.0, abs=1e-7)


def test_resumed_trainer_keeps_the_post_sft_reference():
    model, tok = sft_policy(lora=True)
    a = trainer_for(model, tok, kl_beta=0.1)
    torch.manual_seed(0)
    generated, _, _ = a.collect()
    batch = batch_of(a, generated)
    with torch.no_grad():
        start_logp = a._log_probs(a.model, batch)[0]
    for group in generated:  # distinct rewards: every group carries a gradient
        group.results = [StepResult(reward=float(i)) for i in range(len(group.completions))]
    a.update(generated)
    state = a.state_dict()
    fresh, _ = sft_policy(lora=True, sft_steps=0)  # what a resumed trial loads: the base, no SFT
    b = trainer_for(fresh, tok, kl_beta=0.1)
    b.load_state_dict(state)
    mask = batch["comp_mask_BC"] > 0
    assert torch.allclose(b._ref_logp(batch)[mask], start_logp[mask], atol=1e-6)
    assert not torch.allclose(b._log_probs(b.model, batch)[0][mask], start_logp[mask], atol=1e-4)  # it trained


@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
def test_trial_with_sft_logs_zero_kl_on_its_first_one_epoch_step(tmp_path, lora_rank):
    spec = {
        "trial_id": "ref", "model": "builtin:micro-gemma",
        "hparams": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8, "learning_rate": 1e-3,
                    "warmup_steps": 0, "dynamic_sampling": False, "sft_steps": 6, "sft_batch_size": 4,
                    "sft_learning_rate": 1e-2, "temperature": 1.0, "kl_beta": 0.1, "ppo_epochs": 1,
                    "lora_rank": lora_rank},
        "reward": {"components": {"execution_match": 1.0, "length_penalty": 1.0},
                   "params": {"length_free_chars": 0, "length_scale_chars": 1000}},
        "budget": {"max_steps": 1, "max_seconds": 300},
        "eval": {"limit": 2, "samples": 0, "before": False},
    }
    result = run_trial(spec, tmp_path / "trial")
    assert result["status"] == "succeeded", result["error"]
    (row,) = [json.loads(line) for line in (tmp_path / "trial" / "metrics.jsonl").read_text().splitlines()]
    assert row["kl_ref"] == pytest.approx(0.0, abs=1e-7)


def test_lora_dropout_is_off_in_the_log_prob_forwards():
    """Sampling ran without dropout; the PPO epochs must score the same policy (TRL does the same)."""
    results = []
    for dropout in (0.5, 0.0):
        tok = tiny_tokenizer()
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(tiny_gemma(len(tok)), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                                target_modules="all-linear"))
        trainer = trainer_for(model, tok, ppo_epochs=2)
        torch.manual_seed(0)
        generated, _, _ = trainer.collect()
        for group in generated:
            group.results = [StepResult(reward=float(i)) for i in range(len(group.completions))]
        torch.manual_seed(1)  # the same dropout masks for both, were any drawn
        stats = trainer.update(generated)
        results.append((stats, [p.detach().clone() for p in trainer.params]))
    (with_dropout, params_a), (without, params_b) = results
    assert with_dropout["grad_norm"] > 0
    assert with_dropout["clip_frac"] == without["clip_frac"]
    for a, b in zip(params_a, params_b, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
