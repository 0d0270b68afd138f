"""The server's parts on their own: request order and fairness, loss gradients, the wire encoding
read back by the SDK's own decoder, the SDK version range."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("tinker")
from tinker.proto.response_conv import deserialize_forward_backward_output  # noqa: E402

from rl_core.serve import losses  # noqa: E402
from rl_core.serve.scheduler import Scheduler  # noqa: E402
from rl_core.serve.wire import UserError, check_sdk_version, encode_forward_backward  # noqa: E402


def run_jobs(submissions):
    """Submit (queue, seq_id) jobs on an event loop with the worker paused; return the order they ran in."""
    ran, gate = [], threading.Event()

    async def main():
        sched = Scheduler(asyncio.get_running_loop())
        ids = [sched.submit("first", gate.wait)]  # holds the worker until everything is queued
        for queue, seq in submissions:
            ids.append(sched.submit(queue, lambda q=queue, s=seq: ran.append((q, s)), seq_id=seq))
        gate.set()
        slots = [sched.slot(i) for i in dict.fromkeys(ids)]
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in slots)), timeout=10)
        sched.close()
        return ids

    return asyncio.run(main()), ran


def test_a_model_runs_its_requests_in_seq_id_order_whatever_order_they_arrive_in():
    _, ran = run_jobs([("m", 3), ("m", 1), ("m", 2)])
    assert ran == [("m", 1), ("m", 2), ("m", 3)]


def test_a_resent_seq_id_gets_the_first_future_and_runs_once():
    ids, ran = run_jobs([("m", 1), ("m", 1)])
    assert ids[1] == ids[2] and ran == [("m", 1)]


def test_queues_take_turns():
    _, ran = run_jobs([("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)])
    assert ran == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]


def test_a_gap_in_seq_ids_holds_the_later_requests():
    async def main():
        sched = Scheduler(asyncio.get_running_loop())
        later = sched.slot(sched.submit("m", lambda: "two", seq_id=2))
        await asyncio.sleep(0.2)
        held = not later.done.is_set()
        sched.submit("m", lambda: "one", seq_id=1)
        await asyncio.wait_for(later.done.wait(), timeout=5)
        sched.close()
        return held, later.result

    assert asyncio.run(main()) == (True, "two")


def test_a_failing_job_fails_its_future_with_a_category():
    def bad_user():
        raise UserError("no such thing")

    async def main():
        sched = Scheduler(asyncio.get_running_loop())
        user = sched.slot(sched.submit("q", bad_user))
        server = sched.slot(sched.submit("q", lambda: 1 / 0))
        await asyncio.wait_for(asyncio.gather(user.done.wait(), server.done.wait()), timeout=5)
        sched.close()
        return (user.error, user.category), (server.error, server.category)

    (u_err, u_cat), (s_err, s_cat) = asyncio.run(main())
    assert (u_err, u_cat) == ("no such thing", "user")
    assert s_cat == "server" and "ZeroDivisionError" in s_err


def test_cispo_weights_the_gradient_by_the_clipped_ratio_without_differentiating_it():
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    q = torch.tensor([-1.5, -2.0, -0.1])
    adv = torch.tensor([1.0, -1.0, 2.0])
    losses.cispo(logp, {"logprobs": q, "advantages": adv}, {}).sum().backward()
    clipped = torch.exp(logp.detach() - q).clamp(0.8, 1.2)
    torch.testing.assert_close(logp.grad, -clipped * adv)  # d/dlogp of -sg(c) * logp * A


def test_ppo_gradient_vanishes_where_the_clip_binds():
    logp = torch.tensor([0.0, 0.0], requires_grad=True)
    q = torch.tensor([-1.0, 0.0])  # ratio e (clipped at 1.2 for A > 0) and 1
    losses.ppo(logp, {"logprobs": q, "advantages": torch.tensor([1.0, 1.0])}, {}).sum().backward()
    assert logp.grad[0] == 0 and logp.grad[1] == pytest.approx(-1.0)


def test_unknown_loss_config_keys_are_refused():
    with pytest.raises(UserError, match="do not apply to 'dro'"):
        losses.resolve("dro", {"clip_low_threshold": 0.5})


def test_forward_backward_output_reads_back_through_the_sdk_decoder():
    outputs = [{"logprobs": np.array([-1.0, -2.0], np.float32), "elementwise_loss": np.array([1.0, 2.0], np.float32)},
               {"logprobs": np.array([-0.5], np.float32), "elementwise_loss": np.array([0.5], np.float32)}]
    decoded = deserialize_forward_backward_output(encode_forward_backward(outputs, {"loss:sum": 3.5}))
    assert decoded.metrics == {"loss:sum": 3.5}
    assert [o["logprobs"].tolist() for o in decoded.loss_fn_outputs] == [[-1.0, -2.0], [-0.5]]
    assert decoded.loss_fn_outputs[1]["elementwise_loss"].tolist() == [0.5]


@pytest.mark.parametrize("version,ok", [("0.38.0", True), ("0.38.4", True), ("0.37.9", False), ("0.39.0", False)])
def test_sdk_versions_outside_the_tested_range_are_refused(version, ok):
    if ok:
        check_sdk_version(version)
    else:
        with pytest.raises(UserError, match="outside the range"):
            check_sdk_version(version)


def test_delivered_results_are_forgotten_after_the_retry_window():
    async def main():
        sched = Scheduler(asyncio.get_running_loop())
        first = sched.submit("q", lambda: "x")
        slot = sched.slot(first)
        await asyncio.wait_for(slot.done.wait(), timeout=5)
        sched.delivered(slot)
        sched.submit("q", lambda: "y")
        kept = sched.slot(first) is not None
        slot.retrieved_at -= Scheduler.KEEP_RETRIEVED_S + 1
        sched.submit("q", lambda: "z")
        sched.close()
        return kept, sched.slot(first) is None

    assert asyncio.run(main()) == (True, True)


def test_top_k_one_and_a_tiny_top_p_draw_the_argmax():
    from rl_core.serve.sampler import SampleParams, draw

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    for params in (SampleParams(max_tokens=1, top_k=1), SampleParams(max_tokens=1, top_p=1e-6)):
        assert torch.equal(draw(logits, params, gen), logits.argmax(-1))
    top3 = logits.topk(3, dim=-1).indices
    picks = torch.stack([draw(logits, SampleParams(max_tokens=1, top_k=3), gen) for _ in range(50)], dim=1)
    assert all(set(row.tolist()) <= set(allowed.tolist()) for row, allowed in zip(picks, top3, strict=True))
    assert len(set(picks[0].tolist())) > 1  # it samples, not argmax
