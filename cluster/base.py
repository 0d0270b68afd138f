"""The launcher contract: where a trial runs is decided here, never what it does.

A trial is one JSON spec (see docs/contracts.md); running it means executing
`python -m rl_core.trial <spec.json> --out <trial_dir>` somewhere and reading back
`<trial_dir>/result.json`. This module must not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

TrialStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "lost"})


@dataclass(frozen=True)
class TrialHandle:
    session: str
    trial_id: str
    backend: str  # "local" | "k8s"
    ref: str  # pid file / job name: whatever the backend needs to find it again


class Launcher(Protocol):
    def submit(self, spec: dict[str, Any]) -> TrialHandle: ...

    def status(self, handle: TrialHandle) -> TrialStatus: ...

    def cancel(self, handle: TrialHandle) -> None: ...

    def logs(self, handle: TrialHandle, tail: int = 200) -> str: ...

    def result(self, handle: TrialHandle) -> dict[str, Any] | None: ...

    def reattach(self, session: str) -> list[TrialHandle]: ...
