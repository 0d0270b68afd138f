"""The tinker launcher: a trial run as a client of `openrl-agent serve` writes the trial directory
and result.json every other launcher's trials write; what it cannot run is refused as bad_spec."""

from __future__ import annotations

import pytest

pytest.importorskip("tinker")
from cluster.base import wait  # noqa: E402
from cluster.tinker_launcher import TinkerLauncher  # noqa: E402
from rl_core import trialdir as td  # noqa: E402
from rl_core.serve.local import running  # noqa: E402
from rl_core.serve.service import ServeSettings  # noqa: E402

MODEL = "builtin:micro-gemma"


def spec(trial_id: str, **hparams) -> dict:
    return {"trial_id": trial_id, "session": "tinker-test", "model": MODEL, "seed": 0,
            "hparams": {"lora_rank": 4, "group_size": 3, "prompts_per_step": 2, "max_new_tokens": 12,
                        "ppo_epochs": 2, "warmup_steps": 0, "sampling_rounds": 1, **hparams},
            "budget": {"max_steps": 2, "max_seconds": 300, "checkpoint_every": 0},
            "eval": {"limit": 4, "samples": 2, "before": True}}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINKER_TELEMETRY", "0")
        mp.setenv("TINKER_API_KEY", "tml-test")  # the trial processes inherit it
        with running(ServeSettings(models=[MODEL], state_dir=tmp_path_factory.mktemp("serve"), device="cpu")) as url:
            yield url


def test_a_trial_through_the_endpoint_writes_the_usual_result(endpoint, tmp_path):
    launcher = TinkerLauncher(endpoint, runs_dir=tmp_path, slots=2)
    handles = [launcher.submit(spec("t1")), launcher.submit(spec("t2", loss_type="grpo", dynamic_sampling=False))]
    statuses = wait(launcher, handles, timeout_s=240)
    assert set(statuses.values()) == {"succeeded"}, launcher.logs(handles[0], 40)
    for handle in handles:
        trial_dir = tmp_path / "tinker-test" / "trials" / handle.trial_id
        result = launcher.result(handle)
        metrics = td.result_metrics(result)
        assert metrics.steps == 2 and metrics.eval.n == 4
        rows = td.read_jsonl(trial_dir / td.METRICS_FILE)
        assert [r["step"] for r in rows] == [1, 2] and all("reward_mean" in r for r in rows)
        evals = td.read_jsonl(trial_dir / td.EVAL_FILE)
        assert [e["step"] for e in evals] == [0, 2] and len(evals[-1]["outcomes"]) == 4
        assert td.read_json(trial_dir / "tinker.json")["weights"].startswith("tinker://")


def test_what_the_endpoint_cannot_run_is_refused_as_bad_spec(endpoint, tmp_path):
    launcher = TinkerLauncher(endpoint, runs_dir=tmp_path, slots=1)
    handle = launcher.submit(spec("kl", kl_beta=0.1))
    assert wait(launcher, [handle], timeout_s=120)[handle] == "failed"
    result = launcher.result(handle)
    assert result["error"]["kind"] == "bad_spec" and "kl_beta" in result["error"]["message"]
