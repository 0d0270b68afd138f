"""The research loop as a LangGraph StateGraph:

    START -> reflect -> propose -> launch -> collect -> reflect -> ... -> END
                    \\-> launch (orphans after a restart)   \\-> collect (all slots busy)

`reflect` decides; the other nodes act (agent/loop.py). State is a TypedDict with explicit
reducers and every node returns a partial update. The graph is built by `build_graph`, which
receives its dependencies (planner, launcher); nothing is built at import. Checkpoints go to the
session's SqliteSaver after every step (durability="sync" at invoke time).
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agent.loop import Emit, Research
from agent.plan import Plan
from agent.planners.base import Planner
from cluster.base import Launcher


def merge_running(left: dict[str, Any] | None, right: dict[str, Any] | None) -> dict[str, Any]:
    """trial_id -> {number, handle}; a None value removes the trial (it finished or was paused)."""
    merged = dict(left or {})
    for tid, entry in (right or {}).items():
        if entry is None:
            merged.pop(tid, None)
        else:
            merged[tid] = entry
    return merged


def add_unique(left: list[str] | None, right: list[str] | None) -> list[str]:
    out = list(left or [])
    out += [x for x in (right or []) if x not in out]
    return out


class LoopState(TypedDict, total=False):
    round: int  # last planning round
    running: Annotated[dict[str, Any], merge_running]  # trials this loop tracks
    finished: Annotated[list[str], add_unique]  # trials it collected (the study holds their scores)
    feedback: list[str]  # planner corrections from the last round, shown to it in the next
    active_s: Annotated[float, operator.add]  # seconds spent running (pauses do not count)
    next: str  # reflect's decision: propose | launch | collect | end
    stop_reason: str | None


def route(state: LoopState) -> str:
    return END if state.get("next") == "end" else state.get("next", "propose")


def build_graph(planner: Planner, launcher: Launcher, *, session_dir: Path, plan: Plan,
                emit: Emit | None = None, checkpointer: Any = None, poll_s: float = 0.5) -> Any:
    research = Research(session_dir=session_dir, plan=plan, planner=planner, launcher=launcher,
                        emit=emit, poll_s=poll_s)
    graph = StateGraph(LoopState)
    graph.add_node("reflect", research.reflect)
    graph.add_node("propose", research.propose)
    graph.add_node("launch", research.launch)
    graph.add_node("collect", research.collect)
    graph.add_edge(START, "reflect")
    graph.add_conditional_edges("reflect", route, ["propose", "launch", "collect", END])
    graph.add_edge("propose", "launch")
    graph.add_edge("launch", "collect")
    graph.add_edge("collect", "reflect")
    return graph.compile(checkpointer=checkpointer)
