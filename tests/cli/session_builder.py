"""Writes session directories laid out per docs/contracts.md, for report tests that need exact numbers.

The end-to-end tests use real sessions; these hand-built ones pin down the report's arithmetic
(gain vs standard error, ranking, failures) where a real run's numbers are not predictable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

BASE_HPARAMS = {
    "learning_rate": 1e-4,
    "warmup_steps": 10,
    "schedule": "constant",
    "lora_rank": 0,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "target_modules": "all-linear",
    "kl_beta": 0.0,
    "group_size": 8,
    "prompts_per_step": 8,
    "clip_eps_low": 0.2,
    "clip_eps_high": 0.28,
    "ppo_epochs": 2,
    "temperature": 0.7,
    "top_p": 1.0,
    "max_new_tokens": 96,
    "loss_type": "grpo",
    "scale_rewards": False,
    "dynamic_sampling": True,
    "grad_clip": 1.0,
    "weight_decay": 0.0,
    "grad_accum": 1,
    "sft_steps": 0,
}


def _write(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


class SessionBuilder:
    def __init__(
        self, runs_dir: Path, session_id: str = "s-20261125-181500", goal: str = "raise dev accuracy"
    ):
        self.dir = Path(runs_dir) / session_id
        self.dir.mkdir(parents=True)
        # session.json is the Plan plus id and status (agent/session.py); rounds.json one record a round.
        self.session = {
            "id": session_id,
            "goal": goal,
            "objective": {"metric": "dev_accuracy_after", "direction": "maximize", "target": None},
            "constraints": {"trials": 0, "parallel": 2, "model": "builtin:micro-gemma", "dataset": "builtin"},
            "planner": {"name": "offline"},
            "launcher": {"name": "local"},
            "search_space": {},
            "status": {"state": "finished", "stop_reason": "all trials done"},
        }
        self.rounds: list[dict] = []
        self.study_trials: list[tuple[dict, float | None]] = []
        self.save()

    def save(self) -> None:
        _write(self.dir / "session.json", self.session)
        _write(self.dir / "rounds.json", self.rounds)

    def trial(
        self,
        trial_id: str,
        *,
        before: float = 0.40,
        after: float | None = 0.50,
        n: int = 400,
        hparams: dict | None = None,
        steps: int = 20,
        round_: int = 1,
        rationale: str = "",
        error: dict | None = None,
        finished: bool = True,
        adapter: bool = True,
    ) -> Path:
        hp = {**BASE_HPARAMS, **(hparams or {})}
        spec = {
            "trial_id": trial_id,
            "session": self.dir.name,
            "model": "builtin:micro-gemma",
            "dataset": "builtin",
            "train_split": "train",
            "hparams": hp,
            "reward": {"components": {"execution_match": 1.0}, "params": {}},
            "seed": 0,
            "budget": {"max_steps": steps, "max_seconds": 480},
            "eval": {"split": "dev", "limit": n, "every_steps": 0, "pass_k": 0, "samples": 4},
        }
        tdir = self.dir / "trials" / trial_id
        _write(tdir / "spec.json", spec)
        metrics = [
            {"step": s, "reward_mean": 0.3 + 0.02 * s, "batch_accuracy": 0.2 + 0.02 * s, "elapsed_s": 1.5 * s}
            for s in range(1, steps + 1)
        ]
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        evals = [
            {
                "step": 0,
                "split": "dev",
                "accuracy": before,
                "stderr": _se(before, n),
                "n": n,
                "elapsed_s": 1.0,
            }
        ]
        if after is not None and finished and not error:
            evals.append(
                {
                    "step": steps,
                    "split": "dev",
                    "accuracy": after,
                    "stderr": _se(after, n),
                    "n": n,
                    "elapsed_s": 1.5 * steps,
                }
            )
        (tdir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
        record = next((r for r in self.rounds if r["round"] == round_), None)
        if record is None:
            record = {"round": round_, "planner": "offline", "fallback": None, "notes": [], "proposals": []}
            self.rounds.append(record)
        record["proposals"].append({"trial_id": trial_id, "params": hparams or {}, "rationale": rationale})
        self.session["constraints"]["trials"] += 1
        self.save()
        if not finished:
            return tdir
        status = "failed" if error else "succeeded"
        result = {
            "trial_id": trial_id,
            "status": status,
            "error": error,
            "spec": spec,
            "adapter_path": "adapter" if adapter and not error else None,
            "metrics": {}
            if error
            else {
                "dev_accuracy_before": before,
                "dev_accuracy_after": after,
                "dev_stderr_after": _se(after, n),
                "dev_n": n,
                "gain": after - before,
                "steps": steps,
                "wall_s": 1.5 * steps + 2,
                "reward_mean_last": metrics[-1]["reward_mean"],
            },
        }
        if adapter and not error:
            (tdir / "adapter").mkdir()
            (tdir / "adapter" / "adapter_config.json").write_text("{}")
        _write(tdir / "result.json", result)
        self.study_trials.append(
            ({k: hp[k] for k in ("learning_rate", "lora_rank")}, None if error else after)
        )
        return tdir

    def write_study(self) -> None:
        """A real Optuna journal holding the same trials, as the agent's search space would."""
        import optuna
        from optuna.distributions import CategoricalDistribution, FloatDistribution
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(self.dir / "study.journal")))
        study = optuna.create_study(storage=storage, study_name=self.dir.name, direction="maximize")
        dists = {
            "learning_rate": FloatDistribution(1e-6, 1e-2, log=True),
            "lora_rank": CategoricalDistribution([0, 8, 16, 32]),
        }
        for params, value in self.study_trials:
            trial = optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=value,
                state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL,
            )
            study.add_trial(trial)
