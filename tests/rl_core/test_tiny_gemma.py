"""The built-in policies: tokenizer, architecture, atomic cache, deterministic builds, the SFT warm start."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rl_core import cache, tiny_gemma
from rl_core.sft import (
    IGNORE,
    SFTConfig,
    collate,
    completion_loss,
    encode_pairs,
    prefix_clusters,
    shared_prefix_loss,
)

TEXTS = ["How many orders were placed in 2023?", "SELECT order_id FROM orders WHERE year = 2023;",
         "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, status VARCHAR);"] * 20


def test_tokenizer_splits_digits_and_round_trips():
    tok = tiny_gemma.train_tokenizer(TEXTS, vocab_size=600)  # enough merges to saturate this corpus
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    ids = tok("price > 1234.5")["input_ids"]
    assert ids[0] == tok.bos_token_id
    pieces = tok.convert_ids_to_tokens(ids)
    assert [p.lstrip("Ġ") for p in pieces if any(c.isdigit() for c in p)] == ["1", "2", "3", "4", "5"]
    assert "Ġorder_id" in tok.convert_ids_to_tokens(tok("SELECT order_id FROM orders")["input_ids"])
    text = "SELECT name FROM t WHERE city = 'Zürich' AND n >= 42;\n  -- ok"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_tiny_recipe_is_a_small_gemma3():
    from transformers import Gemma3ForCausalLM

    recipe = tiny_gemma.RECIPES["tiny-gemma"]
    config = tiny_gemma.gemma_config(recipe, vocab_size=recipe.vocab_size)
    assert config.model_type == "gemma3_text" and config.tie_word_embeddings
    assert set(config.layer_types) == {"full_attention"}
    with torch.device("meta"):
        n = sum(p.numel() for p in Gemma3ForCausalLM(config).parameters())
    assert 1_000_000 <= n <= 15_000_000


def test_build_once_is_atomic_and_builds_once(tmp_path):
    target = tmp_path / "models" / "thing-v1"
    target.parent.mkdir()
    calls = []

    def failing(tmp):
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("crash mid-build")

    with pytest.raises(RuntimeError):
        cache.build_once(target, failing)
    assert not target.exists() and [p.name for p in target.parent.iterdir()] == ["thing-v1.lock"]

    def good(tmp):
        calls.append(tmp)
        (tmp / "weights").write_text("ok")

    assert cache.build_once(target, good) == target
    assert cache.build_once(target, good) == target
    assert len(calls) == 1 and (target / "weights").read_text() == "ok"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(tmp_path))
    assert cache.models_dir() == tmp_path / "models"
    assert tiny_gemma.cached_path("micro-gemma", seed=3).parent == tmp_path / "models"
    assert tiny_gemma.cached_path("micro-gemma", seed=3).name.endswith("-s3")


def test_sft_labels_cover_the_completion_and_eos_only():
    tok = tiny_gemma.train_tokenizer(TEXTS, vocab_size=300)
    encoded = encode_pairs(tok, [("How many orders?", "SELECT 1"), ("Q", "SELECT count(*) FROM orders")])
    batch = collate(encoded, tok.pad_token_id)
    for row, (ids, start) in enumerate(encoded):
        labels = batch["labels"][row]
        assert (labels[:start] == IGNORE).all() and (labels[len(ids):] == IGNORE).all()
        assert labels[len(ids) - 1] == tok.eos_token_id
        assert tok.decode(labels[start:len(ids) - 1]) == ["SELECT 1", "SELECT count(*) FROM orders"][row]
    assert batch["attention_mask"].sum().item() == sum(len(ids) for ids, _ in encoded)


def test_shared_prefix_loss_equals_the_plain_batch_loss_and_gradient():
    """Prompts sharing a schema prefix are encoded once: same loss and gradient as the plain batch."""
    tok = tiny_gemma.train_tokenizer(TEXTS, vocab_size=300)
    schema_a = "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, status VARCHAR);\n-- Question: "
    schema_b = "CREATE TABLE items (item_id INTEGER PRIMARY KEY, price REAL, name VARCHAR);\n-- Question: "
    pairs = [(schema_a + "How many orders?\n-- SQL:\n", "SELECT count(*) FROM orders"),
             (schema_b + "Most expensive item?\n-- SQL:\n", "SELECT name FROM items ORDER BY price DESC LIMIT 1"),
             (schema_a + "Orders placed in 2023 with status shipped?\n-- SQL:\n", "SELECT order_id FROM orders"),
             ("Q", "SELECT 1"),  # shares nothing: runs alone
             (schema_b + "Items?\n-- SQL:\n", "SELECT name FROM items")]
    encoded = encode_pairs(tok, pairs)
    clusters = prefix_clusters(encoded)
    assert sorted(sorted(rows) for rows, _ in clusters) == [[0, 2], [1, 4], [3]]
    assert all(shared > 16 for rows, shared in clusters if len(rows) > 1)
    recipe = tiny_gemma.RECIPES["micro-gemma"]
    torch.manual_seed(0)
    model = __import__("transformers").Gemma3ForCausalLM(tiny_gemma.gemma_config(recipe, len(tok))).float()

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, g_plain = loss_and_grads(lambda: completion_loss(model, collate(encoded, tok.pad_token_id)))
    shared, g_shared = loss_and_grads(lambda: shared_prefix_loss(model, encoded, tok.pad_token_id))
    assert torch.allclose(plain, shared, atol=1e-5)
    assert g_plain.keys() == g_shared.keys()
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_shared[name], atol=1e-5, rtol=1e-4), name


def test_sft_config_refuses_nonsense():
    with pytest.raises(ValueError, match="schedule"):
        SFTConfig(steps=1, schedule="linear")
    with pytest.raises(ValueError, match="batch_size"):
        SFTConfig(steps=1, batch_size=0)


def test_warm_start_prompts_are_the_ones_the_rl_stage_sees():
    train = tiny_gemma.builtin_prompts("train")
    with tiny_gemma.builtin_env() as env:
        for example, prompt in train[:: len(train) // 7]:
            assert prompt == env.prompt(example.id)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_reduced_build_is_deterministic_and_the_warm_start_learns(tmp_path):
    """A micro-size recipe with a few SFT steps: same seed, same bytes; loss goes down."""
    recipe = dataclasses.replace(tiny_gemma.RECIPES["micro-gemma"], sft_examples=32, sft_steps=8,
                                 sft_batch=4, sft_lr=3e-3, version="test")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    info_a = tiny_gemma.build(recipe, a, seed=0)
    tiny_gemma.build(recipe, b, seed=0)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert info_a.sft_losses[-1] < info_a.sft_losses[0]
    saved = json.loads((a / "build_info.json").read_text())
    assert saved["recipe"]["version"] == "test" and saved["parameters"] == info_a.parameters
    assert saved["prompt_tokens_mean"] > 20


@pytest.mark.slow
def test_tiny_gemma_builds_and_writes_some_correct_sql():
    """The real recipe (cached after the first run): it must be a warm start, neither blank nor solved."""
    path = tiny_gemma.ensure_built("tiny-gemma")
    report = tiny_gemma.evaluate_dev(path, limit=100)
    assert 0.1 <= report["greedy"] <= 0.9
