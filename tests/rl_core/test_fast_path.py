"""The faster log-prob path (LM head on real tokens only, one head forward, no needless recompute)
gives the old path's log-probs, entropies, losses and gradients."""

import copy

import pytest
import torch

from rl_core.env import StepResult
from rl_core.grpo import head_log_probs, masked_head_log_probs
from tests.rl_core.test_trainer import hp, make


@pytest.mark.parametrize("keep_logits_bytes", [1 << 30, 0], ids=["kept", "recomputed"])
def test_masked_head_log_probs_equal_the_padded_path_with_gradients(keep_logits_bytes):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden_BCH = torch.randn(3, 5, 16, requires_grad=True)
    tokens_BC = torch.randint(0, 50, (3, 5))
    mask_BC = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    outs = []
    for fast in (False, True):
        hidden_BCH.grad, head.weight.grad = None, None
        kw = dict(temperature=0.7, softcap=30.0, chunk_rows=4, with_entropy=True)
        logp, ent = (masked_head_log_probs(hidden_BCH, head, tokens_BC, mask_BC, keep_logits_bytes=keep_logits_bytes, **kw)
                     if fast else head_log_probs(hidden_BCH, head, tokens_BC, **kw))
        (logp * mask_BC * torch.arange(15.0).reshape(3, 5)).sum().backward()
        outs.append((logp * mask_BC, ent * mask_BC, hidden_BCH.grad.clone(), head.weight.grad.clone()))
    for old, new in zip(*outs, strict=True):
        assert torch.allclose(old, new, atol=1e-5)
    assert outs[1][2].abs().sum() > 0


def test_trainer_update_equals_the_old_path_loss_and_gradients():
    fast, _ = make(hp(ppo_epochs=2))
    old = copy.deepcopy(fast)
    old.old_log_probs = True
    torch.manual_seed(0)
    generated, _, _ = fast.collect()
    for group in generated:  # distinct rewards: every group carries a gradient
        group.results = [StepResult(reward=float(i)) for i in range(len(group.completions))]
    stats = [t.update(copy.deepcopy(generated)) for t in (old, fast)]
    for key in ("loss", "grad_norm", "entropy", "clip_frac", "kl"):
        assert stats[1][key] == pytest.approx(stats[0][key], rel=1e-4, abs=1e-6), key
    assert stats[0]["grad_norm"] > 0
    for (name, a), (_, b) in zip(old.model.named_parameters(), fast.model.named_parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name

