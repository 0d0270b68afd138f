"""The base policy's greedy evaluation is computed once and reused (rl_core/evalcache.py): real
micro-gemma trials with the real DuckDB environment, the cache in a temporary directory."""

from __future__ import annotations

import json

import pytest
import torch

from rl_core.evalcache import cache_dir
from rl_core.trial import run_trial


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec(trial_id: str, *, max_new_tokens: int = 16, seed: int = 0, max_steps: int = 1, **eval_) -> dict:
    return {"trial_id": trial_id, "model": "builtin:micro-gemma", "seed": seed,
            "hparams": {"group_size": 2, "prompts_per_step": 1, "max_new_tokens": max_new_tokens,
                        "warmup_steps": 0, "dynamic_sampling": False},
            "budget": {"max_steps": max_steps, "max_seconds": 60, "checkpoint_every": 0},
            "eval": {"limit": 8, "samples": 0, **eval_}}


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]


def test_the_base_evaluation_is_computed_once_and_reused(tmp_path):
    first = run_trial(spec("a"), tmp_path / "a")
    assert first["status"] == "succeeded", first["error"]
    assert len(list(cache_dir().glob("*.json"))) == 1
    second = run_trial(spec("b", seed=7), tmp_path / "b")  # another seed: the same base, the same questions
    assert second["status"] == "succeeded", second["error"]
    computed, reused = rows(tmp_path / "a")[0], rows(tmp_path / "b")[0]
    assert "cached" not in computed and reused["cached"] is True and reused["step"] == 0
    assert reused["outcomes"] == computed["outcomes"] and reused["accuracy"] == computed["accuracy"]
    assert "cached" not in rows(tmp_path / "b")[-1]  # after a GRPO step the policy is no longer the base


def test_what_changes_the_outcomes_changes_the_key(tmp_path):
    run_trial(spec("a"), tmp_path / "a")
    run_trial(spec("longer", max_new_tokens=24), tmp_path / "longer")
    run_trial(spec("fewer", limit=4), tmp_path / "fewer")
    assert all("cached" not in rows(tmp_path / name)[0] for name in ("longer", "fewer"))
    assert len(list(cache_dir().glob("*.json"))) == 3


def test_an_evaluation_only_base_job_on_another_split_is_cached_too(tmp_path):
    job = spec("base", max_steps=0, split="test", before=False)
    run_trial(job, tmp_path / "first")
    run_trial(job, tmp_path / "again")
    (first,), (again,) = rows(tmp_path / "first"), rows(tmp_path / "again")
    assert first["split"] == "test" and again["cached"] is True and again["outcomes"] == first["outcomes"]
