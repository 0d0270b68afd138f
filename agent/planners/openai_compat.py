"""OpenAIPlanner: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM...) proposes
the next trials through the official `openai` client's Chat Completions with a JSON-schema
`response_format`.

Settings: `model` (config `openai_model`, env OPENRL_AGENT_OPENAI_MODEL, default gpt-4o-mini),
`base_url` (config `openai_base_url`, env OPENAI_BASE_URL; unset means api.openai.com), the key
from OPENAI_API_KEY (a local server without auth needs none). Behaviour is the Gemini planner's:
same prompt and schema, clamping, retries within one bounded wait, offline fallback.
"""

from __future__ import annotations

from typing import Any

from agent.planners.llm import Progress
from agent.planners.llm_planner import LLMPlanner


class OpenAIPlanner(LLMPlanner):
    def __init__(self, config: dict[str, Any], fallback: Any, progress: Progress | None = None) -> None:
        super().__init__({**config, "name": "openai"}, fallback, progress)
