"""A stand-in for `python -m rl_core.trial` in loop tests: same CLI and same files, no torch.

The research loop must not care how a trial computes its score, and the pause/kill tests need
trials that take a controlled time. This script is a real subprocess launched by the real
LocalLauncher; it writes metrics.jsonl, eval.jsonl, samples.jsonl and result.json per
docs/contracts.md, with a dev accuracy that is a smooth function of the hyperparameters (best at the
search space's defaults: lr 2e-4, temperature 0.7). A child (`init_from`) starts at its parent's
final accuracy and adds a smaller step of the same shape, as longer training does. Behaviour comes from the SCRIPTED_TRIAL environment variable (JSON):
{"step_s": seconds per step, "steps": n, "slow_if": [param, value, step_s], "slow_ids": {trial_id: step_s},
"fail_if": {"param": value},
"fail_all": true, "fail_kind": "nan_loss", "crowded_step_s": {"2": s},
"outcomes": n (every eval line carries per-question outcomes on n questions, the first round(acc * n) right),
"offset_if": [param, value, delta] (the accuracy of a trial with that value is shifted by delta)}. `crowded_step_s` is the step time
when k probes of the speed check (session "speed-k<k>") run side by side. Every step also writes a dev eval line (for the pruner).
"""

import json
import math
import os
import sys
import time
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def quality(h: dict) -> float:
    lr_term = math.exp(-((math.log10(h.get("learning_rate", 2e-4)) - math.log10(2e-4)) ** 2) * 1.5)
    return lr_term * (1 - abs(h.get("temperature", 0.7) - 0.7))


def accuracy(h: dict) -> float:
    return round(0.40 + 0.30 * quality(h), 4)


def start_of(spec: dict) -> float:
    weights = (spec.get("init_from") or {}).get("weights")
    if not weights:
        return 0.4
    parent = json.loads((Path(weights).parent / "result.json").read_text())
    return parent["metrics"]["dev_accuracy_after"]


def main() -> int:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--out") + 1])
    spec = json.loads(spec_path.read_text())
    control = json.loads(os.environ.get("SCRIPTED_TRIAL", "{}"))
    h = spec.get("hparams", {})
    out.mkdir(parents=True, exist_ok=True)
    steps = int(control.get("steps", 3))
    max_steps = (spec.get("budget") or {}).get("max_steps")
    steps = min(steps, int(max_steps)) if max_steps else steps
    started = time.time()
    start = start_of(spec)
    offset = control.get("offset_if")
    shift = float(offset[2]) if offset and h.get(offset[0]) == offset[1] else 0.0
    final = accuracy(h) if start == 0.4 else round(min(0.95, start + 0.05 * quality(h)), 4)
    n_outcomes = int(control.get("outcomes", 0))

    def outcomes(acc: float) -> dict:
        right = round(max(0.0, min(1.0, acc)) * n_outcomes)
        return {"outcomes": {f"d{i}": i < right for i in range(n_outcomes)}} if n_outcomes else {}
    with open(out / "eval.jsonl", "a") as ev:
        ev.write(json.dumps({"step": 0, "split": "dev", "accuracy": start, "stderr": 0.02, "n": 400,
                             "elapsed_s": 0.0}) + "\n")
    step_s = float(control.get("step_s", 0.05))
    slow = control.get("slow_if")
    if slow and h.get(slow[0]) == slow[1]:
        step_s = float(slow[2])
    step_s = float((control.get("slow_ids") or {}).get(spec.get("trial_id"), step_s))
    side_by_side = str(spec.get("session", "")).rpartition("speed-k")[2]
    step_s = float((control.get("crowded_step_s") or {}).get(side_by_side, step_s))
    with open(out / "metrics.jsonl", "a") as m, open(out / "samples.jsonl", "a") as s, \
            open(out / "eval.jsonl", "a") as ev:
        for step in range(1, steps + 1):
            time.sleep(step_s)
            acc = start + (final - start) * step / steps + shift * step / steps
            ev.write(json.dumps({"step": step, "split": "dev", "accuracy": acc, "stderr": 0.02, "n": 400,
                                 "elapsed_s": time.time() - started, **outcomes(acc)}) + "\n")
            ev.flush()
            m.write(json.dumps({"step": step, "reward_mean": 0.3 + 0.05 * step, "batch_accuracy": 0.3,
                                "kl": 0.01, "grad_norm": 1.0, "loss": 0.1, "completion_len": 20, "t_step": step_s,
                                "elapsed_s": time.time() - started}) + "\n")
            m.flush()
            s.write(json.dumps({"step": step, "example_id": "d1", "question": "how many?", "completion": "x",
                                "sql": "SELEC 1", "status": "syntax_error", "correct": False, "reward": 0.0,
                                "error": "syntax"}) + "\n")
    fail = control.get("fail_all", False) or any(h.get(k) == v for k, v in control.get("fail_if", {}).items())
    if fail:
        write_json_atomic(out / "result.json", {
            "trial_id": spec["trial_id"], "status": "failed", "metrics": {}, "adapter_path": None,
            "spec": spec, "error": {"kind": control.get("fail_kind", "nan_loss"),
                                    "message": f"loss became NaN at step {steps}"}})
        return 1
    (out / "adapter").mkdir(exist_ok=True)
    (out / "adapter" / "config.json").write_text("{}")
    init = spec.get("init_from") or {}
    train_s = round(steps * step_s, 2)
    write_json_atomic(out / "result.json", {
        "trial_id": spec["trial_id"], "status": "succeeded", "error": None, "adapter_path": "adapter",
        "spec": spec, "metrics": {"dev_accuracy_before": start, "dev_accuracy_after": round(final + shift, 4),
                                  "dev_stderr_after": 0.024, "dev_n": 400, "gain": round(final + shift - start, 4),
                                  "steps": steps, "wall_s": time.time() - started, "train_s": train_s,
                                  "reward_mean_last": 0.5},
        "lineage": {"parent": init.get("trial") or None, "branch_step": init.get("step", 0),
                    "steps_total": init.get("step", 0) + steps, "train_s_total": init.get("train_s", 0) + train_s}})
    print(f"step {steps}/{steps} reward=0.50 acc={final:.2f} kl=0.010 t=0.1s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
