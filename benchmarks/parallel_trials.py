"""Local slots vs one-at-a-time: 4 short tiny-policy trials, sequential (1 slot x 2 threads) then
parallel (2 slots x 1 thread), through the real LocalLauncher and trial runner.

    .venv/bin/python benchmarks/parallel_trials.py [--trials 4] [--model builtin:micro-gemma] [--steps 3]

Prints both wall times and the speed-up (target >= 1.5x on 2 cores). Why slots win: a short trial
spends much of its time in single-threaded work (interpreter and library start-up, model load,
token-by-token generation), which a second thread does not speed up but a second process overlaps.
Timings on a shared machine are noisy; run it on an idle one for figures you quote.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.base import wait  # noqa: E402
from cluster.local import LocalLauncher  # noqa: E402


def trial_spec(i: int, model: str, steps: int) -> dict:
    return {"trial_id": f"b{i}", "session": "bench", "model": model, "seed": i,
            "hparams": {"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 24, "ppo_epochs": 1,
                        "warmup_steps": 0, "learning_rate": 1e-4 * (i + 1)},
            "budget": {"max_steps": steps, "max_seconds": 600, "checkpoint_every": 0},
            "eval": {"limit": 8, "samples": 0, "before": False}}


def run(slots: int, threads: int, specs: list[dict]) -> float:
    with tempfile.TemporaryDirectory(prefix="openrl-bench-") as runs:
        launcher = LocalLauncher(runs_dir=runs, slots=slots, threads_per_trial=threads)
        start = time.perf_counter()
        handles = [launcher.submit(spec) for spec in specs]
        statuses = wait(launcher, handles, interval_s=0.1)
        elapsed = time.perf_counter() - start
        failed = [h.trial_id for h, s in statuses.items() if s != "succeeded"]
        if failed:
            tail = launcher.logs(handles[0], 15)
            raise SystemExit(f"trials {failed} did not succeed; first log tail:\n{tail}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--model", default="builtin:micro-gemma")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time 1 slot x 1 thread")
    args = parser.parse_args()
    specs = [trial_spec(i, args.model, args.steps) for i in range(args.trials)]
    print(f"{args.trials} trials of {args.model}, {args.steps} GRPO steps each; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    # Warm-up: builds/caches the model and dataset once so neither timed run pays for it.
    run(1, 2, [{**specs[0], "trial_id": "warmup", "budget": {"max_steps": 1, "max_seconds": 600}}])
    sequential = run(1, 2, specs)
    print(f"sequential  1 slot  x 2 threads: {sequential:7.1f} s")
    parallel = run(2, 1, specs)
    print(f"parallel    2 slots x 1 thread : {parallel:7.1f} s")
    print(f"speed-up: {sequential / parallel:.2f}x (target >= 1.5x)")
    if args.reference:
        # Separates the two effects: overlapping processes vs. 2 threads not helping (or hurting).
        single = run(1, 1, specs)
        print(f"reference   1 slot  x 1 thread : {single:7.1f} s (slots alone: {single / parallel:.2f}x)")


if __name__ == "__main__":
    main()
