#!/usr/bin/env bash
# The GPU checks, run on a CUDA machine from the repo root (the project's device machine runs it with
# the wheels in .whl/ and a prebuilt tiny-gemma in .gpucache/, both optional; README "GPU" paragraph).
#   1. pytest -m gpu: trials on cuda (full fine-tuning, LoRA + KL, resume), greedy GPU == CPU
#   2. examples/trial.json on the GPU (device auto): seconds per GRPO step and dev accuracy
# Figures land in ${OUT:-runs/gpu-check}.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu-check}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export OPENRL_AGENT_CACHE=${OPENRL_AGENT_CACHE:-/tmp/openrl-cache}
if [ -d .gpucache ]; then mkdir -p "$OPENRL_AGENT_CACHE/models" && cp -r .gpucache/* "$OPENRL_AGENT_CACHE/models/"; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft, duckdb; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'duckdb', duckdb.__version__)"
rc=0
python3 -m pytest -m gpu -p no:cacheprovider -q tests/rl_core/test_gpu.py 2>&1 | tee "$OUT/pytest.log" || rc=1
T=/tmp/gpu-trial; rm -rf $T
( time python3 -m rl_core.trial examples/trial.json --out $T ) 2>&1 | tee "$OUT/trial.log" || rc=1
cp $T/result.json "$OUT/trial_result.json" 2>/dev/null; cp $T/metrics.jsonl "$OUT/trial_metrics.jsonl" 2>/dev/null
python3 - "$T" <<'PY' || rc=1
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
r = json.load(open(sys.argv[1] + "/result.json"))
t = [x["t_step"] for x in rows[1:]] or [rows[0]["t_step"]]
print(f"GPU trial: status {r['status']}, {len(rows)} steps, median {statistics.median(t):.2f} s/step "
      f"(generate {statistics.median(x['t_generate'] for x in rows):.2f}, train {statistics.median(x['t_train'] for x in rows):.2f}), "
      f"dev {r['metrics'].get('dev_accuracy_before')} -> {r['metrics'].get('dev_accuracy_after')}")
sys.exit(0 if r["status"] == "succeeded" else 1)
PY
echo "gpu-check rc=$rc"; exit $rc
