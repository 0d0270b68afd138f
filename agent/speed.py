"""How many lines of training run at once on this machine without slowing the line that wins.

Two tiny-gemma trials side by side on 2 cores each train at about 59% of one's speed alone: the
machine's total throughput rises, but the line a session ends up naming gets less compute than
the default trained alone would. So before a local session runs trials in parallel, the speed is
measured, not assumed: a few GRPO steps of a probe trial alone, then k of them side by side, on
the session's own model and data through the session's own kind of launcher. k stays only if each
keeps at least `solo_speed_floor` of the solo speed; otherwise the largest smaller k that does
(at least 1). The figures are cached per (model, dataset, usable cores) in
`$OPENRL_AGENT_CACHE/speed/`, so the measurement is paid once per machine.

The first step of every probe is dropped (its time includes one-off work: allocator warm-up,
compiled kernels), and a probe evaluates a single question: what is timed is the GRPO step.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.lineage import trial_spec
from agent.plan import Plan, fair_share_s
from cluster.base import TERMINAL, Launcher
from rl_core.sessiondir import trial_dir
from rl_core.trialdir import METRICS_FILE, read_jsonl, write_json_atomic
from tools.search_space import SearchSpace

PROBE_STEPS = 4
LauncherFactory = Callable[[int, Path], Launcher]  # (slots, runs_dir) -> a launcher with that many slots


class SpeedError(RuntimeError):
    """A probe trial failed or timed out; the message says which and why."""


@dataclass(frozen=True)
class SideBySide:
    """Mean GRPO step seconds of one probe alone and of k probes running together."""

    k: int
    solo_step_s: float
    side_step_s: float

    @property
    def ratio(self) -> float:
        """Each line's speed side by side as a share of its speed alone."""
        return self.solo_step_s / self.side_step_s if self.side_step_s > 0 else 0.0


def probe_specs(plan: Plan, k: int) -> list[dict[str, Any]]:
    """k probe trials of the plan's model and data at the search space's start point."""
    space = SearchSpace.from_json(plan.search_space)
    specs = []
    for i in range(k):
        spec = trial_spec(space, plan.constraints, f"speed-k{k}", f"probe{i}", space.defaults(), number=i)
        data = spec.to_json()
        data["budget"].update(max_steps=PROBE_STEPS, max_seconds=None, checkpoint_every=0, eval_seconds=None)
        data["eval"].update(before=False, limit=1, every_steps=0, pass_k=0, samples=0, report_split="")
        data["hparams"]["sft_steps"] = 0
        specs.append(data)
    return specs


def run_together(launcher: Launcher, specs: list[dict[str, Any]], runs_dir: Path,
                 timeout_s: float = 900.0) -> list[float]:
    """Run the specs at once; the step seconds of every probe, first steps dropped."""
    handles = [launcher.submit(spec) for spec in specs]
    deadline = time.monotonic() + timeout_s
    while not all(launcher.status(h) in TERMINAL for h in handles):
        if time.monotonic() > deadline:
            for handle in handles:
                launcher.cancel(handle)
            raise SpeedError(f"the speed probe did not finish in {timeout_s:g}s")
        time.sleep(0.2)
    steps: list[float] = []
    for handle in handles:
        result = launcher.result(handle) or {}
        if result.get("status") != "succeeded":
            error = (result.get("error") or {}).get("message") or "no result"
            raise SpeedError(f"speed probe {handle.trial_id} failed: {error}")
        rows = read_jsonl(trial_dir(runs_dir / handle.session, handle.trial_id) / METRICS_FILE)
        steps += [float(r["t_step"]) for r in rows[1:] if isinstance(r.get("t_step"), int | float)]
    if not steps:
        raise SpeedError("the speed probes logged no step times")
    return steps


def measure(plan: Plan, k: int, make_launcher: LauncherFactory) -> SideBySide:
    """One probe alone, then k side by side, each through a launcher with that many slots."""
    with tempfile.TemporaryDirectory(prefix="openrl-speed-") as tmp:
        runs = Path(tmp)
        solo = run_together(make_launcher(1, runs), probe_specs(plan, 1), runs)
        side = run_together(make_launcher(k, runs), probe_specs(plan, k), runs)
    return SideBySide(k, statistics.fmean(solo), statistics.fmean(side))


def cache_file(plan: Plan, cores: int) -> Path:
    root = Path(os.environ.get("OPENRL_AGENT_CACHE", Path.home() / ".cache" / "openrl-agent"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{plan.constraints.model}--{plan.constraints.dataset}--{cores}cpu")
    return root / "speed" / f"{name}.json"


def side_by_side(plan: Plan, k: int, make_launcher: LauncherFactory, *, cores: int,
                 progress: Callable[[str], None] = lambda line: None) -> SideBySide:
    """The cached figure for k lines on this machine, measured on first use."""
    path = cache_file(plan, cores)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if str(k) in cached:
        return SideBySide(**cached[str(k)])
    progress(f"measuring training speed on this machine: {PROBE_STEPS} GRPO steps alone, then {k} trials "
             "side by side (once; cached)")
    figure = measure(plan, k, make_launcher)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**cached, str(k): asdict(figure)})
    return figure


def choose_parallel(plan: Plan, make_launcher: LauncherFactory, *, cores: int,
                    progress: Callable[[str], None] = lambda line: None) -> str | None:
    """Lower plan.constraints.parallel to the most lines that each keep `solo_speed_floor` of the solo
    speed; a plan note says what was measured and why. None when nothing changed."""
    c = plan.constraints
    asked, floor = c.parallel, c.solo_speed_floor
    if asked <= 1:
        return None
    shown = side_by_side(plan, asked, make_launcher, cores=cores, progress=progress)  # what was asked for
    k, figure = asked, shown
    while k > 1 and figure.ratio < floor:
        k -= 1
        if k > 1:
            figure = side_by_side(plan, k, make_launcher, cores=cores, progress=progress)
    if k == asked:
        return None
    note = (f"{asked} trials side by side on this machine would each train at {shown.ratio:.0%} of one's speed "
            f"alone ({shown.solo_step_s:.2f} s vs {shown.side_step_s:.2f} s per GRPO step; floor "
            f"{floor:.0%}): {k} at a time (--force-parallel keeps {asked})")
    c.parallel = k
    plan.sources["parallel"] = "measured"
    if plan.sources.get("trial_seconds") == "budget share":
        c.trial_seconds = fair_share_s(c)
    plan.notes.append(note)
    return note
