"""Branching: a child trial starts exactly where its parent ended (builtin:micro-gemma, real DuckDB)."""

import json

import pytest
import torch

from rl_core.policy import load_policy
from rl_core.trial import run_trial
from rl_core.trialdir import result_metrics
from tests.rl_core.test_trial import micro_spec


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _evals(trial_dir):
    return [json.loads(line) for line in (trial_dir / "eval.jsonl").read_text().splitlines()]


def _logits(policy, text="SELECT count(*) FROM"):
    ids = policy.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return policy.model(ids).logits


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_child_starts_from_the_parents_end_state(tmp_path, lora_rank):
    parent_dir = tmp_path / "parent"
    spec = micro_spec(max_steps=2)
    spec["hparams"]["lora_rank"] = lora_rank
    parent = run_trial(spec, parent_dir)
    assert parent["status"] == "succeeded", parent["error"]
    weights = parent_dir / parent["adapter_path"]

    # The child's starting weights compute what the parent's final weights computed.
    end = load_policy("builtin:micro-gemma", lora_rank=0)
    if lora_rank:
        from peft import PeftModel

        end.model = PeftModel.from_pretrained(end.model, weights)
    else:
        end = load_policy(str(weights))
    start = load_policy("builtin:micro-gemma", init_weights=weights, lora_rank=lora_rank, seed=7)
    torch.testing.assert_close(_logits(start), _logits(end), rtol=1e-5, atol=1e-5)

    # Re-evaluated greedily at step 0, the child answers every dev question as the parent did at its end.
    child_spec = micro_spec(max_steps=1)
    child_spec.update(trial_id="child", init_from={"trial": "parent", "weights": str(weights), "step": 2,
                                                  "train_s": parent["metrics"]["train_s"]})
    child_spec["hparams"].update(lora_rank=lora_rank, sft_steps=0)
    child = run_trial(child_spec, tmp_path / "child")
    assert child["status"] == "succeeded", child["error"]
    assert _evals(tmp_path / "child")[0]["outcomes"] == _evals(parent_dir)[-1]["outcomes"]
    assert child["lineage"] == {"parent": "parent", "branch_step": 2, "steps_total": 3,
                                "train_s_total": round(parent["metrics"]["train_s"] + child["metrics"]["train_s"], 1)}


def test_child_reuses_the_parents_final_evaluation_and_optimizer(tmp_path):
    parent = run_trial(micro_spec(max_steps=2), tmp_path / "parent")
    weights = tmp_path / "parent" / "adapter"
    assert (weights / "optimizer.pt").is_file()
    spec = micro_spec(max_steps=1)
    spec.update(trial_id="cont", init_from={"trial": "parent", "weights": str(weights), "optimizer": True, "step": 2})
    spec["hparams"]["sft_steps"] = 0
    spec["eval"]["before"] = False
    child = run_trial(spec, tmp_path / "cont")
    assert child["status"] == "succeeded", child["error"]
    first = _evals(tmp_path / "cont")[0]
    assert first["from_parent"] == "parent" and first["outcomes"] == _evals(tmp_path / "parent")[-1]["outcomes"]
    assert result_metrics(child).eval.accuracy_before == result_metrics(parent).eval.accuracy_after
    assert result_metrics(child).eval.gain_stderr_paired is not None


def _lora_spec(trial_id, max_steps, parent=None, parent_dir=None, *, optimizer=False, **hparams):
    spec = micro_spec(max_steps=max_steps)
    spec.update(trial_id=trial_id)
    spec["hparams"].update(lora_rank=4, sft_steps=10, **hparams)  # a short SFT: SQL that runs, in seconds
    spec["eval"]["limit"] = 4
    if parent:
        spec["init_from"] = {"trial": parent, "weights": str(parent_dir / "adapter"), "optimizer": optimizer,
                             "step": 2}
        spec["hparams"]["sft_steps"] = 0
        spec["eval"]["before"] = False
    return spec


def test_a_lora_grandchild_and_a_confirmation_rebuild_the_lora_childs_own_policy(tmp_path):
    from peft import PeftModel

    parent = run_trial(_lora_spec("parent", 2), tmp_path / "parent")
    assert parent["status"] == "succeeded", parent["error"]
    child = run_trial(_lora_spec("child", 2, "parent", tmp_path / "parent", learning_rate=3e-3), tmp_path / "child")
    assert child["status"] == "succeeded", child["error"]

    # The child's final policy, rebuilt by hand: base + the parent's adapter merged, then the child's own.
    end = load_policy("builtin:micro-gemma", lora_rank=0)
    end.model = PeftModel.from_pretrained(end.model, tmp_path / "parent" / "adapter").merge_and_unload()
    end.model = PeftModel.from_pretrained(end.model, tmp_path / "child" / "adapter")
    forgot_parent = load_policy("builtin:micro-gemma", lora_rank=0)
    forgot_parent.model = PeftModel.from_pretrained(forgot_parent.model, tmp_path / "child" / "adapter")
    assert not torch.allclose(_logits(forgot_parent), _logits(end), atol=1e-4)  # the parent's steps matter here

    grandchild = load_policy("builtin:micro-gemma", init_weights=tmp_path / "child" / "adapter", lora_rank=4, seed=9)
    torch.testing.assert_close(_logits(grandchild), _logits(end), rtol=1e-5, atol=1e-5)

    # The confirmation's form (agent/confirm.py): evaluation only, lora_rank 0, the child's weights.
    confirm = micro_spec(max_steps=0)
    confirm.update(trial_id="confirm", init_from={"trial": "child", "weights": str(tmp_path / "child" / "adapter")})
    confirm["hparams"].update(lora_rank=0, sft_steps=0)
    confirm["eval"]["limit"] = 4
    result = run_trial(confirm, tmp_path / "confirm")
    assert result["status"] == "succeeded", result["error"]
    assert _evals(tmp_path / "confirm")[-1]["outcomes"] == _evals(tmp_path / "child")[-1]["outcomes"]


def _bf16_parent(tmp_path):
    """micro-gemma saved in bf16, and a LoRA adapter on it whose update is about 0.3% per weight
    (merged into bf16 weights, most of such an update rounds away). Returns the two directories and
    each targeted module's intended update and bf16 weight."""
    base_dir, adapter_dir = tmp_path / "bf16", tmp_path / "adapter"
    micro = load_policy("builtin:micro-gemma")
    micro.model.to(torch.bfloat16).save_pretrained(base_dir)
    micro.tokenizer.save_pretrained(base_dir)
    lora = load_policy(str(base_dir), dtype="bfloat16", lora_rank=4, lora_alpha=8).model  # the parent trial's policy
    intended = {}
    for name, module in lora.named_modules():
        if hasattr(module, "lora_B") and "default" in module.lora_B:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            w = module.base_layer.weight.float()
            with torch.no_grad():
                b.copy_(torch.randn_like(b))
                delta = (b @ a) * module.scaling["default"]
                b.mul_(0.003 * w.abs().mean() / delta.abs().mean())  # 0.3% of a typical weight
                intended[name.removeprefix("base_model.model.")] = ((b @ a) * module.scaling["default"], w)
    lora.save_pretrained(adapter_dir)
    return base_dir, adapter_dir, intended, _logits_of(lora, micro.tokenizer)


def _logits_of(model, tokenizer, text="SELECT count(*) FROM"):
    with torch.no_grad():
        return model(tokenizer(text, return_tensors="pt").input_ids).logits


def test_a_bf16_parents_lora_merges_in_fp32_so_a_full_child_starts_where_it_ended(tmp_path):
    base_dir, adapter_dir, intended, _ = _bf16_parent(tmp_path)
    child = load_policy(str(base_dir), dtype="bfloat16", init_weights=adapter_dir, lora_rank=0)
    merged = dict(child.model.named_modules())
    assert len(intended) > 5
    for name, (delta, w) in intended.items():
        got = merged[name].weight.float() - w
        cosine = torch.nn.functional.cosine_similarity(got.flatten(), delta.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))  # a bf16 merge: 0.895


def test_a_lora_child_on_a_bf16_base_stacks_its_ancestors_adapters_and_keeps_the_base(tmp_path):
    """Merging would round the update away (bf16) or double the model's size and cost (fp32):
    the child keeps the bf16 base, the parent's adapter frozen on it, and a new adapter on top."""
    import json

    from rl_core.policy import ADAPTER_BASE_FILE

    base_dir, adapter_dir, _, parent_logits = _bf16_parent(tmp_path)
    child = load_policy(str(base_dir), dtype="bfloat16", init_weights=adapter_dir, lora_rank=4, seed=3)
    assert child.adapter_base == str(adapter_dir.resolve())
    trainable = [(n, p) for n, p in child.model.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n and p.dtype == torch.float32 for n, p in trainable)
    assert {p.dtype for n, p in child.model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    torch.testing.assert_close(_logits_of(child.model, child.tokenizer), parent_logits, rtol=1e-5, atol=1e-5)

    # The child trains (here: its new adapter's B moves) and saves as a trial does; a grandchild rebuilds it.
    with torch.no_grad():
        for n, p in trainable:
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.01)
    child_logits = _logits_of(child.model, child.tokenizer)
    assert not torch.allclose(child_logits, parent_logits, atol=1e-4)
    child_dir = tmp_path / "child"
    child.model.save_pretrained(child_dir, selected_adapters=["default"])
    (child_dir / ADAPTER_BASE_FILE).write_text(json.dumps({"weights": child.adapter_base}))
    grandchild = load_policy(str(base_dir), dtype="bfloat16", init_weights=child_dir, lora_rank=4, seed=5)
    torch.testing.assert_close(_logits_of(grandchild.model, grandchild.tokenizer), child_logits,
                               rtol=1e-5, atol=1e-5)
    # and a continue of the child trains the child's own adapter, on the parent's
    cont = load_policy(str(base_dir), dtype="bfloat16", init_weights=child_dir, lora_rank=4, continue_adapter=True)
    torch.testing.assert_close(_logits_of(cont.model, cont.tokenizer), child_logits, rtol=1e-5, atol=1e-5)
    assert cont.adapter_base == child.adapter_base
    assert sum(p.numel() for p in cont.model.parameters() if p.requires_grad) == sum(p.numel() for _, p in trainable)


def test_a_lora_continue_resumes_adapter_optimizer_reference_and_schedule_exactly(tmp_path):
    """Two steps then a `continue` of one: the same third step as one trial of three steps."""
    knobs = dict(kl_beta=0.05, warmup_steps=4, ppo_epochs=2)
    straight = run_trial(_lora_spec("straight", 3, **knobs), tmp_path / "straight")
    parent = run_trial(_lora_spec("parent", 2, **knobs), tmp_path / "parent")
    assert straight["status"] == parent["status"] == "succeeded", (straight["error"], parent["error"])
    child = run_trial(_lora_spec("cont", 1, "parent", tmp_path / "parent", optimizer=True, **knobs),
                      tmp_path / "cont")
    assert child["status"] == "succeeded", child["error"]
    third = _metrics(tmp_path / "straight")[2]
    (first,) = _metrics(tmp_path / "cont")
    for key in ("lr", "reward_mean", "loss", "kl_ref", "kl_drift", "grad_norm"):
        assert first[key] == pytest.approx(third[key], rel=1e-4, abs=1e-7), key
    # the continued adapter sits where the parent's did (the base), so its own child rebuilds it
    rebuilt = load_policy("builtin:micro-gemma", init_weights=tmp_path / "cont" / "adapter", lora_rank=0)
    from peft import PeftModel

    end = load_policy("builtin:micro-gemma", lora_rank=0)
    end.model = PeftModel.from_pretrained(end.model, tmp_path / "cont" / "adapter")
    torch.testing.assert_close(_logits(rebuilt), _logits(end), rtol=1e-5, atol=1e-5)


def _metrics(trial_dir):
    return [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_lora_lineage_on_a_bf16_checkpoint_end_to_end(tmp_path):
    """Trials on a bf16 checkpoint (kept bf16 where the CPU has bf16, else fp32): parent, child, and
    the grandchild's start equal to the child's end (base + parent's adapter + child's adapter)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rl_core.policy import _torch_dtype

    base_dir = tmp_path / "bf16"
    micro = load_policy("builtin:micro-gemma")
    micro.model.to(torch.bfloat16).save_pretrained(base_dir)
    micro.tokenizer.save_pretrained(base_dir)
    for trial, parent in (("parent", None), ("child", "parent")):
        spec = _lora_spec(trial, 1, parent, tmp_path / (parent or ""), learning_rate=3e-3)
        spec["model"] = str(base_dir)
        result = run_trial(spec, tmp_path / trial)
        assert result["status"] == "succeeded", result["error"]
    end = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=_torch_dtype("auto", base_dir)),
                                    tmp_path / "parent" / "adapter", adapter_name="a0")
    end.load_adapter(tmp_path / "child" / "adapter", adapter_name="a1")
    end.base_model.set_adapter(["a0", "a1"])
    grandchild = load_policy(str(base_dir), init_weights=tmp_path / "child" / "adapter", lora_rank=4, seed=9)
    torch.testing.assert_close(_logits_of(grandchild.model, grandchild.tokenizer), _logits_of(end, micro.tokenizer),
                               rtol=1e-4, atol=1e-4)


def test_a_branch_with_a_supervised_stage_anchors_its_kl_where_grpo_starts(tmp_path):
    """A challenger that resumes its parent's trainer state but runs a supervised stage first: the
    KL reference is the policy after that stage (the first step's reference KL is 0), not the
    parent's reference, which the stage moved away from."""
    knobs = dict(kl_beta=0.05, ppo_epochs=1)
    parent = run_trial(_lora_spec("parent", 2, **knobs), tmp_path / "parent")
    assert parent["status"] == "succeeded", parent["error"]
    kept = run_trial(_lora_spec("kept", 1, "parent", tmp_path / "parent", optimizer=True, **knobs), tmp_path / "kept")
    staged = _lora_spec("staged", 1, "parent", tmp_path / "parent", optimizer=True, **knobs)
    staged["hparams"]["sft_steps"] = 10
    staged = run_trial(staged, tmp_path / "staged")
    assert kept["status"] == staged["status"] == "succeeded", (kept["error"], staged["error"])
    (first_kept,) = _metrics(tmp_path / "kept")
    (first_staged,) = _metrics(tmp_path / "staged")
    assert first_kept["kl_ref"] > 1e-6  # the parent's reference: its own start, 2 steps back
    assert first_staged["kl_ref"] == pytest.approx(0.0, abs=1e-7)
