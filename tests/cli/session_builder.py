"""Builds session directories with known numbers, for report tests that need exact arithmetic.

It goes through the agent's own session and study code (enqueue a proposal with its rationale,
ask, write the trial files per docs/contracts.md, tell the result), so the Optuna journal, rounds.json
and session.json are the real thing; only the training is replaced by written numbers. The
end-to-end tests run real sessions.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from agent.session import open_study, save_round, save_session
from agent.study import ask, tell_result
from tools.search_space import SearchSpace

BASE_HPARAMS = {
    "learning_rate": 1e-4, "warmup_steps": 10, "schedule": "constant", "lora_rank": 0, "lora_alpha": 32,
    "lora_dropout": 0.0, "target_modules": "all-linear", "kl_beta": 0.0, "group_size": 8, "prompts_per_step": 8,
    "clip_eps_low": 0.2, "clip_eps_high": 0.28, "ppo_epochs": 2, "temperature": 0.7, "top_p": 1.0,
    "max_new_tokens": 96, "loss_type": "grpo", "scale_rewards": False, "dynamic_sampling": True, "grad_clip": 1.0,
    "weight_decay": 0.0, "grad_accum": 1, "sft_steps": 0,
}  # fmt: skip
# Pinned so the leaderboard's key parameters vary only where a test says so.
PINNED = {"kl_beta": 0.0, "group_size": 8, "prompts_per_step": 8, "temperature": 0.7, "loss_type": "grpo",
          "max_steps": 20, "lora_rank": 0}  # fmt: skip


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def _outcomes(accuracy: float, n: int, start: float | None = None, seed: str = "") -> dict[str, bool]:
    """Per-question outcomes with round(accuracy * n) right. The start (before training) has the first
    questions right; after training, as real policies do, it keeps about 85% of those and gets the
    rest of its count from the others (a deterministic draw per trial), so the paired comparison
    sees discordant questions both ways."""
    right = round(accuracy * n)
    if start is None:
        return {f"d{i:04d}": i < right for i in range(n)}
    rng = random.Random(seed)
    before = [i for i in range(round(start * n))]
    kept = [i for i in before if rng.random() < 0.85][:right]
    others = [i for i in range(n) if i not in set(before)]
    rng.shuffle(others)
    now = set(kept) | set(others[: max(0, right - len(kept))])
    return {f"d{i:04d}": i in now for i in range(n)}


class SessionBuilder:
    def __init__(
        self, runs_dir: Path, session_id: str = "s-20261125-181500", goal: str = "raise dev accuracy"
    ):
        self.dir = Path(runs_dir) / session_id
        self.dir.mkdir(parents=True)
        self.space = SearchSpace.load(None)
        self.session = {
            "id": session_id,
            "goal": goal,
            "objective": {"metric": "dev_accuracy_after", "direction": "maximize", "target": None},
            "constraints": {"trials": 0, "parallel": 2, "model": "builtin:micro-gemma", "dataset": "builtin"},
            "planner": {"name": "offline"},
            "launcher": {"name": "local"},
            "search_space": self.space.to_json(),
            "status": {"state": "finished", "stop_reason": "trial budget spent"},
        }
        self.rounds: dict[int, dict] = {}
        self.study = open_study(self.dir)
        save_session(self.dir, self.session)

    def trial(self, trial_id: str, *, before: float = 0.40, after: float | None = 0.50, n: int = 400,
              hparams: dict | None = None, steps: int = 20, round_: int = 1, rationale: str = "",
              error: dict | None = None, finished: bool = True) -> Path:  # fmt: skip
        params = {**PINNED, **(hparams or {})}
        self.study.enqueue_trial(
            params, user_attrs={"rationale": rationale, "round": round_, "planner": "offline"}
        )
        frozen = ask(self.study, self.space.distributions())
        assert frozen.user_attrs["trial_id"] == trial_id, "trials are numbered in order: t0000, t0001, ..."
        record = self.rounds.setdefault(
            round_,
            {
                "round": round_,
                "planner": "offline",
                "fallback": None,
                "notes": [f"round {round_} note"],
                "proposals": [],
            },
        )
        record["proposals"].append({"trial_id": trial_id, "params": frozen.params, "rationale": rationale})
        save_round(self.dir, record)
        self.session["constraints"]["trials"] += 1
        save_session(self.dir, self.session)

        hp = {**BASE_HPARAMS, **{k: v for k, v in frozen.params.items() if k in BASE_HPARAMS}}
        spec = {"trial_id": trial_id, "session": self.dir.name, "model": "builtin:micro-gemma", "dataset": "builtin",
                "train_split": "train", "hparams": hp,
                "reward": {"components": {"execution_match": 1.0}, "params": {}}, "seed": 0,
                "budget": {"max_steps": steps, "max_seconds": 480},
                "eval": {"split": "dev", "limit": n, "every_steps": 0, "pass_k": 0, "samples": 4}}  # fmt: skip
        tdir = self.dir / "trials" / trial_id
        _write(tdir / "spec.json", spec)
        metrics = [{"step": s, "reward_mean": 0.3 + 0.02 * s, "batch_accuracy": 0.2 + 0.02 * s, "elapsed_s": 1.5 * s}
                   for s in range(1, steps + 1)]  # fmt: skip
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        evals = [
            {
                "step": 0,
                "split": "dev",
                "accuracy": before,
                "stderr": _se(before, n),
                "n": n,
                "elapsed_s": 1.0,
                "outcomes": _outcomes(before, n),
            }
        ]
        if after is not None and finished and not error:
            evals.append({"step": steps, "split": "dev", "accuracy": after, "stderr": _se(after, n), "n": n,
                          "elapsed_s": 1.5 * steps, "outcomes": _outcomes(after, n, before, trial_id)})  # fmt: skip
        (tdir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
        if not finished:
            return tdir
        result = {"trial_id": trial_id, "status": "failed" if error else "succeeded", "error": error, "spec": spec,
                  "adapter_path": None if error else "adapter", "metrics": {}}  # fmt: skip
        if not error:
            result["metrics"] = {
                "dev_accuracy_before": before, "dev_accuracy_after": after, "dev_stderr_after": _se(after, n),
                "dev_n": n, "gain": after - before, "steps": steps, "wall_s": 1.5 * steps + 2,
                "reward_mean_last": metrics[-1]["reward_mean"],
            }  # fmt: skip
            (tdir / "adapter").mkdir()
            (tdir / "adapter" / "adapter_config.json").write_text("{}")
        _write(tdir / "result.json", result)
        tell_result(self.study, frozen.number, result, "dev_accuracy_after")
        return tdir

    def set_state(self, state: str, stop_reason: str | None = None) -> None:
        self.session["status"] = {"state": state, "stop_reason": stop_reason}
        save_session(self.dir, self.session)
