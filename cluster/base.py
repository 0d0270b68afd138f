"""The launcher contract: where a trial runs is decided here, never what it does.

A trial is one JSON spec (see docs/contracts.md); running it means executing
`python -m rl_core.trial <spec.json> --out <trial_dir>` somewhere and reading back
`<trial_dir>/result.json`. This module must not import torch.

Every backend follows the same life cycle, checked by one conformance suite
(tests/cluster/test_conformance.py):

    handle = launcher.submit(spec)      # returns at once; status "queued" or "running"
    launcher.poll()                     # call in the collect loop: starts queued trials, enforces limits
    launcher.status(handle)             # queued | running | succeeded | failed | cancelled | lost
    launcher.result(handle)             # parsed result.json once terminal; None while running and for
                                        # cancelled trials (a result written while stopping is set aside)
    launcher.reattach(session)          # after a restart: handles of every trial of the session

`lost` means the trial vanished while nobody watched it (its process or Job is gone and it left no
result); a launcher writes a failed result.json for it so the agent can record the trial and move on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

TrialStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "lost"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "lost"})

SESSION_LABEL = "openrl-agent/session"
TRIAL_LABEL = "openrl-agent/trial"


class LauncherError(RuntimeError):
    """A launcher cannot do what was asked (bad spec identity, unreachable cluster); says the fix."""


@dataclass(frozen=True)
class TrialHandle:
    session: str
    trial_id: str
    backend: str  # "local" | "k8s"
    ref: str  # pid file / job name: whatever the backend needs to find it again


class Launcher(Protocol):
    def submit(self, spec: dict[str, Any]) -> TrialHandle: ...

    def poll(self) -> None:
        """Advance the backend without blocking: start queued trials on free slots, enforce wall
        limits, record finished trials. Cheap; the agent calls it every collect iteration."""
        ...

    def status(self, handle: TrialHandle) -> TrialStatus: ...

    def cancel(self, handle: TrialHandle) -> None: ...

    def logs(self, handle: TrialHandle, tail: int = 200) -> str: ...

    def result(self, handle: TrialHandle) -> dict[str, Any] | None: ...

    def reattach(self, session: str) -> list[TrialHandle]: ...


def spec_identity(spec: dict[str, Any]) -> tuple[str, str]:
    """The (session, trial_id) a spec names; both become path parts and Kubernetes label values."""
    session, trial_id = spec.get("session"), spec.get("trial_id")
    for name, value in (("session", session), ("trial_id", trial_id)):
        if not isinstance(value, str) or not value:
            raise LauncherError(f"the trial spec needs a non-empty '{name}' to be launched")
        ok_chars = all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)
        if len(value) > 63 or not ok_chars or not (value[0].isalnum() and value[-1].isalnum()):
            raise LauncherError(
                f"spec {name} {value!r} must be at most 63 letters, digits, '-', '_' or '.', starting "
                "and ending with a letter or digit (it names a directory and a Kubernetes label)")
    return session, trial_id  # type: ignore[return-value]


def wait(launcher: Launcher, handles: list[TrialHandle], timeout_s: float | None = None,
         interval_s: float = 0.2) -> dict[TrialHandle, TrialStatus]:
    """Poll until every handle is terminal (or the timeout passes); returns the last statuses."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        launcher.poll()
        statuses = {h: launcher.status(h) for h in handles}
        if all(s in TERMINAL for s in statuses.values()):
            return statuses
        if deadline is not None and time.monotonic() > deadline:
            return statuses
        time.sleep(interval_s)
