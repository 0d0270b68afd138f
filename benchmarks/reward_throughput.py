"""Reward throughput: how many completions per second SQLEnvironment verifies against DuckDB.

Scores >= 5,000 completions for the built-in dev set, grouped 8 per prompt like a GRPO group, with
a mix of correct SQL (the gold, written three distinct ways), wrong SQL (runs, other answer),
erroneous SQL (syntax, unknown table, forbidden, no SQL at all) and slow SQL (a cross join of a
million pairs that finishes in milliseconds). `--runaway N` puts N runaway queries in every call:
one huge value DuckDB cannot interrupt (`repeat('x', 2000000000)`, `list_sort(range(25000000))`,
each text distinct), which the process backend stops at its timeout plus one second by killing its
worker, and the thread backend waits out (seconds each); `--runaway` runs use `--n 1000 --repeat 1`
to stay short.
Every completion's SQL text is distinct within its group and the cross-call execution cache is off,
so the figures are for real executions, not cache hits.

Each call scores `--batch` groups at once, as the trainer does once per GRPO step (16 prompts by
default). The headline figure is SQLEnvironment as the trainer builds it (the process backend:
worker subprocesses, each with its own DuckDB instances), measured from creating the environment, so
starting the workers, opening the databases and every gold query are inside it; the same
completions are then scored again by the same environment (gold cached, execution cache still off).
The thread backend (`backend="thread"`, in-process) is measured the same way.

The naive baseline verifies a prefix of the same completions the obvious way: one thread, a new
DuckDB connection per completion, the gold query re-run every time.

    nice -n 10 .venv/bin/python benchmarks/reward_throughput.py [--n 5000] [--workers 2] [--repeat 3]
    nice -n 10 .venv/bin/python benchmarks/reward_throughput.py --runaway 1 --n 1000 --repeat 1 --naive-n 0

Prints figures only (the machine may be shared: `--repeat` runs each measurement several times and
prints the median; the CPU time per completion, workers included, is the steadier figure).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import threading
import time
from pathlib import Path

import duckdb

from sql_env.datasets import database_path, load_dataset
from sql_env.environment import SQLEnvironment
from sql_env.match import order_matters, results_match
from sql_env.prompts import extract_sql
from sql_env.types import Example

GROUP = 8
RUNAWAY_SQL = ("SELECT length(repeat('x', 2000000000 + {k}))", "SELECT list_sort(range(25000000 + {k}))[1]")


def first_table(sql: str) -> str:
    return re.search(r"\bFROM\s+(\w+)", sql, re.IGNORECASE).group(1)


def group_for(ex: Example, rng: random.Random, slow: bool) -> list[tuple[str, str]]:
    """Eight (kind, completion) pairs for one prompt, each with a distinct SQL text."""
    gold, table = ex.gold_sql, first_table(ex.gold_sql)
    correct = [gold, gold.replace(" FROM ", "\nFROM ", 1), "select" + gold[len("SELECT"):]]
    wrong = [f"SELECT * FROM ({gold}) AS s LIMIT 1 OFFSET 1", f"SELECT count(*) + 1 FROM {table}"]
    errors = [
        gold.replace("SELECT", "SELEC", 1),
        gold.replace(f"FROM {table}", f"FROM {table}_archive", 1),
        rng.choice([f"DROP TABLE {table}", "I am not sure which table holds this."]),
    ]
    pairs = [("correct", f"```sql\n{sql}\n```") for sql in correct]
    pairs += [("wrong", sql + ";") for sql in wrong]
    pairs += [("error", sql) for sql in errors[: 3 - int(slow)]]
    if slow:
        # A cross join with a computed condition: a million pair evaluations, ~10x a normal query.
        sub = f"(SELECT rowid AS k FROM {table} LIMIT 1000)"
        pairs.append(("slow", f"SELECT count(*) FROM {sub} a, {sub} b WHERE (a.k + b.k) % 7 = 0"))
    return pairs


def build_groups(examples: list[Example], n: int, runaway: int, batch: int, seed: int,
                 ) -> list[tuple[Example, list[tuple[str, str]]]]:
    """Groups for `n` completions; `runaway` groups of every call of `batch` groups end in a runaway."""
    rng = random.Random(seed)
    groups = []
    for i in range(-(-n // GROUP)):
        ex = examples[i % len(examples)]
        groups.append((ex, group_for(ex, rng, slow=rng.random() < 0.25)))
    for start in range(0, len(groups), batch):
        call = range(start, min(start + batch, len(groups)))
        for i in rng.sample(call, min(runaway, len(call))):
            ex, pairs = groups[i]
            pairs[-1] = ("runaway", RUNAWAY_SQL[i % 2].format(k=i))
    return groups


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_fast(dataset: str, groups, workers: int, timeout_s: float, batch: int, backend: str) -> dict:
    """Scores every group from a cold start (environment created inside the timing), then again
    with the same environment: `first` and `again` figures. CPU time includes the worker processes."""
    calls = [[(ex.id, [c for _, c in pairs]) for ex, pairs in groups[start : start + batch]]
             for start in range(0, len(groups), batch)]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    env = SQLEnvironment(dataset, workers=workers, timeout_s=timeout_s, exec_cache_size=0, backend=backend)
    env.example_ids("dev")
    call_ms, first = score_all(env, calls)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + sum(_process_cpu(pid) for pid in env.worker_pids())
    t0 = time.perf_counter()
    _, again = score_all(env, calls)
    again_wall = time.perf_counter() - t0
    restarts = env.worker_restarts
    env.close()
    return {"n": len(first), "wall": wall, "again_wall": again_wall, "cpu": cpu, "call_ms": call_ms,
            "exec_ms": [s.metrics["exec_s"] * 1e3 for s in first], "correct": [s.correct for s in first],
            "same_again": sum(a.correct == b.correct for a, b in zip(first, again, strict=True)),
            "statuses": [s.metrics["status"] for s in first], "restarts": restarts}


def score_all(env: SQLEnvironment, calls: list) -> tuple[list[float], list]:
    """(milliseconds per score_many call, every verdict in order)."""
    call_ms, verdicts = [], []
    for call in calls:
        t = time.perf_counter()
        scores = env.score_many(call)
        call_ms.append((time.perf_counter() - t) * 1e3)
        verdicts += [s for group in scores for s in group]
    return call_ms, verdicts


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_run(repeat: int, fn, *args) -> dict:
    """The run with the median first-pass wall time of `repeat` runs."""
    runs = sorted((fn(*args) for _ in range(repeat)), key=lambda r: r["wall"])
    return runs[len(runs) // 2]


def naive_one(db_path: str, ex: Example, completion: str, timeout_s: float, max_rows: int) -> bool:
    sql = extract_sql(completion)
    if not sql:
        return False
    con = duckdb.connect(db_path, read_only=True)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        gold = con.execute(ex.gold_sql).fetchmany(max_rows + 1)
        pred = con.execute(sql).fetchmany(max_rows + 1)
        return len(pred) <= max_rows and results_match(pred, gold, order_matters(ex.gold_sql))
    except duckdb.Error:
        return False
    finally:
        timer.cancel()
        con.close()


def run_naive(dataset: str, groups, n: int, timeout_s: float) -> dict:
    items = [(ex, c) for ex, pairs in groups for _, c in pairs][:n]
    paths = {db: str(database_path(dataset, db)) for db in {ex.db_id for ex, _ in items}}
    lat_ms, verdicts = [], []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for ex, completion in items:
        t = time.perf_counter()
        verdicts.append(naive_one(paths[ex.db_id], ex, completion, timeout_s, 10_000))
        lat_ms.append((time.perf_counter() - t) * 1e3)
    return {"n": len(items), "wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0,
            "lat_ms": lat_ms, "correct": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="builtin")
    parser.add_argument("--n", type=int, default=5000, help="completions to score (>= 5000 for the figure)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1.0, help="sandbox timeout per query, seconds")
    parser.add_argument("--runaway", type=int, default=0, help="runaway queries (one huge value) per call")
    parser.add_argument("--batch", type=int, default=16,
                        help="groups per score_many call (a GRPO step's prompts; the trainer's default is 16)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is printed")
    parser.add_argument("--naive-n", type=int, default=400, help="completions for the naive baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="process,thread",
                        help="SQLEnvironment backends to measure; the first is the headline (process: the trainer's default)")
    args = parser.parse_args()

    examples = load_dataset(args.dataset, "dev")
    groups = build_groups(examples, args.n, args.runaway, args.batch, args.seed)
    kinds = [k for _, pairs in groups for k, _ in pairs]
    cores = len(os.sched_getaffinity(0))
    mix = ", ".join(f"{k} {kinds.count(k)}" for k in ("correct", "wrong", "error", "slow", "runaway"))
    print(f"reward throughput: {args.dataset} dev ({len(examples)} examples), {len(kinds)} completions "
          f"in groups of {GROUP} ({mix}); {args.workers} workers, {cores} cores visible, load "
          f"{os.getloadavg()[0]:.1f}, timeout {args.timeout:g} s, duckdb {duckdb.__version__}")

    expected = [k == "correct" for k in kinds]
    results = {}
    for backend in args.backends.split(","):
        r = results[backend] = median_run(args.repeat, run_fast, args.dataset, groups, args.workers, args.timeout,
                                          args.batch, backend)
        agree = sum(a == b for a, b in zip(r["correct"], expected, strict=True))
        label = "procs" if backend == "process" else "fast "
        print(f"{label}: {r['n'] / r['wall']:8.0f} verified completions/s  ({backend} backend, {args.workers} "
              f"{'worker processes' if backend == 'process' else 'threads'}: {r['n']} in {r['wall']:.2f} s from a cold "
              f"start, gold and start-up included; cpu {r['cpu'] / r['n'] * 1e3:.3f} ms/completion)")
        print(f"       again, gold cached: {r['n'] / r['again_wall']:.0f}/s; latency per score_many call "
              f"({args.batch} groups = {args.batch * GROUP} completions): p50 {pct(r['call_ms'], 0.5):.1f} ms  "
              f"p99 {pct(r['call_ms'], 0.99):.1f} ms")
        print(f"       latency per completion (sandbox run): p50 {pct(r['exec_ms'], 0.5):.2f} ms  "
              f"p99 {pct(r['exec_ms'], 0.99):.2f} ms; verdicts as intended: {agree}/{r['n']}, "
              f"same on the second pass: {r['same_again']}/{r['n']}")
        if args.runaway:
            stuck = [st for st, k in zip(r["statuses"], kinds, strict=True) if k == "runaway"]
            print(f"       runaways: {stuck.count('timeout')}/{len(stuck)} scored timeout, {r['restarts']} workers "
                  f"replaced; slowest call {max(r['call_ms']) / 1e3:.2f} s")
    fast = results[args.backends.split(",")[0]]
    fast_rate = fast["n"] / fast["wall"]
    if not args.naive_n:
        return

    naive = run_naive(args.dataset, groups, args.naive_n, args.timeout)
    naive_rate = naive["n"] / naive["wall"]
    same = sum(a == b for a, b in zip(naive["correct"], fast["correct"], strict=False))
    print(f"naive: {naive_rate:8.0f} verified completions/s  ({naive['n']} in {naive['wall']:.2f} s, "
          f"cpu {naive['cpu'] / naive['n'] * 1e3:.3f} ms/completion; new connection per query, one thread)")
    print(f"       latency per completion: p50 {pct(naive['lat_ms'], 0.5):.2f} ms  p99 {pct(naive['lat_ms'], 0.99):.2f} ms; "
          f"same verdicts as fast: {same}/{naive['n']}")
    print(f"speedup: {fast_rate / naive_rate:.1f}x wall, {naive['cpu'] / naive['n'] / (fast['cpu'] / fast['n']):.1f}x "
          f"CPU per completion (targets: >= 2000/s on 2 cores, >= 10x naive); mean naive latency "
          f"{statistics.fmean(naive['lat_ms']):.1f} ms")
    # On a shared machine wall figures mostly measure the neighbours; CPU time per completion does not.
    print(f"capacity if {args.workers} cores were idle (CPU-time estimate): "
          f"{args.workers / (fast['cpu'] / fast['n']):.0f} completions/s")


if __name__ == "__main__":
    main()
