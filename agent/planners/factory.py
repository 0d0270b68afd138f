"""The planner a session's settings name. Kept apart from the contract (base.py), which every
planner imports, so that no planner module and the contract import each other."""

from __future__ import annotations

from typing import Any

from agent.planners.base import Planner
from agent.planners.gemini import GeminiPlanner
from agent.planners.llm import Progress
from agent.planners.offline import OfflinePlanner
from agent.planners.openai_compat import OpenAIPlanner

LLM_PLANNERS = {"gemini": GeminiPlanner, "openai": OpenAIPlanner}


def make_planner(config: dict[str, Any], seed: int = 0, progress: Progress | None = None) -> Planner:
    """`{"name": "offline"}`, or `{"name": "gemini" | "openai", ...}` with the offline planner as fallback.
    `progress` receives a line per LLM attempt (the live view shows it)."""
    llm = LLM_PLANNERS.get(str(config.get("name")))
    if llm is None:
        return OfflinePlanner(seed=seed)
    return llm(config, fallback=OfflinePlanner(seed=seed), progress=progress)
