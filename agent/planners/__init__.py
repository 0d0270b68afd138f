"""Planners propose the next trials: GeminiPlanner (google-genai) or OfflinePlanner (TPE + rules)."""

from agent.planners.base import PlannerResult, PlanningContext, Proposal, make_planner

__all__ = ["PlannerResult", "PlanningContext", "Proposal", "make_planner"]
