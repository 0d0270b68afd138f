import pytest
import torch

from rl_core.grpo import (
    LOSSES,
    BatchSizes,
    clipped_pg_loss,
    entropy_per_token,
    group_advantages,
    grpo_loss,
    head_log_probs,
    k3_kl,
    mixed_groups,
    selective_log_softmax,
)


def test_advantages_centre_each_group_and_optionally_scale():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv = group_advantages(rewards)
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    assert torch.all(adv[1] == 0)
    scaled = group_advantages(rewards, scale=True)
    assert torch.allclose(scaled[0], adv[0] / (rewards[0].std() + 1e-4))
    assert torch.all(scaled[1] == 0)  # a uniform group stays zero, no division blow-up
    assert mixed_groups(rewards).tolist() == [True, False]


def test_selective_log_softmax_matches_naive_across_chunks():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, dtype=torch.bfloat16)
    tokens = torch.randint(0, 11, (3, 5))
    naive = torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    for chunk in (1, 4, 7, 4096):
        assert torch.allclose(selective_log_softmax(logits, tokens, chunk_rows=chunk), naive, atol=1e-5)


def test_entropy_matches_definition():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, -10.0, -10.0]]])
    ent = entropy_per_token(logits, chunk_rows=1)
    assert ent[0, 0].item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-5)
    assert ent[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_k3_kl_is_zero_at_equality_and_positive_otherwise():
    logp = torch.tensor([[-1.0, -2.0]])
    assert torch.allclose(k3_kl(logp, logp), torch.zeros_like(logp))
    ref = torch.tensor([[-1.5, -0.5]])
    d = ref - logp
    assert torch.allclose(k3_kl(logp, ref), torch.exp(d) - d - 1)
    assert torch.all(k3_kl(logp, ref) > 0)


def test_clip_higher_bounds_ratio_per_sign_of_advantage():
    old = torch.zeros(4, 1)
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]]))  # ratios 1.5, 1.5, 0.5, 0.5
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = clipped_pg_loss(logp, old, adv, eps_low=0.2, eps_high=0.28)
    # A>0, ratio above 1+eps_high: clipped at 1.28; A<0, ratio above: unclipped 1.5 (pessimistic)
    # A>0, ratio below 1-eps_low: unclipped 0.5; A<0, ratio below: clipped at 0.8
    assert torch.allclose(loss.squeeze(1), torch.tensor([-1.28, 1.5, -0.5, 0.8]))
    assert clipped.squeeze(1).tolist() == [1.0, 0.0, 0.0, 1.0]
    # the clipped branches carry no gradient
    logp = logp.clone().requires_grad_(True)
    loss, _ = clipped_pg_loss(logp, old, adv, 0.2, 0.28)
    loss.sum().backward()
    assert logp.grad.squeeze(1)[0] == 0 and logp.grad.squeeze(1)[3] == 0
    assert logp.grad.squeeze(1)[1] != 0 and logp.grad.squeeze(1)[2] != 0


def _case():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    return loss, mask, BatchSizes(sequences=2, tokens=4, max_new_tokens=5)


def test_loss_variants_aggregate_as_documented():
    loss, mask, sizes = _case()
    assert LOSSES["grpo"](loss, mask, sizes).item() == pytest.approx((2.0 + 4.0) / 2)
    assert LOSSES["dapo"](loss, mask, sizes).item() == pytest.approx(10.0 / 4)
    assert LOSSES["dr_grpo"](loss, mask, sizes).item() == pytest.approx(10.0 / (2 * 5))


@pytest.mark.parametrize("loss_type", sorted(LOSSES))
def test_micro_batches_sum_to_the_full_batch_loss(loss_type):
    loss, mask, sizes = _case()
    full = LOSSES[loss_type](loss, mask, sizes)
    split = LOSSES[loss_type](loss[:1], mask[:1], sizes) + LOSSES[loss_type](loss[1:], mask[1:], sizes)
    assert split.item() == pytest.approx(full.item())


def test_padding_never_contributes():
    loss, mask, sizes = _case()
    poisoned = loss.clone()
    poisoned[1, 1:] = 1e6
    for agg in LOSSES.values():
        assert agg(poisoned, mask, sizes).item() == pytest.approx(agg(loss, mask, sizes).item())


def test_grpo_loss_on_policy_gradient_is_advantage_weighted_and_kl_is_added():
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]], requires_grad=True)
    mask = torch.ones(2, 2)
    adv = torch.tensor([1.0, -1.0])
    sizes = BatchSizes(2, 4, 2)
    loss, stats = grpo_loss(logp, logp.detach(), adv, mask, sizes, loss_type="dapo", eps_low=0.2, eps_high=0.2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))
    assert stats["clip_frac"] == 0.0
    ref = torch.tensor([[-1.5, -1.5], [-2.0, -2.0]])
    with_kl, stats = grpo_loss(logp, logp.detach(), adv, mask, sizes, loss_type="dapo", eps_low=0.2,
                               eps_high=0.2, kl_beta=0.1, ref_logp_BT=ref)
    expected_kl = k3_kl(logp.detach(), ref).mean().item()
    assert stats["kl"] == pytest.approx(expected_kl)
    assert with_kl.item() == pytest.approx(loss.item() + 0.1 * expected_kl, abs=1e-6)
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp, logp.detach(), adv, mask, sizes, loss_type="grpo", eps_low=0.2, eps_high=0.2, kl_beta=0.1)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_head_log_probs_match_full_logits_with_gradients(softcap):
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 13, bias=False)
    hidden = torch.randn(2, 5, 6, requires_grad=True)
    tokens = torch.randint(0, 13, (2, 5))
    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    naive = selective_log_softmax(logits / 0.7, tokens)
    naive_ent = entropy_per_token(logits / 0.7)
    naive.sum().backward()
    grads = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    chunked, ent = head_log_probs(hidden, head, tokens, temperature=0.7, softcap=softcap, chunk_rows=3,
                                  with_entropy=True)
    chunked.sum().backward()
    assert torch.allclose(chunked, naive, atol=1e-5) and torch.allclose(ent, naive_ent, atol=1e-5)
    assert torch.allclose(hidden.grad, grads[0], atol=1e-5) and torch.allclose(head.weight.grad, grads[1], atol=1e-5)


def test_entropy_bonus_raises_entropy_and_vanishes_at_zero_weight():
    from rl_core.grpo import masked_head_log_probs

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden_BCH = torch.randn(2, 5, 8)
    tokens_BC = torch.randint(0, 11, (2, 5))
    mask_BC = torch.ones(2, 5)
    sizes = BatchSizes(sequences=2, tokens=10, max_new_tokens=5)
    zero_adv = torch.zeros(2)

    def mean_entropy() -> float:
        _, ent = masked_head_log_probs(hidden_BCH, head, tokens_BC, mask_BC, temperature=1.0, with_entropy=True)
        return float(ent.mean())

    for coef in (0.0, 0.5):
        head.zero_grad()
        logp, ent = masked_head_log_probs(hidden_BCH, head, tokens_BC, mask_BC, temperature=1.0,
                                          with_entropy=True, entropy_grad=coef > 0)
        loss, _ = grpo_loss(logp, logp.detach(), zero_adv, mask_BC, sizes, loss_type="dapo", eps_low=0.2,
                            eps_high=0.28, entropy_coef=coef, entropy_BT=ent if coef else None)
        loss.backward()
        if coef == 0:  # no advantage, no bonus: nothing to learn
            assert torch.count_nonzero(head.weight.grad) == 0
            continue
        before = mean_entropy()
        with torch.no_grad():
            head.weight -= 1.0 * head.weight.grad
        assert mean_entropy() > before + 1e-4
    with pytest.raises(ValueError, match="entropy"):
        grpo_loss(logp.detach(), logp.detach(), zero_adv, mask_BC, sizes, loss_type="dapo", eps_low=0.2,
                  eps_high=0.28, entropy_coef=0.1, entropy_BT=None)
