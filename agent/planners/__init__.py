"""Planners propose the next trials: an LLM (Gemini or any OpenAI-compatible server) or OfflinePlanner
(TPE + rules). The contract is in base.py; `agent.planners.factory.make_planner` picks one."""

from agent.planners.base import PlannerResult, PlanningContext, Proposal

__all__ = ["PlannerResult", "PlanningContext", "Proposal"]
