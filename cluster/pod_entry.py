"""In-pod entry point: run the trial, stream its progress, make sure it leaves a result, print that last.

    python -m cluster.pod_entry --spec /etc/openrl-agent/spec.json --out DIR [--wall-s S] -- python -m rl_core.trial

Runs `<command> <spec> --out DIR` as a child, copies its output to stdout (the pod log) and to
DIR/trial.log, forwards SIGTERM (pod deletion, preemption, the Job's deadline) to it, and:
- while it runs, prints each new line of DIR/metrics.jsonl and DIR/eval.jsonl as
  `OPENRL_METRIC_JSON: {...}` / `OPENRL_EVAL_JSON: {...}`, so a launcher without a shared runs
  volume can copy them back from the pod log (pruning and the planner's summaries read them);
- enforces the wall time `--wall-s` from the moment the trial process starts (SIGTERM, then
  SIGKILL after a grace period), so time spent waiting for a node or an image does not count;
- afterwards writes a classified failed result.json if the trial died without one (cluster/outcome.py),
  and prints `OPENRL_RESULT_JSON: {...}` as the very last log line, on a line of its own;
- exits 0 if the trial succeeded and 1 otherwise, so the Job's Complete/Failed condition is the
  trial's outcome;
- adds `--resume` when DIR already holds checkpoints: on a shared runs volume, the Job's next pod
  after a preemption continues from the last checkpoint instead of step 0 (the same deadline covers
  both attempts). Its rows for steps it runs again are streamed again; the launcher keeps one per step.

A pod that receives SIGTERM was taken away (deleted, preempted, past its deadline): the result the
runner writes while stopping is set aside (result.terminated.json) and no result line is printed,
so on a shared runs volume nobody takes it for the outcome while the Job retries the trial; the
launcher reads the outcome off the Job (DeadlineExceeded = timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cluster.outcome import LOG_FILE, RESULT_FILE, ensure_result
from rl_core.trialdir import CHECKPOINT_DIR, EVAL_FILE, METRICS_FILE, append_jsonl, failed_result, read_jsonl

RESULT_MARKER = "OPENRL_RESULT_JSON: "
METRIC_MARKER = "OPENRL_METRIC_JSON: "
EVAL_MARKER = "OPENRL_EVAL_JSON: "
STREAMS = {METRICS_FILE: METRIC_MARKER, EVAL_FILE: EVAL_MARKER}
TERMINATED_RESULT = "result.terminated.json"
STOP_GRACE_S = 30.0
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports it
# The exits that follow the result line: a launcher that reads either without that line read a cut-off log.
EXIT_SUCCEEDED, EXIT_FAILED = 0, 1


def parse_result_line(log: str) -> dict | None:
    """The result printed by pod_entry: the last marker line of a pod log, parsed; None if absent."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_MARKER):
            return _parse(line[len(RESULT_MARKER):])
    return None


def parse_stream_lines(log: str) -> dict[str, list[dict[str, Any]]]:
    """Metric and eval rows streamed into a pod log, in order, keyed by the trial-dir file they belong to."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in STREAMS}
    for line in log.splitlines():
        for name, marker in STREAMS.items():
            if line.startswith(marker):
                row = _parse(line[len(marker):])
                if row is not None:
                    rows[name].append(row)
    return rows


def merge_streams(trial_dir: Path, log: str) -> None:
    """Append streamed rows the trial dir does not hold yet (metrics by step, evals by step and split)."""
    keys = {METRICS_FILE: ("step",), EVAL_FILE: ("step", "split")}
    for file, rows in parse_stream_lines(log).items():
        if not rows:
            continue
        key = keys[file]
        seen = {tuple(r.get(k) for k in key) for r in read_jsonl(trial_dir / file)}
        for row in rows:
            ident = tuple(row.get(k) for k in key)
            if ident not in seen:
                seen.add(ident)
                append_jsonl(trial_dir / file, row)


def _parse(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


class _Output:
    """stdout shared by the child's lines and the streamed rows: whole lines only, one writer at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at_line_start = True

    def write(self, data: bytes) -> None:
        with self.lock:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            self.at_line_start = data.endswith(b"\n")

    def line(self, text: str) -> None:
        with self.lock:
            prefix = b"" if self.at_line_start else b"\n"  # a last child line without its newline
            sys.stdout.buffer.write(prefix + text.encode() + b"\n")
            sys.stdout.flush()
            self.at_line_start = True


class _Streamer(threading.Thread):
    """Prints every complete line appended to the stream files (they are append-only while training)."""

    def __init__(self, out: Path, output: _Output, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True, name="openrl-stream")
        self.out, self.output, self.interval_s = out, output, interval_s
        self.offsets = {name: 0 for name in STREAMS}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.flush()

    def flush(self) -> None:
        for name, marker in STREAMS.items():
            try:
                with open(self.out / name, "rb") as f:
                    if os.fstat(f.fileno()).st_size < self.offsets[name]:
                        self.offsets[name] = 0  # rewritten shorter (a resume truncates): the reader dedupes
                    f.seek(self.offsets[name])
                    data = f.read()
            except FileNotFoundError:
                continue
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next round
            self.offsets[name] += len(complete)
            for raw in complete.splitlines():
                if raw.strip():
                    self.output.line(marker + raw.decode("utf-8", errors="replace").strip())


def run(spec_path: Path, out: Path, command: list[str], wall_s: float | None = None) -> int:
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        spec = {"trial_id": None, "unreadable_spec": str(exc)}
    unwritable = _unwritable(out)
    if unwritable:  # nothing can be written there, result.json included: the result line is the only word
        print(RESULT_MARKER + json.dumps(failed_result(spec, "bad_spec", unwritable), separators=(",", ":")),
              flush=True)
        return EXIT_FAILED
    output = _Output()
    streamer = _Streamer(out, output)
    terminated = threading.Event()
    timed_out = threading.Event()
    with open(out / LOG_FILE, "ab") as log:
        resume = ["--resume"] if _has_checkpoints(out) else []
        child = subprocess.Popen([*command, str(spec_path), "--out", str(out), *resume],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def on_sigterm(*_: object) -> None:
            terminated.set()
            child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        if wall_s is not None:
            threading.Thread(target=_enforce_wall, args=(child, wall_s, timed_out), daemon=True).start()
        streamer.start()
        assert child.stdout is not None
        for line in iter(child.stdout.readline, b""):
            output.write(line)
            log.write(line)
        returncode = child.wait()
    streamer.stop.set()
    streamer.flush()  # the final evaluation's line is written just before the result
    if terminated.is_set() and not timed_out.is_set():
        if (out / RESULT_FILE).exists():
            os.replace(out / RESULT_FILE, out / TERMINATED_RESULT)
        return EXIT_TERMINATED
    result = ensure_result(out, spec, returncode, timed_out=timed_out.is_set(), wall_s=wall_s)
    output.line(RESULT_MARKER + json.dumps(result, separators=(",", ":")))
    return EXIT_SUCCEEDED if result.get("status") == "succeeded" else EXIT_FAILED


def _unwritable(out: Path) -> str | None:
    """Why this pod cannot write its trial directory, with the fix; None if it can."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return None
    except OSError as exc:
        return (f"the trial directory {out} is not writable by this pod's uid {os.getuid()} ({exc.strerror}): its "
                "runs volume ignores fsGroup (NFS, Filestore and some CSI drivers do); let the agent create it "
                "(it makes each trial directory the pod's: chown as root, else mode 0777), or make the volume's "
                "root writable for that uid (chown, or a volume with uid/gid mount options)")


def _has_checkpoints(out: Path) -> bool:
    try:
        return any((out / CHECKPOINT_DIR).iterdir())
    except OSError:  # none yet
        return False


def _enforce_wall(child: subprocess.Popen, wall_s: float, timed_out: threading.Event) -> None:
    deadline = time.monotonic() + wall_s
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.01, deadline - time.monotonic())))
    if child.poll() is not None:
        return
    timed_out.set()
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.pod_entry")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--wall-s", type=float, default=None, help="kill the trial this many seconds after it starts")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the trial command after --, e.g. -- python -m rl_core.trial")
    return run(args.spec, args.out, command, args.wall_s)


if __name__ == "__main__":
    sys.exit(main())
