"""Run model-written SQL against one DuckDB file without letting it escape, hang or raise.

Defences, in the order a query meets them:
1. Text checks: valid UTF-8, at most `max_sql_chars` characters.
2. DuckDB's own parser (`extract_statements`): exactly one statement, of type SELECT, whose first
   keyword is SELECT, WITH or FROM (DuckDB's FROM-first query). DuckDB also types
   DESCRIBE/SHOW/SUMMARIZE/VALUES as SELECT, hence the keyword check. Everything else (COPY, EXPORT, ATTACH, INSTALL, LOAD, SET, PRAGMA, CALL,
   DDL, DML, two statements) is `forbidden` before it reaches the engine.
3. The connection itself: the file attached READ_ONLY, `enable_external_access=false` (no file or network access from
   table functions such as read_csv/read_text/glob), extension autoinstall/autoload off, no temp
   directory (nothing spills to disk), `memory_limit` and `threads` set, and the configuration locked
   so a query cannot undo any of it. These hold even if step 2 had a hole.
4. Wall time: DuckDB has no statement timeout, so one watchdog thread per sandbox interrupts the
   connection of any query past its deadline (`Connection.interrupt`). DuckDB checks for an
   interrupt between vectors, so one scalar call on one huge value (`repeat('x', 2000000000)`,
   `list_sort(range(25000000))`) finishes its vector first, seconds late (4-18 s measured). The
   caller does not wait for it (`ABANDON_STUCK`, on except in a scoring-pool worker): each caller
   thread's queries run on a helper thread of its own,
   and `run` answers `timeout` at most `ABANDON_AFTER_S` past the limit, leaving the query to end
   on its own (its connection is dropped; the caller's next query gets a fresh one). The query
   still holds a core and its memory until it ends (`memory_limit` does not bound such a value):
   only a process can be stopped, which is why `SQLEnvironment`'s default process backend
   (sql_env.procpool) kills and replaces a worker whose query runs past its timeout plus one second.
5. Rows are fetched from a streaming result and capped at `max_rows`, so a huge cross join stops
   after `max_rows + 1` rows instead of materialising.

Connections: opening a database file costs ~12 ms, so each sandbox opens the file once and hands every
worker thread its own cursor (a cheap connection to the same instance), reused for every query.
"""

from __future__ import annotations

import itertools
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import duckdb

from sql_env.types import ExecStatus, Execution

_ALLOWED_FIRST_KEYWORDS = ("select", "with", "from")  # `FROM t SELECT ...`: DuckDB's FROM-first query
_FALLBACK_CATALOG = "sandbox_db"  # for a file whose name cannot be a catalog's
_RESERVED_CATALOGS = {"main", "memory", "system", "temp", "information_schema", "pg_catalog"}
ABANDON_AFTER_S = 0.25  # past the time limit, `run` stops waiting for a query the interrupt has not ended
# False inside a scoring-pool worker (sql_env.procpool.serve sets it): there the query runs on the
# calling thread and the pool kills the whole stuck process, which also frees the core and the memory
# an abandoned query would keep.
ABANDON_STUCK = True


class _Runner:
    """A helper thread that runs one caller thread's queries on its own cursor, so the caller can
    stop waiting for a query DuckDB will not interrupt. One hand-off per query (tens of µs)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="sql-sandbox-query", daemon=True).start()

    def submit(self, job: Callable[[], Execution]) -> Future:
        future: Future = Future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)  # ends the thread once its current query (if any) has

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the caller, which reports it
                future.set_exception(e)


class _Watchdog:
    """A single timer thread that interrupts connections whose query outlived its deadline.

    One thread per sandbox instead of a `threading.Timer` per query: starting a thread per query
    would cost more than many of the queries. Arming only wakes the thread when the new deadline is
    earlier than the one it already sleeps towards, so a steady stream of queries costs one lock each.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, duckdb.DuckDBPyConnection]] = {}
        self._tokens = itertools.count()
        self._wake_at = math.inf
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, conn: duckdb.DuckDBPyConnection, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sql-sandbox-watchdog", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._armed[token] = (deadline, conn)
            if deadline < self._wake_at:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        # Under the lock, so an interrupt can never land on the *next* query of this connection.
        with self._cond:
            self._armed.pop(token, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for token, (deadline, conn) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        conn.interrupt()
                self._wake_at = min((d for d, _ in self._armed.values()), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
            self._wake_at = math.inf


def _classify(error: duckdb.Error) -> ExecStatus:
    if isinstance(error, duckdb.InterruptException):
        return "timeout"
    if isinstance(error, duckdb.ParserException | duckdb.SyntaxException):
        return "syntax_error"
    if isinstance(error, duckdb.CatalogException | duckdb.BinderException):
        return "schema_error"
    if isinstance(error, duckdb.PermissionException):
        return "forbidden"
    return "runtime_error"


_PLAIN_START = re.compile(r"\s*(select|with)\b", re.IGNORECASE)


def _first_keyword(sql: str) -> str:
    """The first keyword of the statement, skipping comments and opening parentheses."""
    plain = _PLAIN_START.match(sql)  # how nearly every query starts: no need to tokenize it all
    if plain:
        return plain.group(1).lower()
    for position, kind in duckdb.tokenize(sql):
        if kind == duckdb.token_type.keyword:
            return sql[position:].split(None, 1)[0].lower().rstrip("(")
        if kind == duckdb.token_type.operator and sql[position] == "(":
            continue
        if kind != duckdb.token_type.comment:
            return ""
    return ""


class Sandbox:
    """A locked-down, read-only DuckDB executor for one database file.

    `run(sql)` never raises: every outcome, including model mistakes and attacks, is an `Execution`
    whose `status` says what happened. Thread-safe: each thread gets its own reused connection.
    """

    def __init__(
        self,
        db_path: str | Path,  # attached under its file name (`nyc.duckdb` as `nyc`), so `nyc.taxi` works
        *,
        timeout_s: float = 2.0,
        max_rows: int = 10_000,
        memory_limit: str = "256MB",
        threads: int = 1,
        max_sql_chars: int = 65_536,
        workers: int = 2,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if threads < 1 or workers < 1:
            raise ValueError(f"threads and workers must be >= 1, got threads={threads} workers={workers}")
        self.db_path = Path(db_path)
        if not self.db_path.is_file():
            raise FileNotFoundError(f"no DuckDB database at {self.db_path}; build or import the dataset first")
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.max_sql_chars = max_sql_chars
        self.workers = workers
        stem = self.db_path.stem
        self.catalog = stem if stem.lower() not in _RESERVED_CATALOGS and '"' not in stem else _FALLBACK_CATALOG
        self._db = self._open(memory_limit, threads)
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._runners: list[_Runner] = []
        self._lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    # -- public API ---------------------------------------------------------------------------
    def run(self, sql: str | bytes) -> Execution:
        """Run one query; never raises. Rows are capped at `max_rows`; it returns within `timeout_s`
        plus `ABANDON_AFTER_S` whatever the query does (see the module's note 4)."""
        start = time.perf_counter()
        try:
            result = self._run(sql)
        except Exception as e:  # last line of defence: a model's query must never crash training
            result = Execution("runtime_error", error=f"{type(e).__name__}: {e}")
        result.elapsed_s = time.perf_counter() - start
        return result

    def run_many(self, sqls: Sequence[str | bytes]) -> list[Execution]:
        """Run many queries across `workers` threads; results in input order."""
        if self.workers == 1 or len(sqls) <= 1:
            return [self.run(sql) for sql in sqls]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sql-sandbox")
        return list(self._pool.map(self.run, sqls))

    def refusal(self, sql: str | bytes) -> Execution | None:
        """The verdict `run` would give `sql` without running it (forbidden, syntax), or None if it would run."""
        try:
            return self._check(sql)[1]
        except Exception as e:
            return Execution("runtime_error", error=f"{type(e).__name__}: {e}")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._watchdog.close()
        for runner in self._runners:
            runner.stop()
        for cursor in self._cursors:
            cursor.interrupt()  # an abandoned query still running
            try:
                cursor.close()
            except duckdb.Error:  # busy with that query: it is dropped when the query ends
                pass
        try:
            self._db.close()
        except duckdb.Error:
            pass

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _open(self, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
        """A private, locked instance with the file attached read-only.

        Not `duckdb.connect(file, read_only=True)`: DuckDB's in-process instance cache refuses a
        second open of one file with a different configuration, so any other reader in the process
        (schema rendering, dataset builds, a second sandbox) would collide with this one.
        """
        config = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "temp_directory": "",  # nothing spills to disk
            "memory_limit": memory_limit,
            "threads": threads,
        }
        db = duckdb.connect(":memory:", config=config)
        try:
            path = str(self.db_path.resolve()).replace("'", "''")
            db.execute(f"ATTACH '{path}' AS \"{self.catalog}\" (READ_ONLY)")
            # Order matters: external access can only be switched off after ATTACH read the file,
            # and the lock comes last so no query can switch anything back on.
            db.execute("SET enable_external_access = false")
            db.execute("SET lock_configuration = true")
        except BaseException:
            db.close()
            raise
        return db

    @property
    def connections_opened(self) -> int:
        """How many per-thread connections this sandbox has opened (one per worker thread)."""
        return len(self._cursors)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        return self._runner().cursor

    def _runner(self) -> _Runner:
        """This caller thread's query runner and its cursor, made on first use (or after an abandon)."""
        if self._closed:
            raise RuntimeError("sandbox is closed")
        runner = getattr(self._local, "runner", None)
        if runner is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("sandbox is closed")
                cursor = self._db.cursor()
                self._cursors.append(cursor)
            cursor.execute(f'USE "{self.catalog}"')  # per connection: unqualified names mean the file
            runner = _Runner(cursor)
            with self._lock:
                self._runners.append(runner)
            self._local.runner = runner
        return runner

    def _check(self, sql: str | bytes) -> tuple[duckdb.Statement | None, Execution | None]:
        """Text and statement checks; returns (parsed statement, None) to run it or (None, verdict)."""
        if isinstance(sql, bytes):
            try:
                sql = sql.decode("utf-8")
            except UnicodeDecodeError as e:
                return None, Execution("syntax_error", error=f"query is not valid UTF-8: {e}")
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError as e:
            return None, Execution("syntax_error", error=f"query is not valid UTF-8: {e}")
        if len(sql) > self.max_sql_chars:
            return None, Execution(
                "forbidden", error=f"query is {len(sql):,} characters; the sandbox runs at most {self.max_sql_chars:,} (Sandbox(max_sql_chars=...))"
            )
        try:
            statements = self._connection().extract_statements(sql)
        except duckdb.Error as e:
            return None, Execution(_classify(e), error=str(e))
        if not statements:
            return None, Execution("syntax_error", error="no SQL statement found")
        if len(statements) > 1:
            return None, Execution("forbidden", error=f"only one statement may run, got {len(statements)}")
        keyword = _first_keyword(sql)
        if statements[0].type != duckdb.StatementType.SELECT or keyword not in _ALLOWED_FIRST_KEYWORDS:
            got = keyword.upper() if statements[0].type == duckdb.StatementType.SELECT else statements[0].type.name
            return None, Execution("forbidden", error=f"only a SELECT or WITH query (or FROM-first) may run, got {got or 'another statement'}")
        return statements[0], None

    def _run(self, sql: str | bytes) -> Execution:
        checked, verdict = self._check(sql)
        if verdict is not None:
            return verdict
        runner = self._runner()
        token = self._watchdog.arm(runner.cursor, self.timeout_s)
        try:
            if not ABANDON_STUCK:
                return self._execute(runner.cursor, checked)
            return runner.submit(lambda: self._execute(runner.cursor, checked)).result(
                timeout=self.timeout_s + ABANDON_AFTER_S)
        except FutureTimeout:  # interrupted, yet still inside one huge vector: leave it to end alone
            self._local.runner = None
            runner.stop()
            return Execution("timeout", error=f"query ran longer than {self.timeout_s:g} s (abandoned; "
                                              "it still runs until DuckDB lets go)")
        finally:
            self._watchdog.disarm(token)

    def _execute(self, conn: duckdb.DuckDBPyConnection, checked: duckdb.Statement) -> Execution:
        """Runs on the caller's `_Runner` thread."""
        try:
            result = conn.execute(checked)  # the parsed statement: DuckDB does not parse it again
            rows = result.fetchmany(self.max_rows + 1)
            columns = [d[0] for d in result.description or ()]
        except duckdb.Error as e:
            status = _classify(e)
            error = f"query ran longer than {self.timeout_s:g} s" if status == "timeout" else str(e)
            return Execution(status, error=error)
        if len(rows) > self.max_rows:
            return Execution(
                "too_many_rows", columns=columns, error=f"query returned more than {self.max_rows:,} rows"
            )
        return Execution("ok", rows=rows, columns=columns)
