"""The CUDA path: a trial on the GPU (full fine-tuning and LoRA + KL), resume there, and greedy rollouts
that match the CPU's. Marked `gpu` (deselected by default); run with `pytest -m gpu` where torch sees a GPU.
scripts/gpu-check.sh runs these on the project's device machine."""

import pytest
import torch

from rl_core.engine import HFEngine
from rl_core.trial import run_trial
from tests.rl_core.test_engine import tiny_gemma, tiny_tokenizer
from tests.rl_core.test_trial import micro_spec

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")]


def test_trial_trains_on_the_gpu_and_resumes_there(tmp_path, capsys):
    out = tmp_path / "trial"
    first = run_trial({**micro_spec(max_steps=1), "device": "cuda"}, out)
    assert first["status"] == "succeeded", first["error"]
    assert "on cuda" in capsys.readouterr().out
    state = torch.load(out / "checkpoints" / "step_1.pt", weights_only=False)
    assert all(t.device.type == "cuda" for t in state["model"].values())  # trained where it was put
    result = run_trial({**micro_spec(max_steps=2), "device": "cuda"}, out, resume=True)
    assert result["status"] == "succeeded", result["error"]
    assert result["metrics"]["steps"] == 2


def test_lora_with_kl_to_the_disabled_adapter_on_the_gpu(tmp_path):
    spec = micro_spec(max_steps=2)
    spec["hparams"].update(lora_rank=4, kl_beta=0.05)
    result = run_trial({**spec, "device": "cuda"}, tmp_path / "lora")
    assert result["status"] == "succeeded", result["error"]
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()


def test_rollouts_on_the_gpu_run_under_the_learners_bf16_autocast():
    """The learner scores under bf16 autocast (rl_core.engine.autocast_context); sampling with fp32
    matmuls drew from a slightly different policy. (Greedy tokens no longer equal the CPU's fp32
    ones exactly: bf16 rounding may flip near-ties of a random tiny model.)"""
    tok = tiny_tokenizer()
    model = tiny_gemma(len(tok), seed=3).to("cuda")
    seen = []
    hook = model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        HFEngine(model, tok).generate(["select a from b", "count the rows"], n=2, temperature=1.0, top_p=1.0,
                                      max_new_tokens=4)
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}


def test_a_resume_with_kl_on_the_gpu_puts_the_saved_reference_on_the_gpu(tmp_path):
    """The checkpoint is loaded on the CPU; its KL reference was swapped into CUDA parameters."""
    out = tmp_path / "trial"
    spec = micro_spec(max_steps=1)
    spec["hparams"].update(kl_beta=0.05)
    first = run_trial({**spec, "device": "cuda"}, out)
    assert first["status"] == "succeeded", first["error"]
    spec["budget"]["max_steps"] = 2
    result = run_trial({**spec, "device": "cuda"}, out, resume=True)
    assert result["status"] == "succeeded", result["error"]
    assert result["metrics"]["steps"] == 2
