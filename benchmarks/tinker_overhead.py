"""What the Tinker API costs, and what sharing one server buys: the same GRPO step through the SDK
and in-process, then two LoRA clients on one server against two separate trial processes.

    .venv/bin/python benchmarks/tinker_overhead.py [--model builtin:micro-gemma] [--steps 6]

One GRPO step, identical in both paths: a sampler snapshot of the adapter; G completions for each
of P fixed train prompts (temperature 1, seeded per step and prompt, no stop, so every step
generates exactly P x G x max_tokens tokens); one `ppo` forward_backward on those sequences with
fixed pseudo-random advantages; one AdamW step.

1. Overhead: in-process calls the server's own `BaseHost` directly; the API path drives
   `python -m rl_core.serve` (a separate process, as a user runs it) with the tinker SDK. Steps
   alternate between the two paths so drifting load hits both; the figure is the mean paired
   difference per step with its standard error.
2. Sharing: two clients training at once on one server (one model load, requests time-sliced)
   against two separate processes that each load the model and run the same steps in-process.
   Every process gets `--threads` torch threads (default 1: on a busy 2-core machine two threads
   per process ran a micro-gemma step 10x slower than one). Throughput is total steps / wall time.
Timings on a shared machine are noisy; quote figures from a quiet one and say which.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MAX_TOKENS, RANK = 32, 8


def fixed_prompts(tokenizer, n: int) -> list[list[int]]:
    from rl_core.tiny_gemma import builtin_prompts

    return [tokenizer.encode(text) for _, text in builtin_prompts("train")[:n]]


def advantages(step: int, n: int) -> np.ndarray:
    return np.random.default_rng(step).normal(0, 1, n).astype(np.float32)


def datum_arrays(prompt: list[int], tokens: list[int], logprobs: list[float], adv: float):
    n = len(prompt) - 1
    return (prompt + tokens[:-1], {"target_tokens": np.array(prompt[1:] + tokens, np.int64),
                                   "logprobs": np.array([0.0] * n + logprobs, np.float32),
                                   "advantages": np.array([0.0] * n + [adv] * len(tokens), np.float32)})


def load_inproc(model: str, threads: int | None = None):
    """The server's own host, adapter and fixed prompts, in this process."""
    import torch

    from rl_core.serve.host import BaseHost, LoraSpec

    if threads:
        torch.set_num_threads(threads)
    host = BaseHost(model, "cpu")
    return host, host.add_adapter(LoraSpec(rank=RANK, seed=0))


def inproc_steps(host, adapter, prompts: list[list[int]], steps: range, G: int) -> list[float]:
    from rl_core.serve.sampler import SampleParams
    from rl_core.serve.wire import Datum, FwdBwdRequest

    times = []
    for step in steps:
        t0 = time.perf_counter()
        snap = host.snapshot(adapter)
        adv, data = advantages(step, len(prompts) * G), []
        for i, p in enumerate(prompts):
            params = SampleParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=step * 1000 + i, stop=[])
            seqs, _ = host.sample(adapter.spec, snap, p, G, params)
            for j, s in enumerate(seqs):
                tokens, inputs = datum_arrays(p, s.tokens, s.logprobs, float(adv[i * G + j]))
                data.append(Datum(tokens, inputs))
        host.forward_backward(adapter, FwdBwdRequest("", 0, "ppo", {}, False, data))
        host.optim_step(adapter, 1e-4, 0.9, 0.95, 1e-12, 0.0, 0.0)
        times.append(time.perf_counter() - t0)
    return times


def api_steps(tc, prompts: list[list[int]], steps: range, G: int, on_step=None) -> list[float]:
    from tinker import types

    times = []
    for step in steps:
        t0 = time.perf_counter()
        sampler = tc.save_weights_and_get_sampling_client().result()
        futures = [sampler.sample(types.ModelInput.from_ints(p), G, types.SamplingParams(
            max_tokens=MAX_TOKENS, temperature=1.0, seed=step * 1000 + i, stop=[])) for i, p in enumerate(prompts)]
        adv, data = advantages(step, len(prompts) * G), []
        for i, (p, f) in enumerate(zip(prompts, futures, strict=True)):
            for j, s in enumerate(f.result().sequences):
                tokens, inputs = datum_arrays(p, list(s.tokens), list(s.logprobs), float(adv[i * G + j]))
                data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens),
                                        loss_fn_inputs={k: v.tolist() for k, v in inputs.items()}))
        fb = tc.forward_backward(data, "ppo")
        op = tc.optim_step(types.AdamParams(learning_rate=1e-4))
        fb.result(), op.result()
        times.append(time.perf_counter() - t0)
        if on_step:
            on_step()
    return times


class Server:
    """`python -m rl_core.serve` on a free loopback port, as a user runs it."""

    def __init__(self, model: str, threads: int) -> None:
        from rl_core.serve.local import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        self.dir = tempfile.TemporaryDirectory(prefix="tinker-bench-")
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "rl_core.serve", "--model", model, "--port", port,
                                      "--device", "cpu", "--state-dir", self.dir.name, "--log-level", "warning",
                                      "--threads", str(threads)])
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.3)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.dir.cleanup()


def mean_se(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan"))


def overhead(args, server: Server) -> dict:
    import tinker

    host, adapter = load_inproc(args.model, args.threads)
    prompts = fixed_prompts(host.tokenizer, args.prompts)
    service = tinker.ServiceClient(base_url=server.url)
    tc = service.create_lora_training_client(base_model=args.model, rank=RANK, seed=0).result()
    api_steps(tc, prompts, range(999, 1000), args.group)  # warm-up: first-call costs on both sides
    inproc_steps(host, adapter, prompts, range(999, 1000), args.group)
    api, inproc = [], []
    for step in range(args.steps):  # alternate so drifting load hits both paths alike
        api += api_steps(tc, prompts, range(step, step + 1), args.group)
        inproc += inproc_steps(host, adapter, prompts, range(step, step + 1), args.group)
    service.close("success").result()
    diff = [a - b for a, b in zip(api, inproc, strict=True)]
    return {"api_step_s": mean_se(api), "inproc_step_s": mean_se(inproc), "overhead_s": mean_se(diff)}


def sharing(args, server: Server) -> dict:
    import tinker

    from rl_core.policy import load_policy

    prompts = fixed_prompts(load_policy(args.model).tokenizer, args.prompts)
    service = tinker.ServiceClient(base_url=server.url)
    clients = [service.create_lora_training_client(base_model=args.model, rank=RANK, seed=k).result() for k in (1, 2)]
    start = time.perf_counter()
    threads = [threading.Thread(target=api_steps, args=(tc, prompts, range(args.steps), args.group)) for tc in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared_wall = time.perf_counter() - start
    service.close("success").result()
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--model", args.model, "--steps", str(args.steps),
                               "--prompts", str(args.prompts), "--group", str(args.group), "--threads", str(args.threads)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    step_times = [json.loads(p.communicate()[0].strip().splitlines()[-1])["step_s"] for p in procs]
    separate_wall = time.perf_counter() - start  # includes each process's start-up and model load
    total = 2 * args.steps
    return {"shared_steps_per_s": total / shared_wall, "separate_steps_per_s": total / separate_wall,
            "separate_steady_steps_per_s": total / max(sum(t) for t in step_times),
            "shared_wall_s": shared_wall, "separate_wall_s": separate_wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:micro-gemma")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server and of each in-process run")
    args = p.parse_args()
    if args.worker:  # one separate "trial process": load, then the steps in-process
        host, adapter = load_inproc(args.model, args.threads)
        times = inproc_steps(host, adapter, fixed_prompts(host.tokenizer, args.prompts), range(args.steps), args.group)
        print(json.dumps({"step_s": times}))
        return
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    os.environ.setdefault("TINKER_API_KEY", "tml-bench")
    server = Server(args.model, args.threads)
    try:
        o = overhead(args, server)
        s = sharing(args, server)
    finally:
        server.close()
    print(f"model {args.model}; step = {args.prompts} prompts x {args.group} samples x {MAX_TOKENS} tokens + ppo + AdamW; "
          f"{args.steps} steps; {args.threads} torch thread(s) per process; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  through the API  {o['api_step_s'][0]:.3f} ± {o['api_step_s'][1]:.3f} s/step")
    print(f"  in-process       {o['inproc_step_s'][0]:.3f} ± {o['inproc_step_s'][1]:.3f} s/step")
    print(f"  API overhead     {o['overhead_s'][0]:+.3f} ± {o['overhead_s'][1]:.3f} s/step (paired)")
    print(f"  two clients, one server:        {s['shared_steps_per_s']:.2f} steps/s ({s['shared_wall_s']:.1f} s)")
    print(f"  two separate trial processes:   {s['separate_steps_per_s']:.2f} steps/s ({s['separate_wall_s']:.1f} s, "
          "start-up and model load included)")
    print(f"  two separate trial processes, steps only: {s['separate_steady_steps_per_s']:.2f} steps/s")


if __name__ == "__main__":
    main()
