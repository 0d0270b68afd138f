"""In-pod entry point: run the trial, make sure it leaves a result, print that result last.

    python -m cluster.pod_entry --spec /etc/openrl-agent/spec.json --out DIR -- python -m rl_core.trial

Runs `<command> <spec> --out DIR` as a child, copies its output to stdout (the pod log) and to
DIR/trial.log, forwards SIGTERM (pod deletion) to it, and afterwards:
- writes a classified failed result.json if the trial died without one (cluster/outcome.py);
- prints `OPENRL_RESULT_JSON: {...}` as the very last log line, so a launcher without a shared
  runs volume reads the result from the pod log;
- exits 0 if the trial succeeded and 1 otherwise, so the Job's Complete/Failed condition is the
  trial's outcome.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from cluster.outcome import LOG_FILE, ensure_result

RESULT_MARKER = "OPENRL_RESULT_JSON: "


def parse_result_line(log: str) -> dict | None:
    """The result printed by pod_entry: the last marker line of a pod log, parsed; None if absent."""
    for line in reversed(log.splitlines()):
        if line.startswith(RESULT_MARKER):
            try:
                data = json.loads(line[len(RESULT_MARKER):])
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def run(spec_path: Path, out: Path, command: list[str]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        spec = {"trial_id": None, "unreadable_spec": str(exc)}
    with open(out / LOG_FILE, "ab") as log:
        child = subprocess.Popen([*command, str(spec_path), "--out", str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        assert child.stdout is not None
        for line in iter(child.stdout.readline, b""):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
        returncode = child.wait()
    result = ensure_result(out, spec, returncode)
    print(RESULT_MARKER + json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result.get("status") == "succeeded" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.pod_entry")
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the trial command after --, e.g. -- python -m rl_core.trial")
    return run(args.spec, args.out, command)


if __name__ == "__main__":
    sys.exit(main())
