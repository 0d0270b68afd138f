"""Which training prompts a GRPO step draws: a seeded shuffle, or a curriculum on pass rates.

Why a curriculum: with dynamic sampling (DAPO) a group whose completions all earn the same reward
carries no gradient and is thrown away after it was generated, and generation is most of a step
(77% on the built-in benchmark, where only 13-33% of groups had mixed rewards). A prompt the policy
solves with every sample, or with none, is the commonest such group. `PassRateSampler` learns that
from the rollouts the trainer already scores (no extra generation) and draws fewer of them:

- every visit measures the group's spread of passes, p(1 - p) (unbiased: k(G - k) / (G(G - 1)) for
  k passes of G), largest at a pass rate of 1/2 where a group is most likely to hold both a pass
  and a fail; the prompt keeps a running estimate (older visits decay by `decay`), shrunk towards
  the mean over first visits (`prior` groups' worth), so an unseen prompt counts as an average one
  and a half-solved one counts more;
- a prompt is drawn with weight `floor + that estimate`; the floor keeps every prompt in the draw;
- a prompt whose last `skip_after` groups all had equal rewards rests for `cooldown` draws, doubled
  for each further such group up to `max_cooldown` (never forever), then is tried again; a prompt
  just drawn rests `rest` draws, so one step's sampling rounds do not draw it twice;
- when fewer prompts are ready than asked for, the ones closest to ready fill the draw: nothing
  starves and nothing stalls.

Each draw uses a generator seeded by (seed, draw number), so the draws are a function of the seed
and the recorded visits; `state_dict` holds all of it, and a checkpoint or a `continue` resumes it
exactly. Torch-free, like the spec.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from rl_core.spec import CURRICULA  # the names the spec accepts; make_sampler below builds each


class PromptSampler:
    """Seeded shuffled passes over the training ids (the `uniform` curriculum); its position is
    checkpointed."""

    kind = "uniform"

    def __init__(self, ids: Sequence[str], seed: int) -> None:
        if not ids:
            raise ValueError("the training split is empty; pick a train_split that has examples")
        self.ids = list(ids)
        self.seed = seed
        self.epoch = 0
        self.pos = 0
        self._order = self._shuffled()

    def _shuffled(self) -> list[str]:
        order = list(self.ids)
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[str]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def observe(self, example_id: str, rewards: Sequence[float], passes: Sequence[bool]) -> None:
        """A shuffle learns nothing from the rollouts."""

    def metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", self.kind) != self.kind:
            return  # a parent with another curriculum: this one starts its own order
        self.seed, self.epoch, self.pos = state["seed"], state["epoch"], state["pos"]
        self._order = self._shuffled()


class PassRateSampler:
    """Draws prompts with weight favouring a pass rate near 1/2 and rests those without signal
    (the `pass_rate` curriculum)."""

    kind = "pass_rate"

    def __init__(self, ids: Sequence[str], seed: int, *, floor: float = 0.01, prior: float = 0.5,
                 decay: float = 0.5, skip_after: int = 1, cooldown: int | None = None,
                 max_cooldown: int | None = None, rest: int | None = None) -> None:
        if not ids:
            raise ValueError("the training split is empty; pick a train_split that has examples")
        self.ids = list(dict.fromkeys(ids))
        self._known = set(self.ids)
        n = len(self.ids)
        self.seed = seed
        self.floor, self.prior, self.decay, self.skip_after = floor, prior, decay, skip_after
        # Measured in prompts drawn: half a pass over the split at first, at most four passes.
        self.cooldown = cooldown if cooldown is not None else max(1, n // 2)
        self.max_cooldown = max_cooldown if max_cooldown is not None else 4 * n
        self.rest = rest if rest is not None else min(n // 2, 256)
        self.draws = 0  # prompts drawn so far: the clock of rests and cooldowns
        self.takes = 0  # calls to take(): seeds each draw's generator
        # The population's p(1 - p), from first visits only: those are drawn without regard to the
        # prompt, so they are a fair sample of the split, unlike revisits the curriculum chose.
        self.mean_signal = 0.25
        self.first_visits = 0
        # per prompt: [decayed sum of p(1 - p), decayed groups, groups in a row without signal, ready at draw]
        self.record: dict[str, list[float]] = {}

    # ---- learning from rollouts -----------------------------------------------------------
    def observe(self, example_id: str, rewards: Sequence[float], passes: Sequence[bool]) -> None:
        """Record one scored group of `example_id` (its rewards and which samples passed)."""
        if example_id not in self._known:
            return
        r = self.record.setdefault(example_id, [0.0, 0.0, 0, 0])
        g, k = len(passes), sum(bool(p) for p in passes)
        spread = k * (g - k) / (g * (g - 1)) if g > 1 else 0.0
        if r[1] == 0:
            self.first_visits += 1
            rate = max(0.01, 1.0 / self.first_visits)  # a mean at first, then an exponential average
            self.mean_signal += rate * (spread - self.mean_signal)
        r[0], r[1] = self.decay * r[0] + spread, self.decay * r[1] + 1.0
        mixed = len(rewards) > 0 and max(rewards) - min(rewards) > 1e-8
        r[2] = 0 if mixed else int(r[2]) + 1
        if r[2] >= self.skip_after:  # solved by every sample or by none, again: rest a while
            wait = min(self.max_cooldown, self.cooldown * 2 ** min(r[2] - self.skip_after, 30))
            r[3] = max(r[3], self.draws + wait)

    def signal(self, example_id: str) -> float:
        """The prompt's estimated p(1 - p): its decayed record with `prior` groups at the population's."""
        total, groups = self.record.get(example_id, (0.0, 0.0, 0, 0))[:2]
        return (total + self.prior * self.mean_signal) / (groups + self.prior)

    def weight(self, example_id: str) -> float:
        return self.floor + self.signal(example_id)

    def skipped(self) -> int:
        """Prompts resting after groups without signal (not the short rest after any draw)."""
        return sum(1 for r in self.record.values() if r[2] >= self.skip_after and r[3] > self.draws)

    # ---- drawing ----------------------------------------------------------------------------
    def take(self, n: int) -> list[str]:
        """`n` prompts, distinct while the split has that many: weighted sampling without
        replacement among the ready prompts (Efraimidis-Spirakis keys), the nearest to ready after."""
        rng = random.Random(f"pass_rate:{self.seed}:{self.takes}")
        self.takes += 1
        keyed = []
        for i in self.ids:  # every prompt draws its key, ready or not: the stream does not depend on it
            u = 1.0 - rng.random()  # in (0, 1]
            ready_at = self.record[i][3] if i in self.record else 0
            keyed.append((max(ready_at - self.draws, 0), -math.log(u) / self.weight(i), i))
        keyed.sort()
        out = [i for _, _, i in keyed[:n]]
        while len(out) < n:  # a split smaller than the draw: round again
            out += [i for _, _, i in keyed[:n - len(out)]]
        for i in out:
            r = self.record.setdefault(i, [0.0, 0.0, 0, 0])
            r[3] = max(r[3], self.draws + len(out) + self.rest)
        self.draws += len(out)
        return out

    def metrics(self) -> dict[str, float]:
        return {"curriculum_skipped": self.skipped(), "curriculum_mean_signal": round(self.mean_signal, 4)}

    # ---- checkpoint -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "draws": self.draws, "takes": self.takes,
                "mean_signal": self.mean_signal, "first_visits": self.first_visits,
                "record": {i: list(r) for i, r in self.record.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            return  # a parent that drew uniformly: no record to go on from, this one starts its own
        self.seed, self.draws, self.takes = state["seed"], state["draws"], state["takes"]
        self.mean_signal, self.first_visits = state["mean_signal"], state["first_visits"]
        self.record = {i: list(r) for i, r in state["record"].items()}


def make_sampler(curriculum: str, ids: Sequence[str], seed: int) -> PromptSampler | PassRateSampler:
    """The sampler a spec's `hparams.curriculum` names."""
    if curriculum == "uniform":
        return PromptSampler(ids, seed)
    if curriculum == "pass_rate":
        return PassRateSampler(ids, seed)
    raise ValueError(f"unknown curriculum {curriculum!r}; use one of {', '.join(CURRICULA)}")
