"""load_policy on real tiny models: built-in micro Gemma, LoRA wrapping, local HF dirs, Hub ids offline."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from rl_core.policy import Policy, PolicyLoadError, load_policy


@pytest.fixture(scope="module")
def micro() -> Policy:
    return load_policy("builtin:micro-gemma")


def _logits(model, tokenizer, text: str = "How many customers live in Lyon?") -> torch.Tensor:
    enc = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_micro_gemma_loads_as_plain_gemma_and_generates(micro):
    assert micro.model.__class__.__name__ == "Gemma3ForCausalLM"
    assert micro.prompt_style == "plain" and micro.name == "builtin:micro-gemma"
    tok = micro.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok.padding_side == "left"
    assert sum(p.numel() for p in micro.model.parameters()) < 200_000
    enc = tok(["SELECT", "How many orders are there?"], return_tensors="pt", padding=True)
    out = micro.model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 5)


def test_lora_trains_only_the_adapter_and_disabling_it_restores_the_base(micro):
    base_logits = _logits(micro.model, micro.tokenizer)
    policy = load_policy("builtin:micro-gemma", lora_rank=4, lora_alpha=8, seed=1)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert policy.trainable_parameters() == sum(
        p.numel() for n, p in policy.model.named_parameters() if n in trainable)
    # One real optimiser step moves the adapter (B starts at zero, so outputs start equal).
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=1e-2)
    enc = policy.tokenizer(["SELECT count(*) FROM orders"], return_tensors="pt")
    policy.model(**enc, labels=enc["input_ids"]).loss.backward()
    opt.step()
    assert not torch.allclose(_logits(policy.model, policy.tokenizer), base_logits, atol=1e-6)
    with policy.model.disable_adapter():
        assert torch.allclose(_logits(policy.model, policy.tokenizer), base_logits, atol=1e-6)
    assert not torch.allclose(_logits(policy.model, policy.tokenizer), base_logits, atol=1e-6)


def test_lora_init_follows_the_seed():
    def adapter(seed):
        model = load_policy("builtin:micro-gemma", lora_rank=2, seed=seed).model
        return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "lora_A" in n])

    assert torch.equal(adapter(3), adapter(3))
    assert not torch.equal(adapter(3), adapter(4))


def test_full_fine_tuning_trains_every_parameter(micro):
    assert micro.lora_rank == 0
    assert micro.trainable_parameters() == sum(p.numel() for p in micro.model.parameters())


def test_local_directory_round_trips(micro, tmp_path):
    micro.model.save_pretrained(tmp_path)
    micro.tokenizer.save_pretrained(tmp_path)
    loaded = load_policy(str(tmp_path))
    assert loaded.prompt_style == "plain" and loaded.path == str(tmp_path)
    assert next(loaded.model.parameters()).dtype == torch.float32  # 'auto' keeps the saved dtype
    assert torch.allclose(_logits(loaded.model, loaded.tokenizer), _logits(micro.model, micro.tokenizer))
    half = load_policy(str(tmp_path), dtype="bfloat16", lora_rank=4)  # the frozen base takes the dtype
    assert next(p for p in half.model.parameters() if not p.requires_grad).dtype == torch.bfloat16


def test_any_causal_lm_directory_loads_and_gets_a_pad_token(micro, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(micro.tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tok = micro.tokenizer.__class__.from_pretrained(micro.path)
    tok.pad_token = None  # like many base-model tokenizers
    tok.save_pretrained(tmp_path)
    loaded = load_policy(str(tmp_path), lora_rank=2)
    assert loaded.tokenizer.pad_token_id == loaded.tokenizer.eos_token_id
    assert loaded.model.base_model.model.__class__.__name__ == "LlamaForCausalLM"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_hub_id_offline_fails_fast_naming_the_local_directory_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(PolicyLoadError, match="not reachable.*local directory"):
        load_policy("google/gemma-3-270m")
    assert time.monotonic() - started < 10


def test_hub_offline_flag_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PolicyLoadError, match="local directory"):
        load_policy("someone/some-model-that-is-not-cached")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("builtin:huge-gemma", "choose one of builtin:micro-gemma, builtin:tiny-gemma"),
        ("./no/such/dir", "does not exist"),
        ("not a model name", "neither a built-in"),
    ],
)
def test_bad_names_say_the_fix(name, message):
    with pytest.raises(PolicyLoadError, match=message):
        load_policy(name)


def test_directory_without_weights_or_config_is_refused(tmp_path):
    with pytest.raises(PolicyLoadError, match="no config.json"):
        load_policy(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PolicyLoadError, match="no weights"):
        load_policy(str(tmp_path))


def test_bad_arguments_are_refused():
    with pytest.raises(PolicyLoadError, match="lora_rank"):
        load_policy("builtin:micro-gemma", lora_rank=-1)
    with pytest.raises(PolicyLoadError, match="dtype"):
        load_policy("builtin:micro-gemma", dtype="int8")


@pytest.fixture(scope="module")
def bf16_dir(micro, tmp_path_factory):
    """micro-gemma saved as a bf16 checkpoint (what gemma-3-270m ships as)."""
    path = tmp_path_factory.mktemp("bf16")
    load_policy("builtin:micro-gemma").model.to(torch.bfloat16).save_pretrained(path)
    micro.tokenizer.save_pretrained(path)
    return path


def test_full_fine_tuning_of_a_bf16_checkpoint_keeps_fp32_master_weights(bf16_dir):
    full = load_policy(str(bf16_dir), dtype="bfloat16", lora_rank=0)
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}  # AdamW never steps bf16 weights
    lora = load_policy(str(bf16_dir), dtype="bfloat16", lora_rank=4)
    assert {p.dtype for p in lora.model.parameters() if p.requires_grad} == {torch.float32}
    assert torch.bfloat16 in {p.dtype for p in lora.model.parameters() if not p.requires_grad}  # frozen base


def test_the_trainer_refuses_half_precision_trainable_weights(micro):
    from rl_core.engine import HFEngine
    from rl_core.spec import HParams
    from rl_core.trainer import GRPOTrainer

    model = load_policy("builtin:micro-gemma").model.to(torch.bfloat16).requires_grad_(True)
    with pytest.raises(ValueError, match="fp32"):
        GRPOTrainer(model, None, HFEngine(model, micro.tokenizer), HParams(), ["a"], seed=0,
                    pad_id=micro.tokenizer.pad_token_id)
