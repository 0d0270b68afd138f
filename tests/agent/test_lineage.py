"""A child's spec (agent/lineage.py): what it takes from its parent."""

from __future__ import annotations

from agent.lineage import trial_spec
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
