"""A stand-in trial runner for launcher tests: same CLI and files as `python -m rl_core.trial`.

Launchers must not care what a trial computes, so most launcher tests run this script (a real
subprocess, with real signals and exit codes) instead of a GRPO run; its behaviour comes from the
spec's "fake" section: {"sleep": seconds, "mode": "ok" | "raise" | "segv" | "sigkill" |
"fail_result" | "exit0" | "oom" | "stream" | "no_newline" | "preempt_once"}, "steps": N}.
"stream" appends N metric lines and an eval line per step to metrics.jsonl / eval.jsonl, a second
apart; "preempt_once" sends SIGTERM to its parent (the pod's entry point, as a node would on
preemption) the first time it runs in an output directory. tests/cluster/test_local_real.py runs
the real runner.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> int:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--out") + 1])
    spec = json.loads(spec_path.read_text())
    fake = spec.get("fake", {})
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "argv.txt", "a") as f:  # how each attempt was started (a retried pod may --resume)
        f.write(" ".join(sys.argv[1:]) + "\n")
    started = time.time()

    def stopped(*_: object) -> None:  # like the real runner: answer SIGTERM with a failed result
        write_json_atomic(out / "result.json", {
            "trial_id": spec["trial_id"], "status": "failed", "metrics": {}, "adapter_path": None, "spec": spec,
            "error": {"kind": "timeout", "message": "stopped by SIGTERM"}})
        sys.exit(1)

    signal.signal(signal.SIGTERM, stopped)
    print(f"fake trial {spec['trial_id']} pid={os.getpid()} threads={os.environ.get('OPENRL_TORCH_THREADS')}",
          flush=True)
    time.sleep(fake.get("sleep", 0))
    mode = fake.get("mode", "ok")
    if mode == "preempt_once" and not (out / "attempted").exists():
        (out / "attempted").write_text("1")
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(30)  # the forwarded SIGTERM arrives meanwhile
    if mode == "stream":
        for step in range(1, fake.get("steps", 3) + 1):
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "reward_mean": step / 10}) + "\n")
            with open(out / "eval.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "split": "dev", "accuracy": step / 10, "n": 4}) + "\n")
            time.sleep(fake.get("step_s", 1.0))
    if mode == "raise":
        raise ValueError("fake trial: learning rate exploded")
    if mode == "oom":
        print("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB", flush=True)
        return 1
    if mode in ("segv", "sigkill"):
        os.kill(os.getpid(), signal.SIGSEGV if mode == "segv" else signal.SIGKILL)
    if mode == "exit0":
        return 0
    if mode == "fail_result":
        write_json_atomic(out / "result.json", {
            "trial_id": spec["trial_id"], "status": "failed", "metrics": {}, "adapter_path": None, "spec": spec,
            "error": {"kind": "bad_spec", "message": "hparams.group_size: GRPO needs at least 2"}})
        return 2
    print("step 1/1 reward=0.50 acc=0.50 kl=0.000 t=0.1s", flush=True)
    if mode == "no_newline":
        print("a last line without its newline", end="", flush=True)
    write_json_atomic(out / "result.json", {
        "trial_id": spec["trial_id"], "status": "succeeded", "error": None, "adapter_path": "adapter",
        "spec": spec, "metrics": {"dev_accuracy_after": 0.5, "steps": 1, "wall_s": time.time() - started,
                                  "started_at": started, "finished_at": time.time(),
                                  "threads": os.environ.get("OPENRL_TORCH_THREADS")}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
