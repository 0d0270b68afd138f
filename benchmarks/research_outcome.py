"""Research outcome: what each method's named best model scores on the sealed test split, for the
same wall-clock budget on the same machine.

Methods (the built-in tiny-gemma and benchmark; the goal asks for 2 slots, and the session methods
keep as many as the measured speed side by side allows, as `start` does (agent.api.fit_parallel;
OPENRL_BENCH_FIT_PARALLEL=0 keeps 2); the same runner, launcher and data):
- agent:  `openrl-agent start` with the offline planner and branching on (continue the best,
          branch from it), its time budget including the test-split confirmation;
- tpe:    Optuna TPE, every trial independent from the base policy (no branching, no rules),
          same session machinery and confirmation;
- single: the default recipe trained as one trial for the whole budget on both cores (the
          strongest simple baseline), then its weights and the base evaluated on test.
Every method gets the same ingredients: the default recipe has no supervised stage for the built-in
policy (its warm start is in the model), and the agent's search space does not add one.

Each row also prints the GRPO groups trained along the named model's line (the winner and every
ancestor it started from; steps x prompts per step): the compute the answer actually got.

Each method's named model (the dev winner; the single trial's result) is compared with the base on
all 400 test questions, paired (rl_core.stats). Per seed and on average, with paired standard
errors, plus each run's wall time against its budget. Target (issue): the agent's mean test
accuracy at least 3 points above the better baseline, and on no seed below the single-trial
baseline by more than one paired SE. Run on quiet cores: other jobs change how much training a
budget buys.

    .venv/bin/python benchmarks/research_outcome.py --budget-minutes 15 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.planners.base import PlannerResult, PlanningContext, Proposal  # noqa: E402
from rl_core.stats import accuracy, paired  # noqa: E402
from rl_core.trialdir import (  # noqa: E402
    EVAL_FILE,
    LAUNCH_SPEC_FILE,
    WEIGHTS_DIR,
    read_jsonl,
    read_result,
    result_metrics,
    write_json_atomic,
)

# 8 trials, 2 at a time: each planned trial gets a quarter of the budget (15 min -> 225 s of GRPO),
# long enough to learn; the time budget, not the count, ends the session.
GOAL = "raise dev execution accuracy of tiny-gemma, 8 trials, 2 at a time"
MODEL = "builtin:tiny-gemma"
FIT_PARALLEL = os.environ.get("OPENRL_BENCH_FIT_PARALLEL", "1") != "0"  # 0: the old fixed 2 slots


class TPEOnly:
    """Every slot left to Optuna's TPE sampler: independent trials from the base policy."""

    name = "tpe"

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        return PlannerResult([Proposal({}, "TPE") for _ in range(max(0, ctx.k))], self.name)


def run_session_method(method: str, seed: int, budget_min: float, runs: Path) -> dict[str, Any]:
    from agent.api import create_session, fit_parallel, make_launcher, plan_goal, run_session
    from rl_core import sessiondir

    overrides = {"planner": "offline", "budget_minutes": budget_min, "seed": seed, "pruner": "none",
                 "branching": method == "agent"}
    plan = plan_goal(GOAL, overrides)
    if FIT_PARALLEL:  # what `start` does: only as many slots as keep each trial near its solo speed
        note = fit_parallel(plan)
        if note:
            print(f"seed {seed} {method}: {note}", flush=True)
    session_dir = create_session(plan, runs)
    session = json.loads(sessiondir.session_file(session_dir).read_text())
    t0 = time.monotonic()
    run_session(session_dir, planner=TPEOnly() if method == "tpe" else None,
                launcher=make_launcher(session, session_dir),
                confirm_launcher=make_launcher(session, sessiondir.confirm_dir(session_dir)))
    wall = time.monotonic() - t0
    path = sessiondir.confirm_file(session_dir)
    confirm = json.loads(path.read_text()) if path.exists() else {}
    if not confirm.get("winner"):  # no trial finished in the budget: nothing to name
        return {"wall_s": wall, "winner": None, "dev": None, "base": {}, "model": {},
                "trials": len(sessiondir.trial_ids(session_dir)), "line_groups": 0, "slots": plan.constraints.parallel}
    winner = confirm["winner"]
    return {"wall_s": wall, "winner": winner, "dev": confirm["trials"][0]["dev_accuracy"],
            "line_groups": _line_groups(session_dir, winner), "slots": plan.constraints.parallel,
            "base": _outcomes(sessiondir.confirm_job_dir(session_dir, "base")),
            "model": _outcomes(sessiondir.confirm_job_dir(session_dir, winner)),
            "trials": len(sessiondir.trial_ids(session_dir))}


def run_single(seed: int, budget_min: float, runs: Path) -> dict[str, Any]:
    """One trial of the default recipe on both cores: GRPO for the budget minus its evaluations."""
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    overhead_s = 90.0  # model load, dev evaluations before and after, and the two test evaluations
    spec = {"trial_id": "single", "model": MODEL, "seed": seed,
            "budget": {"max_steps": None, "max_seconds": budget_min * 60 - overhead_s, "checkpoint_every": 0}}
    _run_trial(spec, runs / "single", threads=2)
    result = read_result(runs / "single")
    evaluate = {"max_steps": 0, "max_seconds": None, "checkpoint_every": 0}
    test = {"split": "test", "limit": 0, "samples": 0, "before": False}
    _run_trial({"trial_id": "base", "model": MODEL, "budget": evaluate, "eval": test}, runs / "base", threads=2)
    _run_trial({"trial_id": "model", "model": MODEL, "budget": evaluate, "eval": test,
                "init_from": {"trial": "single", "weights": str((runs / "single" / WEIGHTS_DIR).resolve())}},
               runs / "model", threads=2)
    return {"wall_s": time.monotonic() - t0, "winner": "single", "dev": result_metrics(result).eval.accuracy_after,
            "line_groups": _groups(result), "slots": 1,
            "base": _outcomes(runs / "base"), "model": _outcomes(runs / "model"), "trials": 1}


def _groups(result: dict[str, Any]) -> int:
    """GRPO groups a trial trained: its steps x prompts per step."""
    hparams = (result.get("spec") or {}).get("hparams") or {}
    return int(result_metrics(result).steps or 0) * int(hparams.get("prompts_per_step", 16))


def _line_groups(session_dir: Path, winner: str) -> int:
    """GRPO groups along the winner's line: the winner and every ancestor it started from."""
    from rl_core import sessiondir

    total, tid = 0, winner
    while tid:
        result = read_result(sessiondir.trial_dir(session_dir, tid)) or {}
        total += _groups(result)
        tid = (result.get("lineage") or {}).get("parent")
    return total


def _run_trial(spec: dict[str, Any], out: Path, threads: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / LAUNCH_SPEC_FILE, spec)
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENRL_TORCH_THREADS")}}
    subprocess.run([sys.executable, "-m", "rl_core.trial", str(out / LAUNCH_SPEC_FILE), "--out", str(out)],
                   env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _outcomes(job: Path) -> dict[str, bool]:
    rows = read_jsonl(job / EVAL_FILE)
    return rows[-1]["outcomes"] if rows else {}


def summarise(name: str, r: dict[str, Any], budget_s: float) -> dict[str, Any]:
    if not r["model"]:
        return {"method": name, "test": None, "test_se": None, "n": 0, "diff": None, "diff_se": None, "dev": None,
                "winner": None, "trials": r["trials"], "wall_s": round(r["wall_s"], 1),
                "overrun_s": round(r["wall_s"] - budget_s, 1), "model_outcomes": {}}
    test, se, n = accuracy(r["model"])
    cmp = paired(r["base"], r["model"])
    return {"method": name, "test": test, "test_se": se, "n": n, "diff": cmp.diff, "diff_se": cmp.se,
            "dev": r["dev"], "winner": r["winner"], "trials": r["trials"], "wall_s": round(r["wall_s"], 1),
            "overrun_s": round(r["wall_s"] - budget_s, 1), "model_outcomes": r["model"],
            "line_groups": r.get("line_groups"), "slots": r.get("slots")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", default="agent,tpe,single")
    parser.add_argument("--runs-dir", default="runs/bench-outcome")
    parser.add_argument("--out", default="runs/bench-outcome/results.jsonl",
                        help="results are appended here; the summary covers every (seed, method) in it")
    parser.add_argument("--summary", action="store_true", help="print the summary of --out and run nothing")
    args = parser.parse_args()
    runs, out = Path(args.runs_dir), Path(args.out)
    budget_s = args.budget_minutes * 60
    if args.summary:
        if not out.is_file():
            raise SystemExit(f"no results at {out}: run the benchmark first, or point --out at its results file")
        print_summary(_latest_rows(out))
        return
    for seed in args.seeds:
        for method in args.methods.split(","):
            work = runs / f"{method}-{seed}"
            shutil.rmtree(work, ignore_errors=True)
            r = run_single(seed, args.budget_minutes, work) if method == "single" else \
                run_session_method(method, seed, args.budget_minutes, work)
            row = {"seed": seed, **summarise(method, r, budget_s)}
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            if row["test"] is None:
                print(f"seed {seed} {method:6s} no model: no trial finished within the budget "
                      f"(wall {row['wall_s']:.0f}s)", flush=True)
                continue
            print(f"seed {seed} {method:6s} test {100 * row['test']:.1f}% (n={row['n']})  vs base "
                  f"{100 * row['diff']:+.1f} ± {100 * row['diff_se']:.1f} (paired)  dev {100 * (row['dev'] or 0):.1f}%  "
                  f"winner {row['winner']}  trials {row['trials']}  wall {row['wall_s']:.0f}s "
                  f"(budget {budget_s:.0f}s, overrun {row['overrun_s']:+.0f}s)  slots {row['slots']}  GRPO groups "
                  f"on the winner's line {row['line_groups']}", flush=True)
    print_summary(_latest_rows(out))


def _latest_rows(out: Path) -> list[dict[str, Any]]:
    """Every (seed, method) recorded in the results file, the latest run of each: runs made by
    separate invocations (one seed at a time, say) are summarised together."""
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                latest[(row["seed"], row["method"])] = row
    return [latest[k] for k in sorted(latest)]


def print_summary(rows: list[dict[str, Any]]) -> None:
    print("\nmean over seeds (test accuracy), each method against the base and against the agent, paired on "
          "the same test questions per seed")
    by_method: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        if row["test"] is not None:
            by_method.setdefault(row["method"], {})[row["seed"]] = row
    for method, rs in by_method.items():
        tests = [r["test"] for r in rs.values()]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        per_seed = ", ".join(f"seed {s} {100 * r['test']:.1f}% ({100 * r['diff']:+.1f} ± {100 * r['diff_se']:.1f})"
                             for s, r in sorted(rs.items()))
        print(f"{method:6s} {100 * statistics.fmean(tests):.1f}% (seed sd {100 * sd:.1f}; {len(rs)} seed(s): {per_seed}); "
              f"max overrun {max(r['overrun_s'] for r in rs.values()):+.0f}s")
    for other in [m for m in by_method if m != "agent"]:
        for seed in sorted(set(by_method.get("agent", {})) & set(by_method[other])):
            a, b = by_method["agent"][seed], by_method[other][seed]
            cmp = paired(b["model_outcomes"], a["model_outcomes"])
            print(f"seed {seed}: agent - {other} = {100 * cmp.diff:+.1f} ± {100 * cmp.se:.1f} points "
                  f"(paired on the test questions, McNemar p={cmp.p_mcnemar:.3g})")


if __name__ == "__main__":
    main()
