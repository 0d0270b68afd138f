"""TinkerLauncher: each trial is a client of a Tinker-compatible endpoint (`openrl-agent serve`, or
any server that speaks the Tinker API), run as a local process.

The process is `python -m rl_core.serve.client_trial <launch_spec.json> --out <trial_dir> --endpoint URL`:
it keeps the tokenizer and the environment (DuckDB rewards) and sends training and sampling to the
endpoint, writing the same trial directory and result.json as `rl_core.trial`. Everything else
(slots, wall limits, cancel, logs, re-attaching after a restart) is the LocalLauncher's. A client
needs about one core for scoring and tokenising, so slots default to the cores here; the endpoint's
own queue time-slices the trials' requests on its device. This module must not import torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cluster.local import LocalLauncher
from rl_core.trialdir import LAUNCH_SPEC_FILE


class TinkerLauncher(LocalLauncher):
    backend = "tinker"

    def __init__(self, endpoint: str, runs_dir: str | os.PathLike[str] = "runs", slots: int | None = None,
                 wall_s: float | None = None, kill_grace_s: float = 5.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        super().__init__(runs_dir=runs_dir, slots=slots or len(os.sched_getaffinity(0)), threads_per_trial=1,
                         wall_s=wall_s, command=self.command, kill_grace_s=kill_grace_s)

    def command(self, spec: dict[str, Any], trial_dir: Path) -> list[str]:
        del spec  # the spec travels as a file
        return [sys.executable, "-m", "rl_core.serve.client_trial", str(trial_dir / LAUNCH_SPEC_FILE),
                "--out", str(trial_dir), "--endpoint", self.endpoint]
