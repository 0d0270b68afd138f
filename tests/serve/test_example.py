"""examples/tinker_grpo.py: two GRPO steps through the SDK end to end, and the advantage scaling that
maps this project's dapo/grpo aggregations onto Tinker's per-token-sum losses, checked against
rl_core.grpo's own loss on the same log-probs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

tinker = pytest.importorskip("tinker")

from rl_core.grpo import BatchSizes, grpo_loss  # noqa: E402
from rl_core.serve.local import running  # noqa: E402
from rl_core.serve.service import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = "builtin:micro-gemma"


def load_example():
    spec = importlib.util.spec_from_file_location("tinker_grpo", ROOT / "examples" / "tinker_grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINKER_TELEMETRY", "0")  # nothing leaves the machine
        mp.setenv("TINKER_API_KEY", "tml-test")  # the example reads its key from the environment
        with running(ServeSettings(models=[MODEL], state_dir=tmp_path_factory.mktemp("serve"), device="cpu")) as base:
            yield base


def test_the_example_runs_two_grpo_steps(url):
    ex = load_example()
    args = ex.parse(["--model", MODEL, "--steps", "2", "--prompts", "2", "--group-size", "3",
                     "--max-tokens", "12", "--eval", "2", "--rank", "4"])
    lines = []
    history = ex.run(args, base_url=url, log=lines.append)
    assert len(history) == 2 and all(math.isfinite(h["reward_mean"]) for h in history)
    assert lines[0].startswith("dev accuracy before") and lines[-1].startswith("dev accuracy after")


class Seq:
    def __init__(self, tokens, logprobs):
        self.tokens, self.logprobs = tokens, logprobs


@pytest.mark.parametrize("aggregation", ["dapo", "grpo"])
def test_scaled_advantages_make_tinker_ppo_equal_the_projects_aggregation(url, aggregation):
    ex = load_example()
    service = tinker.ServiceClient(base_url=url)
    try:
        tc = service.create_lora_training_client(base_model=MODEL, rank=4, seed=0).result()
        rng = np.random.default_rng(0)
        prompt = [2, 17, 40, 99]
        comps = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
        adv = [1.0, -0.5, -0.5]
        # the policy's own log-probs of the completions, then a sampler slightly off them
        probe = [ex.rl_datum(prompt, Seq(c, [0.0] * len(c)), 0.0) for c in comps]
        out = tc.forward(probe, "importance_sampling").result()
        logp = [o["logprobs"].to_numpy()[len(prompt) - 1:] for o in out.loss_fn_outputs]
        old = [lp + rng.normal(0, 0.2, len(lp)).astype(np.float32) for lp in logp]
        scaled = ex.scaled_advantages(adv, [len(c) for c in comps], aggregation)
        data = [ex.rl_datum(prompt, Seq(c, o.tolist()), a) for c, o, a in zip(comps, old, scaled, strict=True)]
        served = tc.forward(data, "ppo").result().metrics["loss:sum"]
    finally:
        service.close("success").result()
    width = max(len(c) for c in comps)
    pad = lambda rows: torch.tensor([list(r) + [0.0] * (width - len(r)) for r in rows])  # noqa: E731
    mask = pad([[1.0] * len(c) for c in comps])
    sizes = BatchSizes(sequences=len(comps), tokens=int(mask.sum()), max_new_tokens=width)
    expected, _ = grpo_loss(pad(logp), pad(old), torch.tensor(adv), mask, sizes, loss_type=aggregation,
                            eps_low=0.2, eps_high=0.2)
    assert served == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
