"""Branching: a child trial starts exactly where its parent ended (builtin:micro-gemma, real DuckDB)."""

import json

import pytest
import torch

from rl_core.policy import load_policy
from rl_core.trial import run_trial
from rl_core.trialdir import result_metrics
from tests.rl_core.test_trial import micro_spec


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _evals(trial_dir):
    return [json.loads(line) for line in (trial_dir / "eval.jsonl").read_text().splitlines()]


def _logits(policy, text="SELECT count(*) FROM"):
    ids = policy.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return policy.model(ids).logits


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_child_starts_from_the_parents_end_state(tmp_path, lora_rank):
    parent_dir = tmp_path / "parent"
    spec = micro_spec(max_steps=2)
    spec["hparams"]["lora_rank"] = lora_rank
    parent = run_trial(spec, parent_dir)
    assert parent["status"] == "succeeded", parent["error"]
    weights = parent_dir / parent["adapter_path"]

    # The child's starting weights compute what the parent's final weights computed.
    end = load_policy("builtin:micro-gemma", lora_rank=0)
    if lora_rank:
        from peft import PeftModel

        end.model = PeftModel.from_pretrained(end.model, weights)
    else:
        end = load_policy(str(weights))
    start = load_policy("builtin:micro-gemma", init_weights=weights, lora_rank=lora_rank, seed=7)
    torch.testing.assert_close(_logits(start), _logits(end), rtol=1e-5, atol=1e-5)

    # Re-evaluated greedily at step 0, the child answers every dev question as the parent did at its end.
    child_spec = micro_spec(max_steps=1)
    child_spec.update(trial_id="child", init_from={"trial": "parent", "weights": str(weights), "step": 2,
                                                  "train_s": parent["metrics"]["train_s"]})
    child_spec["hparams"].update(lora_rank=lora_rank, sft_steps=0)
    child = run_trial(child_spec, tmp_path / "child")
    assert child["status"] == "succeeded", child["error"]
    assert _evals(tmp_path / "child")[0]["outcomes"] == _evals(parent_dir)[-1]["outcomes"]
    assert child["lineage"] == {"parent": "parent", "branch_step": 2, "steps_total": 3,
                                "train_s_total": round(parent["metrics"]["train_s"] + child["metrics"]["train_s"], 1)}


def test_child_reuses_the_parents_final_evaluation_and_optimizer(tmp_path):
    parent = run_trial(micro_spec(max_steps=2), tmp_path / "parent")
    weights = tmp_path / "parent" / "adapter"
    assert (weights / "optimizer.pt").is_file()
    spec = micro_spec(max_steps=1)
    spec.update(trial_id="cont", init_from={"trial": "parent", "weights": str(weights), "optimizer": True, "step": 2})
    spec["hparams"]["sft_steps"] = 0
    spec["eval"]["before"] = False
    child = run_trial(spec, tmp_path / "cont")
    assert child["status"] == "succeeded", child["error"]
    first = _evals(tmp_path / "cont")[0]
    assert first["from_parent"] == "parent" and first["outcomes"] == _evals(tmp_path / "parent")[-1]["outcomes"]
    assert result_metrics(child).eval.accuracy_before == result_metrics(parent).eval.accuracy_after
    assert result_metrics(child).eval.gain_stderr_paired is not None
