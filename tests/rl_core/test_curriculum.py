"""The prompt curriculum (rl_core/curriculum.py): the pass-rate sampler alone on simulated rollouts, and
inside GRPOTrainer on a real tiny Gemma 3 (checkpoint round trip, the unchanged uniform default)."""

import copy
import random

import pytest
import torch

from rl_core.curriculum import CURRICULA, PassRateSampler, PromptSampler, make_sampler
from rl_core.engine import HFEngine
from rl_core.env import BasicEnvironment, StepResult
from rl_core.spec import HParams, SpecError, info_of
from rl_core.trainer import GRPOTrainer
from tests.rl_core.test_engine import tiny_gemma, tiny_tokenizer


def simulate(sampler, true_p, steps, n=8, group=8, seed=0):
    """Draw `steps` batches of `n`, score each prompt as `group` Bernoulli(true_p) passes (binary reward).
    Returns the drawn ids in order and the share of groups with mixed rewards."""
    rng = random.Random(seed)
    drawn, mixed = [], 0
    for _ in range(steps):
        for i in sampler.take(n):
            passes = [rng.random() < true_p[i] for _ in range(group)]
            sampler.observe(i, [float(p) for p in passes], passes)
            drawn.append(i)
            mixed += 0 < sum(passes) < group
    return drawn, mixed / len(drawn)


# 40 prompts: a quarter never solved, a quarter always, the rest in between
TRUE_P = {f"q{i:02d}": [0.0, 1.0, 0.5, 0.2][i % 4] for i in range(40)}


def test_weights_peak_at_one_half_and_keep_a_floor():
    s = PassRateSampler(list(TRUE_P), seed=0, skip_after=10)  # no resting: weights alone
    for i, k in (("q00", 0), ("q01", 8), ("q02", 4), ("q03", 1)):
        s.observe(i, [float(j < k) for j in range(8)], [j < k for j in range(8)])
    w = {i: s.weight(i) for i in ("q00", "q01", "q02", "q03")}
    assert w["q02"] > w["q03"] > w["q00"] >= s.floor
    assert w["q02"] > w["q01"] >= s.floor
    unseen = s.weight("q39")  # the mean over first visits: between a never-solved and a half-solved prompt
    assert w["q02"] > unseen > w["q00"] and unseen > w["q01"]


def test_draws_favour_half_solved_prompts_and_starve_none():
    s = PassRateSampler(list(TRUE_P), seed=0)
    drawn, share = simulate(s, TRUE_P, steps=200)
    counts = {i: drawn.count(i) for i in TRUE_P}
    by_p = {p: sum(counts[i] for i in TRUE_P if TRUE_P[i] == p) for p in (0.0, 1.0, 0.5, 0.2)}
    assert by_p[0.5] > 2 * by_p[0.0] and by_p[0.5] > 2 * by_p[1.0], by_p
    assert min(counts.values()) >= 2, counts  # every prompt comes back after its rests
    # and over the last max_cooldown + a batch of draws every prompt was drawn at least once
    window = drawn[-(s.max_cooldown + 8):]
    assert set(window) == set(TRUE_P)
    _, uniform_share = simulate(PromptSampler(list(TRUE_P), seed=0), TRUE_P, steps=200)
    assert share > uniform_share + 0.15, (share, uniform_share)


def test_a_draw_is_distinct_and_a_drawn_prompt_rests_until_later_rounds():
    s = PassRateSampler(list(TRUE_P), seed=3)
    first = s.take(8)
    assert len(set(first)) == 8
    assert not set(first) & set(s.take(8))  # the next round of the same step draws others
    tiny = PassRateSampler(["a", "b"], seed=0)
    assert sorted(tiny.take(4)) == ["a", "a", "b", "b"]  # a split smaller than a draw goes round again


def test_deterministic_for_a_seed():
    a, _ = simulate(PassRateSampler(list(TRUE_P), seed=5), TRUE_P, steps=30)
    b, _ = simulate(PassRateSampler(list(TRUE_P), seed=5), TRUE_P, steps=30)
    c, _ = simulate(PassRateSampler(list(TRUE_P), seed=6), TRUE_P, steps=30)
    assert a == b and a != c


def test_state_round_trip_draws_the_same_next_prompts():
    s = PassRateSampler(list(TRUE_P), seed=1)
    simulate(s, TRUE_P, steps=10)
    t = PassRateSampler(list(TRUE_P), seed=9)
    t.load_state_dict(copy.deepcopy(s.state_dict()))
    assert simulate(s, TRUE_P, steps=10, seed=4) == simulate(t, TRUE_P, steps=10, seed=4)


def test_another_curricula_state_is_ignored_not_misread():
    uniform = PromptSampler(list(TRUE_P), seed=2)
    uniform.take(5)
    fresh = PassRateSampler(list(TRUE_P), seed=2)
    fresh.load_state_dict(uniform.state_dict())  # a uniform parent, a pass_rate child: a fresh record
    assert fresh.take(8) == PassRateSampler(list(TRUE_P), seed=2).take(8)
    uniform.load_state_dict(fresh.state_dict())  # and back: the shuffle keeps its own position
    assert uniform.state_dict() == {"seed": 2, "epoch": 0, "pos": 5}


def test_the_spec_field_names_every_sampler_and_is_searched():
    assert HParams().curriculum == "uniform"
    assert set(info_of("hparams.curriculum").search.choices) == set(CURRICULA)
    for name in CURRICULA:
        assert make_sampler(name, ["a"], 0).kind == name
    with pytest.raises(SpecError, match="hparams.curriculum"):
        HParams(curriculum="hardest_first")


# ---- inside the trainer, on a real tiny model ---------------------------------------------------
class HasLetter(BasicEnvironment):
    """Binary reward: the completion contains the prompt's letter. Common letters are often
    found, rare ones seldom, so pass rates differ between prompts as they do on SQL."""

    letters = "aeiostxqzjkvwy"
    prompts = {f"p{i:02d}": f"write {c}:" for i, c in enumerate(letters)}

    def prompt(self, example_id):
        return self.prompts[example_id]

    def example_ids(self, split):
        return sorted(self.prompts)

    def score(self, example_id, completions):
        letter = self.prompts[example_id][-2]
        return [StepResult(reward=float(letter in t), correct=letter in t) for t in completions]


def make(curriculum="uniform", seed=0, **kw):
    tok = tiny_tokenizer()
    model = tiny_gemma(len(tok), seed=seed)
    model.requires_grad_(True)
    env = HasLetter()
    base = dict(group_size=4, prompts_per_step=2, max_new_tokens=6, temperature=1.0, learning_rate=3e-3,
                warmup_steps=0, dynamic_sampling=True, sampling_rounds=2, curriculum=curriculum)
    base.update(kw)
    return GRPOTrainer(model, env, HFEngine(model, tok), HParams(**base), env.example_ids("train"), seed=seed,
                       pad_id=tok.pad_token_id, total_steps=20)


class OldShuffle:
    """The prompt order as the trainer drew it before curricula existed (rl_core/trainer.py then),
    kept here verbatim as the reference the default must still match."""

    def __init__(self, ids, seed):
        self.ids, self.seed, self.epoch, self.pos = list(ids), seed, 0, 0
        self._order = self._shuffled()

    def _shuffled(self):
        order = list(self.ids)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n):
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled()
            out.append(self._order[self.pos])
            self.pos += 1
        return out


def test_uniform_default_draws_exactly_what_the_old_shuffle_drew():
    trainer = make(seed=3)
    assert isinstance(trainer.sampler, PromptSampler)
    drawn = []
    real_take = trainer.sampler.take
    trainer.sampler.take = lambda n: drawn.append(real_take(n)) or drawn[-1]
    torch.manual_seed(0)
    for _ in range(4):  # 14 prompts, 4 per round, up to 2 rounds a step: past an epoch boundary
        generated, _, _ = trainer.collect()
    old = OldShuffle(HasLetter().example_ids("train"), seed=3)
    assert drawn == [old.take(len(d)) for d in drawn] and sum(map(len, drawn)) > 14
    assert [g.example_id for g in generated] == [i for d in drawn[-len(generated) // 4:] for i in d]
    assert set(trainer.state_dict()["sampler"]) == {"seed", "epoch", "pos"}  # checkpoints as before


def test_steps_log_the_mixed_share_and_the_curriculum():
    trainer = make("pass_rate")
    torch.manual_seed(0)
    metrics, groups = trainer.step()
    mixed = sum(len({r.reward for r in g.results}) > 1 for g in groups)
    assert metrics["mixed_share"] == pytest.approx(mixed / len(groups))
    assert metrics["groups_generated"] == len(groups)
    assert {"curriculum_skipped", "curriculum_mean_signal"} <= set(metrics)
    assert set(trainer.sampler.record) >= {g.example_id for g in groups}  # it learned from those rollouts
    trainer.env.score = lambda eid, comps: [StepResult(reward=1.0, correct=True) for _ in comps]
    metrics, groups = trainer.step()
    assert metrics["mixed_share"] == 0.0 and metrics["curriculum_skipped"] >= len(groups)


def test_a_resumed_or_continued_trainer_draws_what_an_uninterrupted_one_draws(tmp_path):
    a = make("pass_rate")
    torch.manual_seed(1)
    for _ in range(2):
        a.step()
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")  # through the file, as checkpoints go
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False, map_location="cpu")
    assert state["sampler"]["kind"] == "pass_rate" and state["sampler"]["record"]
    next_first_round = copy.deepcopy(a.sampler).take(4)
    ids_a = [[g.example_id for g in a.step()[1]] for _ in range(2)]
    resumed = make("pass_rate", seed=1)  # another init: the checkpoint must overwrite it
    resumed.load_state_dict(state)  # (this also rewinds the RNG to the checkpoint's)
    ids_r = [[g.example_id for g in resumed.step()[1]] for _ in range(2)]
    assert ids_a == ids_r and ids_a[0][:4] == next_first_round
    cont = make("pass_rate", seed=1)  # a `continue` of a parent: the policy holds other weights here,
    cont.continue_from({k: v for k, v in state.items() if k != "model"})  # so compare the first round
    assert [g.example_id for g in cont.step()[1]][:4] == next_first_round
