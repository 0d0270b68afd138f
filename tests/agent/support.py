"""Helpers for loop tests: the real LocalLauncher running tests/agent/scripted_trial.py, and a
planner that proposes a fixed list of configs (so a test knows which trial gets which params)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agent.planners.base import PlannerResult, PlanningContext, Proposal
from cluster.local import SPEC_FILE, LocalLauncher

SCRIPTED_TRIAL = Path(__file__).with_name("scripted_trial.py")


def scripted_command(spec: dict[str, Any], trial_dir: Path) -> list[str]:
    return [sys.executable, str(SCRIPTED_TRIAL), str(trial_dir / SPEC_FILE), "--out", str(trial_dir)]


def scripted_launcher(session_dir: Path, slots: int = 2) -> LocalLauncher:
    return LocalLauncher(runs_dir=Path(session_dir).parent, slots=slots, threads_per_trial=1,
                         command=scripted_command, kill_grace_s=1.0)


class ListPlanner:
    """Proposes the given param dicts in order (then empty ones, which Optuna fills)."""

    name = "list"

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        self.configs = list(configs)
        self.contexts: list[PlanningContext] = []

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        self.contexts.append(ctx)
        out = []
        for _ in range(ctx.k):
            params = self.configs.pop(0) if self.configs else {}
            out.append(Proposal(params, f"scripted {params}"))
        return PlannerResult(out, self.name)
