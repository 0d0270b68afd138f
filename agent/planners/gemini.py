"""GeminiPlanner: Gemini (google-genai, structured JSON output) proposes the next trials.

Everything but the transport is shared with the OpenAI-compatible planner (agent.planners.llm_planner):
the prompt, the schema derived from the search space, clamping, lineage checks, the bounded wait and
the offline fallback. The key is read from GEMINI_API_KEY or GOOGLE_API_KEY and never stored;
`base_url` (HttpOptions) points the client at another endpoint.
"""

from __future__ import annotations

from typing import Any

from agent.planners.llm import Progress
from agent.planners.llm_planner import LLMPlanner


class GeminiPlanner(LLMPlanner):
    def __init__(self, config: dict[str, Any], fallback: Any, progress: Progress | None = None) -> None:
        super().__init__({**config, "name": "gemini"}, fallback, progress)
