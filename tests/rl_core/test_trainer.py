"""GRPOTrainer on a real tiny Gemma 3 with a toy environment (the trainer only sees the protocol)."""

import copy

import pytest
import torch

from rl_core.engine import HFEngine
from rl_core.env import BasicEnvironment, StepResult
from rl_core.spec import HParams
from rl_core.trainer import GRPOTrainer, PromptSampler, lr_factor
from tests.rl_core.test_engine import tiny_gemma, tiny_tokenizer


class CountA(BasicEnvironment):
    """Reward = share of 'a' characters in the completion: dense, so every group is mixed."""

    prompts = {f"p{i}": f"say {w}:" for i, w in enumerate(["cat", "dog", "sea", "sky"])}

    def prompt(self, example_id):
        return self.prompts[example_id]

    def example_ids(self, split):
        return sorted(self.prompts)

    def score(self, example_id, completions):
        out = []
        for text in completions:
            share = text.count("a") / max(len(text), 1)
            out.append(StepResult(reward=share, components={"a_share": share}, correct=share > 0.5,
                                  metrics={"status": "ok"}))
        return out


def make(hp: HParams, seed: int = 0):
    tok = tiny_tokenizer()
    model = tiny_gemma(len(tok), seed=seed)
    model.requires_grad_(True)
    env = CountA()
    trainer = GRPOTrainer(model, env, HFEngine(model, tok), hp, env.example_ids("train"), seed=seed,
                          pad_id=tok.pad_token_id, total_steps=20)
    return trainer, tok


def hp(**kw):
    base = dict(group_size=4, prompts_per_step=2, max_new_tokens=6, temperature=1.0, learning_rate=3e-3,
                warmup_steps=0, dynamic_sampling=False)
    base.update(kw)
    return HParams(**base)


def naive_logp(model, prompt, completion, temperature):
    """log-probs of `completion` after `prompt` from one unpadded forward over the whole sequence."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


def test_shared_prefix_batch_log_probs_and_grads_equal_each_sequence_alone():
    trainer, tok = make(hp(temperature=0.7))
    model = trainer.model
    groups = [([2, 5, 6, 7, 8], [[9, 10], [11, 1]]), ([2, 5], [[11, 12, 13, 1], [3]])]
    batch = trainer._collate(groups)
    logp, ent = trainer._log_probs(model, batch, with_entropy=True)
    assert ent.shape == logp.shape and torch.all(ent[batch["comp_mask_BC"] > 0] > 0)
    (logp * batch["comp_mask_BC"]).sum().backward()
    shared_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = 0
    row = 0
    for prompt, comps in groups:
        for comp in comps:
            ref = naive_logp(model, prompt, comp, 0.7)
            assert torch.allclose(logp[row, :len(comp)], ref, atol=1e-5)
            total = total + ref.sum()
            row += 1
    total.backward()
    for shared, p in zip(shared_grads, model.parameters(), strict=True):
        assert torch.allclose(shared, p.grad, atol=1e-5)
    assert batch["comp_mask_BC"].sum().item() == 9


@pytest.mark.slow  # 12 real GRPO steps: the one check here that the loop actually learns
def test_steps_raise_the_reward_and_report_metrics():
    torch.manual_seed(0)
    trainer, _ = make(hp(learning_rate=1e-2, prompts_per_step=4, group_size=8, max_new_tokens=4))
    rewards = []
    for _ in range(12):
        metrics, groups = trainer.step()
        rewards.append(metrics["reward_mean"])
    for key in ("reward_mean", "reward/a_share", "batch_accuracy", "kl", "entropy", "clip_frac", "completion_len",
                "grad_norm", "loss", "t_generate", "t_score", "t_train", "lr"):
        assert key in metrics, key
    assert metrics["step"] == 12 and len(groups) == 4
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1, rewards


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_gradient_accumulation_equals_one_big_batch(loss_type):
    a, _ = make(hp(grad_accum=1, prompts_per_step=2, ppo_epochs=1, loss_type=loss_type))
    b, _ = make(hp(grad_accum=2, prompts_per_step=2, ppo_epochs=1, loss_type=loss_type))
    torch.manual_seed(2)
    kept = a.collect()[1]
    assert kept, "this draw has no mixed group: pick another seed"
    before = {n: p.detach().clone() for n, p in a.model.named_parameters()}
    a.update(kept)
    b.update(copy.deepcopy(kept))
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6), name
    assert any(not torch.equal(before[n], p) for n, p in a.model.named_parameters())


def test_zero_advantage_groups_are_not_trained():
    trainer, _ = make(hp(dynamic_sampling=True, sampling_rounds=1))
    trainer.env.score = lambda eid, comps: [StepResult(reward=1.0) for _ in comps]  # every group uniform
    before = [p.detach().clone() for p in trainer.model.parameters()]
    metrics, _ = trainer.step()
    assert metrics["groups_trained"] == 0 and metrics["groups_generated"] == 4
    assert metrics["groups_short"] == 2  # the shortfall below prompts_per_step is logged
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_state_dict_round_trip_continues_identically():
    a, _ = make(hp())
    torch.manual_seed(3)
    a.step()
    state = copy.deepcopy(a.state_dict())
    m1, _ = a.step()
    b, _ = make(hp(), seed=1)  # different init: the checkpoint must overwrite it
    b.load_state_dict(state)
    m2, _ = b.step()
    assert m2["step"] == m1["step"] == 2
    assert m1["reward_mean"] == pytest.approx(m2["reward_mean"])
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_sampler_is_seeded_and_covers_every_id():
    s = PromptSampler(["a", "b", "c"], seed=0)
    first = s.take(3)
    assert sorted(first) == ["a", "b", "c"]
    assert PromptSampler(["a", "b", "c"], seed=0).take(5) == first + s.take(2)


def test_lr_warmup_then_constant_or_cosine():
    assert lr_factor(0, 10, "constant", None) == pytest.approx(0.1)
    assert lr_factor(50, 10, "constant", None) == 1.0
    assert lr_factor(10, 10, "cosine", 110) == pytest.approx(1.0)
    assert lr_factor(110, 10, "cosine", 110) == pytest.approx(0.0)


def test_evaluation_reports_progress_per_batch():
    from rl_core.evaluate import greedy_accuracy, pass_at_k

    trainer, tok = make(hp())
    env, engine = CountA(), trainer.engine
    ids = env.example_ids("dev")
    seen: list[tuple[int, int]] = []
    result = greedy_accuracy(engine, env, ids, max_new_tokens=4, batch_size=3, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 4), (4, 4)] and result.n == 4
    seen.clear()
    pass_at_k(engine, env, ids, k=2, temperature=1.0, top_p=1.0, max_new_tokens=4, batch_prompts=2,
              on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 4), (4, 4)]


def test_plain_sampling_keeps_every_group_equal_rewards_included():
    """dynamic_sampling = false trains on every group drawn (as TRL does), not only the mixed ones."""
    trainer, _ = make(hp(dynamic_sampling=False, prompts_per_step=2))
    uniform = {trainer.sampler.take(2)[0]}  # the first prompt of the next draw gets equal rewards
    trainer.sampler.load_state_dict({"seed": 0, "epoch": 0, "pos": 0})
    score = trainer.env.score
    trainer.env.score = lambda eid, comps: ([StepResult(reward=1.0) for _ in comps] if eid in uniform
                                            else score(eid, comps))
    generated, kept, _ = trainer.collect()
    assert [g.example_id for g in kept] == [g.example_id for g in generated] and len(kept) == 2


def _distinct_rewards(groups):
    for group in groups:  # every group carries a gradient
        group.results = [StepResult(reward=float(i)) for i in range(len(group.completions))]
    return groups


@pytest.mark.parametrize("kl_beta", [0.0, 0.1])
def test_drift_is_measured_after_the_update_at_one_epoch_and_apart_from_the_reference_kl(kl_beta):
    trainer, _ = make(hp(ppo_epochs=1, kl_beta=kl_beta))
    torch.manual_seed(0)
    generated, _, _ = trainer.collect()
    stats = trainer.update(_distinct_rewards(generated))
    assert stats["kl_drift"] > 1e-6  # one optimizer step moved the policy off the one that sampled
    assert stats["kl"] == stats["kl_drift"]  # `kl` (the contract's curve) is the drift whatever kl_beta is
    if kl_beta:  # measured before this step's update, against the policy GRPO started from: 0 at step 1
        assert stats["kl_ref"] == pytest.approx(0.0, abs=1e-7)
        assert trainer.update(_distinct_rewards(trainer.collect()[0]))["kl_ref"] > 1e-6
    else:
        assert "kl_ref" not in stats
