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
          strongest simple baseline), then its weights and the base evaluated on test;
- sft:    supervised training on gold SQL (the spec's supervised defaults) as one trial for the
          whole budget: its step count fills the budget at the seconds per step a short probe
          measures on this machine; no GRPO; the trial evaluates dev, then test (report split);
- first:  the agent's own first proposal (the offline planner's round 1) trained as one trial for
          the whole budget, skipped when it is the default recipe: the agent's figure then measures
          its search, not a better prior.

A cluster, simulated (`--virtual-slots K`, cluster/virtual.py): every trial really runs alone on
both cores, one at a time, while the sessions see a discrete-event clock that charges each of K
slots as a separate machine (a decision at virtual time t sees only results that ended by t). The
session methods get K slots (`parallel` = K, no speed check), their confirmation runs on the same
clock, and "wall" is the session's virtual length. Arms: agent, best4 (the default recipe trained
with 4 seeds side by side, each for the whole budget; the best by dev is evaluated on test) and
single. A 4-slot arm takes about 4x its budget of real time.

Each row also prints the GRPO groups trained along the named model's line (the winner and every
ancestor it started from; steps x prompts per step): the compute the answer actually got.

Each method's named model (the dev winner; the single trial's result) is compared with the base on
all 400 test questions, paired (rl_core.stats). Per seed and on average, with paired standard
errors, plus each run's wall time against its budget. Target (issue): the agent's mean test
accuracy at least 3 points above the better baseline, and on no seed below the single-trial
baseline by more than one paired SE. Run on quiet cores: other jobs change how much training a
budget buys.

    .venv/bin/python benchmarks/research_outcome.py --budget-minutes 15 --seeds 0 1 2
    .venv/bin/python benchmarks/research_outcome.py --virtual-slots 4 --budget-minutes 10 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.planners.base import PlannerResult, PlanningContext, Proposal  # noqa: E402
from cluster.base import wait  # noqa: E402
from cluster.virtual import VirtualClock, VirtualLauncher  # noqa: E402
from rl_core import sessiondir  # noqa: E402
from rl_core.spec import TrialSpec  # noqa: E402
from rl_core.stats import accuracy, paired  # noqa: E402
from rl_core.trialdir import (  # noqa: E402
    EVAL_FILE,
    LAUNCH_SPEC_FILE,
    LOG_FILE,
    REPORT_FILE,
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
OVERHEAD_S = 90.0  # a one-trial arm's model load, dev evaluations before and after, two test evaluations
SFT_PROBE_STEPS = 8
EVALUATE = {"max_steps": 0, "max_seconds": None, "checkpoint_every": 0}
TEST = {"split": "test", "limit": 0, "samples": 0, "before": False}


class TPEOnly:
    """Every slot left to Optuna's TPE sampler: independent trials from the base policy."""

    name = "tpe"

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        return PlannerResult([Proposal({}, "TPE") for _ in range(max(0, ctx.k))], self.name)


def run_session_method(method: str, seed: int, budget_min: float, runs: Path, slots: int = 0) -> dict[str, Any]:
    """`slots` > 0: on a virtual cluster of that many machines (wall: the session's virtual length)."""
    from agent.api import create_session, fit_parallel, make_launcher, plan_goal, run_session
    from rl_core import sessiondir

    overrides = {"planner": "offline", "budget_minutes": budget_min, "seed": seed, "pruner": "none",
                 "branching": method == "agent", **({"parallel": slots} if slots else {})}
    plan = plan_goal(GOAL, overrides)
    if FIT_PARALLEL and not slots:  # what `start` does: only as many slots as keep each trial near its solo speed
        note = fit_parallel(plan)
        if note:
            print(f"seed {seed} {method}: {note}", flush=True)
    session_dir = create_session(plan, runs)
    session = json.loads(sessiondir.session_file(session_dir).read_text())
    if slots:
        clock = VirtualClock()
        launcher = VirtualLauncher(session_dir.parent, slots, clock=clock)
        # as make_launcher does: the runs directory of the confirmation's session ("confirm") is the session's
        confirm_launcher = VirtualLauncher(sessiondir.confirm_dir(session_dir).parent, slots, clock=clock)
        now = clock.now
    else:
        launcher = make_launcher(session, session_dir)
        confirm_launcher = make_launcher(session, sessiondir.confirm_dir(session_dir))
        now = time.monotonic
    t0, real0 = now(), time.monotonic()
    run_session(session_dir, planner=TPEOnly() if method == "tpe" else None, launcher=launcher,
                confirm_launcher=confirm_launcher, poll_s=0.1 if slots else 0.5)
    wall, real = now() - t0, time.monotonic() - real0
    path = sessiondir.confirm_file(session_dir)
    confirm = json.loads(path.read_text()) if path.exists() else {}
    if not confirm.get("winner"):  # no trial finished in the budget: nothing to name
        return {"wall_s": wall, "real_s": real, "winner": None, "dev": None, "base": {}, "model": {},
                "trials": len(sessiondir.trial_ids(session_dir)), "line_groups": 0, "slots": plan.constraints.parallel}
    winner = confirm["winner"]
    return {"wall_s": wall, "real_s": real, "winner": winner, "dev": confirm["trials"][0]["dev_accuracy"],
            "line_groups": _line_groups(session_dir, winner), "slots": plan.constraints.parallel,
            "base": _outcomes(sessiondir.confirm_job_dir(session_dir, "base")),
            "model": _outcomes(sessiondir.confirm_job_dir(session_dir, winner)),
            "trials": len(sessiondir.trial_ids(session_dir))}


def run_single(seed: int, budget_min: float, runs: Path, name: str = "single",
               hparams: dict[str, Any] | None = None, reward: dict[str, Any] | None = None) -> dict[str, Any]:
    """One trial on both cores (the default recipe, or the given hparams and reward): GRPO for the
    budget minus its evaluations; then its weights and the base evaluated on test."""
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    spec = {"trial_id": name, "model": MODEL, "seed": seed,
            "budget": {"max_steps": None, "max_seconds": grpo_seconds(budget_min), "checkpoint_every": 0},
            **({"hparams": hparams} if hparams else {}), **({"reward": reward} if reward else {})}
    _run_trial(spec, runs / name, threads=2)
    result = read_result(runs / name)
    _run_trial({"trial_id": "base", "model": MODEL, "budget": EVALUATE, "eval": TEST}, runs / "base", threads=2)
    _run_trial({"trial_id": "model", "model": MODEL, "budget": EVALUATE, "eval": TEST,
                "init_from": {"trial": name, "weights": str((runs / name / WEIGHTS_DIR).resolve())}},
               runs / "model", threads=2)
    return {"wall_s": time.monotonic() - t0, "winner": name, "dev": result_metrics(result).eval.accuracy_after,
            "line_groups": _groups(result), "slots": 1,
            "base": _outcomes(runs / "base"), "model": _outcomes(runs / "model"), "trials": 1}


def grpo_seconds(budget_min: float) -> float:
    return max(15.0, budget_min * 60 - OVERHEAD_S)


def run_sft(seed: int, budget_min: float, runs: Path) -> dict[str, Any]:
    """Supervised training on gold SQL for the whole budget, no GRPO: as many steps (the spec's
    supervised learning rate and batch) as fill it at the seconds per step a probe measured (the
    probe is not counted in the arm's wall time)."""
    runs.mkdir(parents=True, exist_ok=True)
    step_s = sft_step_s(runs / "probe", seed)
    steps = max(1, int((budget_min * 60 - OVERHEAD_S) / step_s))
    print(f"sft: {step_s:.2f} s per supervised step measured; {steps} steps fill the budget", flush=True)
    t0 = time.monotonic()
    _run_trial({"trial_id": "sft", "model": MODEL, "seed": seed, "hparams": {"sft_steps": steps},
                "budget": EVALUATE, "eval": {"report_split": "test", "samples": 0}}, runs / "sft", threads=2)
    result = read_result(runs / "sft")
    _run_trial({"trial_id": "base", "model": MODEL, "budget": EVALUATE, "eval": TEST}, runs / "base", threads=2)
    rows = read_jsonl(runs / "sft" / REPORT_FILE)
    return {"wall_s": time.monotonic() - t0, "winner": f"sft ({steps} steps)",
            "dev": result_metrics(result).eval.accuracy_after, "line_groups": 0, "slots": 1,
            "base": _outcomes(runs / "base"), "model": rows[-1]["outcomes"] if rows else {}, "trials": 1}


_SFT_STEP_S: list[float] = []  # measured once per benchmark run


def sft_step_s(out: Path, seed: int) -> float:
    """Seconds per supervised step on this machine: a short SFT-only trial, timed by its own log line."""
    if not _SFT_STEP_S:
        _run_trial({"trial_id": "probe", "model": MODEL, "seed": seed, "hparams": {"sft_steps": SFT_PROBE_STEPS},
                    "budget": EVALUATE, "eval": {"limit": 1, "samples": 0}}, out, threads=2)
        found = re.search(r"sft (\d+) steps loss=\S+ t=([\d.]+)s", (out / LOG_FILE).read_text())
        if not found:
            raise SystemExit(f"the SFT probe left no timing line in {out / LOG_FILE}")
        _SFT_STEP_S.append(float(found.group(2)) / int(found.group(1)))
    return _SFT_STEP_S[0]


def first_proposal(seed: int, budget_min: float) -> dict[str, Any] | None:
    """The hparams and reward of the agent's first proposal (offline planner, round 1), or None when
    they are the default recipe's."""
    from agent.api import plan_goal
    from agent.lineage import trial_spec
    from agent.planners.factory import make_planner
    from tools.search_space import SearchSpace

    plan = plan_goal(GOAL, {"planner": "offline", "budget_minutes": budget_min, "seed": seed})
    space = SearchSpace.from_json(plan.search_space)
    ctx = PlanningContext(goal=plan.goal, objective={"metric": plan.objective.metric}, space=space, round=1,
                          k=plan.constraints.parallel)
    proposal = make_planner({"name": "offline"}, seed=seed).propose(ctx).proposals[0]
    first = trial_spec(space, plan.constraints, "bench", "first", proposal.params).to_json()
    default = TrialSpec.from_json({"model": MODEL}).to_json()
    picked = {"hparams": first["hparams"], "reward": first["reward"]}
    return None if picked == {"hparams": default["hparams"], "reward": default["reward"]} else picked


def run_best_of(seed: int, budget_min: float, runs: Path, slots: int, n: int = 4) -> dict[str, Any]:
    """The default recipe with n seeds side by side on a virtual cluster, each for the whole budget;
    the best by dev and the base evaluated on test on the same clock (wall: virtual seconds)."""
    clock = VirtualClock()
    la = VirtualLauncher(runs, slots, clock=clock)
    budget = {"max_steps": None, "max_seconds": grpo_seconds(budget_min), "checkpoint_every": 0}
    handles = [la.submit({"trial_id": f"seed{i}", "session": "best", "model": MODEL, "seed": seed + 1000 * i,
                          "budget": budget}) for i in range(n)]
    wait(la, handles, interval_s=0.05)
    results = {h.trial_id: la.result(h) or {} for h in handles}
    devs = {tid: result_metrics(r).eval.accuracy_after for tid, r in results.items() if r.get("status") == "succeeded"}
    if not devs:
        return {"wall_s": clock.now(), "winner": None, "dev": None, "base": {}, "model": {}, "trials": n}
    best = max(devs, key=lambda tid: devs[tid] or 0.0)
    weights = str((sessiondir.trial_dir(runs / "best", best) / WEIGHTS_DIR).resolve())
    tests = [la.submit({"trial_id": "base", "session": "test", "model": MODEL, "budget": EVALUATE, "eval": TEST}),
             la.submit({"trial_id": "model", "session": "test", "model": MODEL, "budget": EVALUATE, "eval": TEST,
                        "init_from": {"trial": best, "weights": weights}})]
    wait(la, tests, interval_s=0.05)
    test_dir = sessiondir.trials_dir(runs / "test")
    return {"wall_s": clock.now(), "real_s": sum(r["run_s"] or 0 for r in la.schedule()), "winner": best,
            "dev": devs[best], "line_groups": _groups(results[best]), "slots": slots,
            "base": _outcomes(test_dir / "base"), "model": _outcomes(test_dir / "model"), "trials": n}


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
    with open(out / LOG_FILE, "ab") as log:
        subprocess.run([sys.executable, "-m", "rl_core.trial", str(out / LAUNCH_SPEC_FILE), "--out", str(out)],
                       env=env, check=False, stdout=log, stderr=subprocess.STDOUT)


def _outcomes(job: Path) -> dict[str, bool]:
    rows = read_jsonl(job / EVAL_FILE)
    return rows[-1]["outcomes"] if rows else {}


def summarise(name: str, r: dict[str, Any], budget_s: float) -> dict[str, Any]:
    if not r["model"]:
        return {"method": name, "test": None, "test_se": None, "n": 0, "diff": None, "diff_se": None, "dev": None,
                "winner": None, "trials": r["trials"], "wall_s": round(r["wall_s"], 1),
                "real_s": round(r.get("real_s", r["wall_s"]), 1),
                "overrun_s": round(r["wall_s"] - budget_s, 1), "model_outcomes": {}}
    test, se, n = accuracy(r["model"])
    cmp = paired(r["base"], r["model"])
    return {"method": name, "test": test, "test_se": se, "n": n, "diff": cmp.diff, "diff_se": cmp.se,
            "dev": r["dev"], "winner": r["winner"], "trials": r["trials"], "wall_s": round(r["wall_s"], 1),
            "real_s": round(r.get("real_s", r["wall_s"]), 1), "overrun_s": round(r["wall_s"] - budget_s, 1), "model_outcomes": r["model"],
            "line_groups": r.get("line_groups"), "slots": r.get("slots")}


def run_method(method: str, seed: int, budget_min: float, work: Path, slots: int) -> dict[str, Any] | None:
    """One arm on one seed; None when the arm does not apply (`first` equal to the default)."""
    if method == "single":
        return run_single(seed, budget_min, work)
    if method == "sft":
        return run_sft(seed, budget_min, work)
    if method == "first":
        picked = first_proposal(seed, budget_min)
        return None if picked is None else run_single(seed, budget_min, work, "first", **picked)
    if method == "best4":
        if not slots:
            raise SystemExit("best4 runs on a virtual cluster: add --virtual-slots K")
        return run_best_of(seed, budget_min, work, slots)
    return run_session_method(method, seed, budget_min, work, slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", default=None, help="default: agent,tpe,single,sft,first; with "
                        "--virtual-slots: agent,best4,single")
    parser.add_argument("--virtual-slots", type=int, default=0, metavar="K",
                        help="simulate a cluster of K machines (cluster/virtual.py): trials run one at a time, "
                             "the sessions' clock charges each slot as a machine")
    parser.add_argument("--runs-dir", default="runs/bench-outcome")
    parser.add_argument("--out", default=None, help="results are appended here (default: <runs-dir>/results.jsonl, "
                        "results-virtual<K>.jsonl with --virtual-slots); the summary covers every (seed, method) in it")
    parser.add_argument("--summary", action="store_true", help="print the summary of --out and run nothing")
    args = parser.parse_args()
    slots = args.virtual_slots
    methods = args.methods or ("agent,best4,single" if slots else "agent,tpe,single,sft,first")
    runs = Path(args.runs_dir)
    out = Path(args.out) if args.out else runs / (f"results-virtual{slots}.jsonl" if slots else "results.jsonl")
    budget_s = args.budget_minutes * 60
    if args.summary:
        if not out.is_file():
            raise SystemExit(f"no results at {out}: run the benchmark first, or point --out at its results file")
        print_summary(_latest_rows(out))
        return
    for seed in args.seeds:
        for method in methods.split(","):
            work = runs / (f"v{slots}-{method}-{seed}" if slots else f"{method}-{seed}")
            shutil.rmtree(work, ignore_errors=True)
            r = run_method(method, seed, args.budget_minutes, work, slots)
            if r is None:
                print(f"seed {seed} {method:6s} skipped: the agent's first proposal is the default recipe", flush=True)
                continue
            row = {"seed": seed, "virtual_slots": slots, **summarise(method, r, budget_s)}
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
            clock = (f"virtual length {row['wall_s']:.0f}s (real {row['real_s']:.0f}s)" if slots
                     else f"wall {row['wall_s']:.0f}s")
            if row["test"] is None:
                print(f"seed {seed} {method:6s} no model: no trial finished within the budget ({clock})", flush=True)
                continue
            print(f"seed {seed} {method:6s} test {100 * row['test']:.1f}% (n={row['n']})  vs base "
                  f"{100 * row['diff']:+.1f} ± {100 * row['diff_se']:.1f} (paired)  dev {100 * (row['dev'] or 0):.1f}%  "
                  f"winner {row['winner']}  trials {row['trials']}  {clock} "
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
