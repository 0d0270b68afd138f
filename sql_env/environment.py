"""`SQLEnvironment`: the text-to-SQL environment the trainer sees (prompt in, scores out).

It satisfies `rl_core.env.Environment` structurally (sql_env imports nothing from rl_core): `Score`
has the fields of `rl_core.env.StepResult`.

Scoring one completion: extract the SQL, run it in the database's sandbox, compare with the gold
result (`results_match`, rule from `params.match_mode`, order from the gold's outermost ORDER BY),
then weight the reward components. What makes it fast enough to sit inside a GRPO step:
- gold results (and whether order matters) are computed once per example and cached;
- one sandbox per database, opened once, with a reused connection per worker thread;
- identical SQL in one call runs once (GRPO groups repeat themselves), and a bounded cache keeps
  recent (database, SQL) executions, so a slow query a policy keeps writing costs its timeout once;
- gold results match fast: a prediction identical to the gold's raw rows (most right answers) is
  never normalised, and the gold itself is normalised only when a prediction needs it;
- all completions of a call (`score`, or many groups with `score_many`) run across `workers` threads,
  the caller's among them, each taking the next query when it is free.
Backends: `"process"` (the default) scores in worker subprocesses (sql_env.procpool), so the time
limit always holds: a query DuckDB cannot interrupt (one huge value) has its worker killed at its
timeout plus one second, and a DuckDB crash costs verdicts, not the training run. `"thread"` scores
in this process: a little faster from a cold start, but one such query holds a thread, and the whole
call, until DuckDB finishes it (seconds to minutes).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sql_env.datasets import DatasetError, database_path, dataset_dir, load_dataset, schema_ddl
from sql_env.match import GoldResult, order_matters
from sql_env.procpool import ProcessScorer
from sql_env.prompts import extract_sql, render_prompt
from sql_env.rewards import RewardSpec, ScoreInput
from sql_env.sandbox import Sandbox
from sql_env.types import Example, Execution

_SPLITS = ("train", "dev", "test")
_MAX_ERROR_CHARS = 500  # error text kept in metrics; the planner reads it, logs store it


@dataclass
class Score:
    """One completion's verdict; the same fields as `rl_core.env.StepResult`."""

    reward: float
    components: dict[str, float] = field(default_factory=dict)
    correct: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # status, sql, error, exec_s


@dataclass(frozen=True)
class _Gold:
    execution: Execution
    result: GoldResult  # the rows prepared for matching


class SQLEnvironment:
    """Prompts and DuckDB-verified rewards for one dataset (`"builtin"`, an imported name, or a path)."""

    def __init__(
        self,
        dataset: str = "builtin",
        reward: RewardSpec | dict[str, Any] | None = None,
        prompt_style: str = "plain",
        tokenizer: Any = None,
        sample_rows: int = 0,
        timeout_s: float = 2.0,
        max_rows: int = 10_000,
        workers: int = 2,
        exec_cache_size: int = 4096,
        backend: str = "process",
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if backend not in ("thread", "process"):
            raise ValueError(f"unknown scoring backend {backend!r}: use 'thread' or 'process'")
        if prompt_style not in ("plain", "chat"):
            raise ValueError(f"unknown prompt style {prompt_style!r}: use 'plain' or 'chat'")
        if prompt_style == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; use 'plain' for base models")
        dataset_dir(dataset)  # fail now, with the dataset's own message, not at the first prompt
        self.dataset = dataset
        self.reward = RewardSpec.from_json(reward)
        self.prompt_style = prompt_style
        self.tokenizer = tokenizer
        self.sample_rows = sample_rows
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.workers = workers
        self.exec_cache_size = exec_cache_size
        self.backend = backend
        self._procs: ProcessScorer | None = None
        self._examples: dict[str, Example] = {}
        self._split_ids: dict[str, list[str]] = {}
        self._prompts: dict[str, str] = {}
        self._gold: dict[str, _Gold] = {}
        self._sandboxes: dict[str, Sandbox] = {}
        self._exec_cache: OrderedDict[tuple[str, str], Execution] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._executions_here = 0  # queries this process ran (gold included); cache hits do not count

    # -- the Environment protocol ------------------------------------------------------------------
    def example_ids(self, split: str) -> list[str]:
        """Ids of a split in dataset order (loads and indexes the split on first use)."""
        ids = self._split_ids.get(split)
        if ids is None:
            examples = load_dataset(self.dataset, split)
            with self._lock:
                for ex in examples:
                    self._examples[ex.id] = ex
                ids = self._split_ids[split] = [ex.id for ex in examples]
        return list(ids)

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where a completion's SQL ends, for rollout engines. A base model given a plain prompt
        goes on writing the next `-- Question:` (or a second statement) up to the token limit,
        which wastes generation and makes the extracted SQL two statements; chat models stop at EOS."""
        return (";", "\n--", "\n\n") if self.prompt_style == "plain" else ()

    def prompt(self, example_id: str) -> str:
        text = self._prompts.get(example_id)
        if text is None:
            ex = self.example(example_id)
            ddl = schema_ddl(database_path(self.dataset, ex.db_id), self.sample_rows)
            text = self._prompts[example_id] = render_prompt(ex, ddl, self.prompt_style, self.tokenizer)
        return text

    def score(self, example_id: str, completions: Sequence[str]) -> list[Score]:
        """Scores of one prompt's completions (a GRPO group), in order; thread-safe."""
        return self.score_many([(example_id, completions)])[0]

    # -- extras ------------------------------------------------------------------------------------
    def score_many(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[list[Score]]:
        """Scores of many groups at once: every distinct (database, SQL) runs once, across threads
        (with the process backend: every distinct SQL of a group, one group per task)."""
        if self.backend == "process" and groups:
            for example_id, _ in groups:
                self.example(example_id)  # an unknown id fails here, as itself
            return self._process_scorer().score_many(groups, self._crashed)
        sqls = [[self._extract(c) for c in completions] for _, completions in groups]
        jobs: dict[tuple[str, str], None] = {}
        for (example_id, _), group_sqls in zip(groups, sqls, strict=True):
            for sql in group_sqls:
                if sql:
                    jobs[(example_id, sql)] = None
        # Gold results first, one task per new example: otherwise the jobs of one group race to
        # compute the same gold on every thread.
        self._map(self._gold_of, list({example_id: None for example_id, _ in groups if example_id not in self._gold}))
        executions = dict(zip(jobs, self._map(self._execute_and_match, list(jobs)), strict=True))
        return [
            [self._score_one(example_id, completion, sql, executions.get((example_id, sql)))
             for completion, sql in zip(completions, group_sqls, strict=True)]
            for (example_id, completions), group_sqls in zip(groups, sqls, strict=True)
        ]

    def example(self, example_id: str) -> Example:
        ex = self._examples.get(example_id)
        if ex is None:
            for split in _SPLITS:
                if split not in self._split_ids:
                    try:
                        self.example_ids(split)
                    except DatasetError:
                        continue
                ex = self._examples.get(example_id)
                if ex is not None:
                    break
            else:
                raise KeyError(f"no example {example_id!r} in dataset {self.dataset!r}; "
                               "use an id from example_ids(split)")
        return ex

    def question(self, example_id: str) -> str:
        return self.example(example_id).question

    def gold(self, example_id: str) -> Execution:
        """The gold query's execution (computed once per example, then cached)."""
        return self._gold_of(example_id).execution

    def worker_pids(self) -> list[int]:
        """Process ids of the scoring workers (process backend; starts them), [] with threads."""
        return self._process_scorer().worker_pids() if self.backend == "process" else []

    @property
    def worker_restarts(self) -> int:
        """Scoring workers replaced after they died (process backend)."""
        return self._procs.restarts if self._procs is not None else 0

    @property
    def executions_run(self) -> int:
        """Queries that reached a sandbox, here or in worker processes (gold included; cache hits not)."""
        return self._executions_here + (self._procs.executions_run if self._procs is not None else 0)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            procs, self._procs = self._procs, None
            boxes, self._sandboxes = list(self._sandboxes.values()), {}
        if procs is not None:
            procs.close()
        if pool is not None:
            pool.shutdown(wait=True)
        for box in boxes:
            box.close()

    def __enter__(self) -> SQLEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------
    def _map(self, fn, items: list) -> list:
        """`[fn(item) for item in items]` on `workers` threads, the caller's among them. Each thread
        takes the next item when it is free (one slow query does not hold up a fixed share), and
        no future is made per item: a call with 128 completions makes `workers - 1` of them."""
        if self.workers == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="sql-env")
            pool = self._pool
        results: list = [None] * len(items)
        indices = iter(range(len(items)))
        take = threading.Lock()

        def drain() -> None:
            while True:
                with take:
                    i = next(indices, None)
                if i is None:
                    return
                results[i] = fn(items[i])

        helpers = [pool.submit(drain) for _ in range(min(self.workers, len(items)) - 1)]
        try:
            drain()
        finally:
            for helper in helpers:
                helper.result()
        return results

    @staticmethod
    def _extract(completion: str) -> str | None:
        try:
            sql = extract_sql(completion)
        except Exception:  # whatever a model writes, scoring must not raise: no SQL found
            return None
        return sql.strip() if isinstance(sql, str) and sql.strip() else None

    def _sandbox(self, db_id: str) -> Sandbox:
        box = self._sandboxes.get(db_id)
        if box is None:
            path = database_path(self.dataset, db_id)
            with self._lock:
                box = self._sandboxes.get(db_id)
                if box is None:
                    box = self._sandboxes[db_id] = Sandbox(
                        path, timeout_s=self.timeout_s, max_rows=self.max_rows, workers=1)
        return box

    def _execute(self, db_id: str, sql: str) -> Execution:
        result = self._sandbox(db_id).run(sql)
        with self._lock:
            self._executions_here += 1
        return result

    def _run(self, db_id: str, sql: str) -> Execution:
        key = (db_id, sql)
        with self._lock:
            hit = self._exec_cache.get(key)
            if hit is not None:
                self._exec_cache.move_to_end(key)
                return hit
        result = self._execute(db_id, sql)
        if self.exec_cache_size > 0:
            with self._lock:
                self._exec_cache[key] = result
                while len(self._exec_cache) > self.exec_cache_size:
                    self._exec_cache.popitem(last=False)
        return result

    def _gold_of(self, example_id: str) -> _Gold:
        gold = self._gold.get(example_id)
        if gold is None:
            ex = self.example(example_id)
            # Computed outside the lock: it is pure, so two threads racing only repeat work.
            execution = self._execute(ex.db_id, ex.gold_sql)
            gold = _Gold(execution, GoldResult(execution.rows, order_matters(ex.gold_sql)))
            self._gold.setdefault(example_id, gold)
        return gold

    def _process_scorer(self) -> ProcessScorer:
        with self._lock:
            if self._procs is None:
                settings = {"dataset": self.dataset, "reward": self.reward.to_json(), "timeout_s": self.timeout_s,
                            "max_rows": self.max_rows, "exec_cache_size": self.exec_cache_size}
                self._procs = ProcessScorer(settings, self.workers)
            return self._procs

    def _crashed(self, example_id: str, completion: str) -> Score:
        """The verdict on a completion whose sandbox worker died running it, twice."""
        sql = self._extract(completion)
        died = Execution("runtime_error", error="the sandbox worker process died running this query")
        return self._score_one(example_id, completion, sql, None if sql is None else (died, False))

    def _execute_and_match(self, job: tuple[str, str]) -> tuple[Execution, bool]:
        example_id, sql = job
        gold = self._gold_of(example_id)
        execution = self._run(self.example(example_id).db_id, sql)
        correct = execution.ok and gold.execution.ok and gold.result.matches(
            execution.rows, self.reward.resolved_params.match_mode)
        return execution, correct

    def _score_one(
        self, example_id: str, completion: str, sql: str | None, outcome: tuple[Execution, bool] | None
    ) -> Score:
        ex = self.example(example_id)
        if outcome is None:
            execution, correct = Execution("syntax_error", error="no SQL found in the completion"), False
        else:
            execution, correct = outcome
        x = ScoreInput(completion, sql, sql_where_asked(completion, sql), None if sql is None else execution,
                       self._gold_of(example_id).execution, ex.gold_sql, correct)
        total, parts = self.reward.score(x)
        metrics = {"status": execution.status, "sql": sql, "exec_s": round(execution.elapsed_s, 6),
                   "error": execution.error[:_MAX_ERROR_CHARS] if execution.error else None}
        if not x.gold.ok:  # a dataset problem, not the model's: say so next to the verdict
            metrics["gold_error"] = f"{x.gold.status}: {x.gold.error}"[:_MAX_ERROR_CHARS]
        return Score(total, parts, correct, metrics)



def sql_where_asked(completion: str, sql: str | None) -> bool:
    """Whether the SQL opens the completion, bare or in one code fence, as both prompt styles ask
    (the plain prompt ends with `-- SQL:`, the chat prompt says "reply with only the SQL").
    Prose before the query, or no query at all, is the wrong format."""
    if not sql:
        return False
    text = completion.lstrip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1].lstrip() if "\n" in text else ""
    return text.startswith(sql)
