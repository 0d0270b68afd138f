"""A child's spec (agent/lineage.py): what it takes from its parent."""

from __future__ import annotations

from agent.lineage import parent_init, trial_spec
from agent.plan import Constraints
from tools.search_space import SearchSpace


def test_a_continue_keeps_the_parents_warmup_so_its_schedule_goes_on_exactly():
    # The trainer restores the parent's schedule position: zeroing the warm-up would shift a cosine
    # schedule (its progress counts from the end of the warm-up) and skip a warm-up still under way.
    space = SearchSpace()
    params = space.defaults()
    init = {"trial": "t0000", "weights": "/runs/s/trials/t0000/adapter", "optimizer": True, "step": 6,
            "train_s": 20.0}
    child = trial_spec(space, Constraints(), "s", "t0001", params, number=1, init_from=init)
    fresh = trial_spec(space, Constraints(), "s", "t0000", params, number=0)
    assert child.hparams.warmup_steps == fresh.hparams.warmup_steps > 0
    assert child.init_from.optimizer and child.hparams.sft_steps == 0 and child.eval.before is False


def _child(session_dir, parent_id: str, action: str, trial_id: str, params: dict) -> dict:
    from tests.rl_core.test_trial import micro_spec

    spec = micro_spec(max_steps=2)
    spec.update(trial_id=trial_id, seed=11, init_from=parent_init(session_dir, parent_id, action, params))
    spec["hparams"].update(sft_steps=0, **params)
    spec["eval"]["before"] = False
    return spec


def test_a_challenger_resumes_the_incumbents_exact_state(tmp_path):
    """A branch (a challenger) with the incumbent's own values trains exactly as the incumbent's
    continue does: same steps (loss, reward, lr) and the same greedy answers after them."""
    import json

    import torch

    from rl_core.policy import load_policy
    from rl_core.sessiondir import trial_dir
    from rl_core.trial import run_trial
    from tests.rl_core.test_trial import micro_spec

    session = tmp_path / "s"
    parent = micro_spec(max_steps=2)
    parent.update(trial_id="t0000")
    assert run_trial(parent, trial_dir(session, "t0000"))["status"] == "succeeded"
    same = {"learning_rate": parent["hparams"]["learning_rate"]}
    runs = {}
    for tid, action in (("t0001", "continue"), ("t0002", "branch")):
        spec = _child(session, "t0000", action, tid, same)
        assert spec["init_from"]["optimizer"] is True
        result = run_trial(spec, trial_dir(session, tid))
        assert result["status"] == "succeeded", result["error"]
        runs[tid] = [json.loads(line) for line in (trial_dir(session, tid) / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(runs["t0001"], runs["t0002"], strict=True):
        for key in ("loss", "reward_mean", "lr", "grad_norm"):
            assert a[key] == b[key], key
    evals = {tid: [json.loads(x) for x in (trial_dir(session, tid) / "eval.jsonl").read_text().splitlines()][-1]
             for tid in runs}
    assert evals["t0001"]["outcomes"] == evals["t0002"]["outcomes"]
    ids = torch.tensor([[2, 5, 7, 9]])
    logits = [load_policy(str(trial_dir(session, tid) / "adapter")).model(ids).logits for tid in runs]
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)


def test_a_branch_that_changes_the_lora_shape_starts_a_fresh_optimizer(tmp_path):
    from rl_core.sessiondir import trial_dir
    from rl_core.trialdir import WEIGHTS_DIR, write_result

    tdir = trial_dir(tmp_path, "t0000")
    (tdir / WEIGHTS_DIR).mkdir(parents=True)
    write_result(tdir, {"trial_id": "t0000", "status": "succeeded", "adapter_path": WEIGHTS_DIR,
                        "spec": {"hparams": {"lora_rank": 8, "lora_alpha": 32}}, "metrics": {"steps": 5}})
    assert parent_init(tmp_path, "t0000", "branch", {"lora_rank": 8, "learning_rate": 1e-4})["optimizer"] is True
    assert parent_init(tmp_path, "t0000", "branch", {"lora_rank": 16})["optimizer"] is False
    assert parent_init(tmp_path, "t0000", "continue")["optimizer"] is True


def test_a_supervised_stage_runs_where_the_planner_put_it_and_never_again_in_a_continuation():
    from tools.search_space import Param, default_params

    space = SearchSpace(params={**default_params(), "sft_steps": Param("sft_steps", "int", 40, low=0, high=200)})
    params = space.defaults()
    init = {"trial": "t0000", "weights": "/runs/s/trials/t0000/adapter", "optimizer": True, "step": 6, "train_s": 20.0}
    fresh = trial_spec(space, Constraints(), "s", "t0000", params)
    assert fresh.hparams.sft_steps == 40  # the searched value
    # a continuation's weights already carry the stage: a searched sft_steps must not run it again
    assert trial_spec(space, Constraints(), "s", "t0001", params, number=1, init_from=init).hparams.sft_steps == 0
    # a challenger whose move is a supervised stage runs it, then its GRPO steps
    challenger = trial_spec(space, Constraints(), "s", "t0002", params, number=2, init_from=init, sft_steps=100,
                            max_steps=30, screen_every=10)
    assert (challenger.hparams.sft_steps, challenger.budget.max_steps, challenger.eval.every_steps) == (100, 30, 10)
    assert challenger.eval.subset == Constraints().eval_subset
