"""GGUF import: a tiny Gemma-3 model written as a real GGUF file, converted, cached and resolved."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf", reason="the gguf package is in the gemma extra: pip install 'openrl-agent[gemma]'")

from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig  # noqa: E402

from rl_core import gguf as rg  # noqa: E402

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PIECES = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*(),;=<>'._")
MERGED = ["\u2581s", "el", "\u2581sel", "ec", "ct", "\u2581f", "ro", "om", "\u2581fro", "\u2581from", "co", "un",
          "nt", "count", "\u2581count", "\u2581*", "\u2581e", "\u2581em", "SE", "LE", "SELE", "SELECT"]
TEXTS = ["select count(*) from employees;", "SELECT name FROM t WHERE x = 'a';", "  two  spaces"]


def write_tiny_gemma_gguf(path: Path, seed: int = 0) -> Gemma3ForCausalLM:
    """Write a 2-layer Gemma-3 with a 100-token sentencepiece vocabulary as GGUF (Q8_0 linears).

    Tensor names come from gguf's own HF->GGUF name map and norms are stored as 1 + w, as
    llama.cpp's converter writes Gemma files. Returns the fp32 model the file was made from.
    """
    tokens = SPECIALS + PIECES + MERGED
    config = Gemma3TextConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                              max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # norms start at zero; make them visible so a missed "+1" would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.1)

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("tiny gemma3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(config.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight":  # tied to the embedding; the file has no output.weight
            continue
        gguf_name = names.get_name(key, try_suffixes=(".weight",))
        data = tensor.float().numpy()
        if "norm" in key:
            writer.add_tensor(gguf_name, (data + 1.0).astype(np.float32))
        else:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Gemma3ForCausalLM]:
    path = tmp_path_factory.mktemp("gguf") / "tiny-gemma3.gguf"
    return path, write_tiny_gemma_gguf(path)


def test_import_round_trips_weights_tokenizer_and_logits(cache, tiny_gguf):
    path, original = tiny_gguf
    out = rg.import_gguf(path, "tiny")

    assert out == cache / "models" / "tiny"
    assert {"model.safetensors", "tokenizer.json", "config.json", rg.SOURCE_FILE} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())

    cached = AutoModelForCausalLM.from_pretrained(out)
    assert cached.dtype == torch.bfloat16
    reference = original.state_dict()
    for key, value in cached.state_dict().items():
        want = reference[key].float()
        # Q8_0 (1/127 of each 32-block's max) plus bf16 rounding; a wrong mapping or a missed
        # "norm - 1" would be off by far more.
        assert (value.float() - want).abs().max() <= 0.02 * want.abs().max() + 1e-3, key

    direct_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    cached_tok = AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        ids = cached_tok(text)["input_ids"]
        assert ids == direct_tok(text)["input_ids"]
        assert ids[0] == 2  # BOS, as the file says
        assert cached_tok.decode(ids, skip_special_tokens=True) == text

    ids = torch.tensor([cached_tok(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        got = cached.float()(ids).logits
        want = original(ids).logits
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99


def test_resolving_a_gguf_path_converts_once_and_again_when_the_file_changes(cache, tiny_gguf, monkeypatch):
    path, _ = tiny_gguf
    first = rg.resolve_model_name(str(path))
    assert first == str(cache / "models" / "tiny-gemma3")

    calls = []
    monkeypatch.setattr(rg, "_convert", lambda gguf_path, out: calls.append(gguf_path))
    assert rg.resolve_model_name(str(path)) == first
    assert rg.resolve_model_name("tiny-gemma3") == first  # the import's name resolves too
    assert calls == []

    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    monkeypatch.undo()
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(cache))
    converted = []
    real_convert = rg._convert
    monkeypatch.setattr(rg, "_convert", lambda g, o: (converted.append(g), real_convert(g, o)))
    assert rg.resolve_model_name(str(path)) == first
    assert converted == [path.resolve()]
    assert [m.name for m in rg.list_cached_models()] == ["tiny-gemma3"]


def test_list_cached_models_shows_finished_imports_only(cache, tiny_gguf):
    assert rg.list_cached_models() == []
    path, _ = tiny_gguf
    rg.import_gguf(path, "a")
    (cache / "models" / "half-done").mkdir()  # no source file: an interrupted import
    listed = rg.list_cached_models()
    assert [m.name for m in listed] == ["a"]
    assert listed[0].source["kind"] == "gguf" and listed[0].source["gguf_path"] == str(path.resolve())
    assert listed[0].size_bytes > 100_000


def test_user_mistakes_get_one_clear_message(cache, tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    with pytest.raises(rg.ModelImportError, match="GGUF file not found"):
        rg.import_gguf(tmp_path / "missing.gguf", "x")
    with pytest.raises(rg.ModelImportError, match="bad model name"):
        rg.import_gguf(path, "../escape")
    with pytest.raises(rg.ModelImportError, match="reserved"):
        rg.import_gguf(path, "gemma-3-270m")
    rg.import_gguf(path, "taken")
    other = tmp_path / "other.gguf"
    other.write_bytes(path.read_bytes())
    with pytest.raises(rg.ModelImportError, match="already taken.*--name OTHER"):
        rg.import_gguf(other, "taken")
    assert rg.import_gguf(other, "taken", overwrite=True) == cache / "models" / "taken"
    assert rg.list_cached_models()[0].source["gguf_path"] == str(other.resolve())


def test_names_that_are_not_ours_resolve_to_none(cache):
    assert rg.resolve_model_name("builtin:tiny-gemma") is None
    assert rg.resolve_model_name("google/gemma-3-270m") is None
    assert rg.resolve_model_name("never-imported") is None


def test_known_name_without_its_package_says_how_to_install(cache, monkeypatch):
    monkeypatch.setitem(rg.KNOWN_MODELS, "gemma-x", rg.PackagedGGUF(
        distribution="openrl-no-such-dist", module="openrl_no_such_module", extra="gemma",
        upstream="nothing", terms="Gemma Terms of Use"))
    with pytest.raises(rg.ModelImportError, match=r"pip install 'openrl-agent\[gemma\]'.*Gemma Terms of Use"):
        rg.resolve_model_name("gemma-x")


def test_known_name_is_assembled_by_its_package_converted_once_and_the_gguf_dropped(
        cache, tiny_gguf, tmp_path, monkeypatch):
    """A real installed distribution (module + dist-info on sys.path) whose assemble() copies a GGUF."""
    path, _ = tiny_gguf
    site = tmp_path / "site"
    (site / "tiny_gguf_pkg").mkdir(parents=True)
    (site / "tiny_gguf_pkg" / "__init__.py").write_text(textwrap.dedent(f"""
        import shutil
        from pathlib import Path
        MODEL_NAME = "tiny.gguf"
        EXPECTED_SHA256 = "abc"
        CALLS = []
        def assemble(output_path=None, overwrite=False):
            CALLS.append(output_path)
            return Path(shutil.copy({str(path)!r}, output_path))
    """))
    (site / "tiny_gguf_pkg-1.2.dist-info").mkdir()
    (site / "tiny_gguf_pkg-1.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-gguf-pkg\n"
                                                                   "Version: 1.2\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(rg.KNOWN_MODELS, "tiny-known", rg.PackagedGGUF(
        distribution="tiny-gguf-pkg", module="tiny_gguf_pkg", extra="gemma", upstream="test", terms="test terms"))

    out = rg.resolve_model_name("tiny-known")
    assert out == str(cache / "models" / "tiny-known")
    assert rg.resolve_model_name("tiny-known") == out
    assert len(sys.modules["tiny_gguf_pkg"].CALLS) == 1
    assert not list((cache / "models").rglob("*.gguf"))  # the assembled file is not kept
    source = rg.list_cached_models()[0].source
    assert (source["kind"], source["version"], source["sha256"]) == ("package", "1.2", "abc")


def test_known_model_states_say_cached_installed_or_how_to_install(cache, tiny_gguf, monkeypatch):
    monkeypatch.setattr(rg, "KNOWN_MODELS", {
        "absent": rg.PackagedGGUF("openrl-no-such-dist", "openrl_no_such_module", "gemma", "x", "t"),
        "present": rg.PackagedGGUF("gguf", "gguf", "gemma", "x", "t"),
    })
    states = dict(rg.known_model_states())
    assert states["absent"] == "needs the gemma extra: pip install 'openrl-agent[gemma]'"
    assert states["present"].startswith("installed; converted on first use")
    path, _ = tiny_gguf
    monkeypatch.setattr(rg, "KNOWN_MODELS", {})
    rg.import_gguf(path, "present")  # a finished import under the name counts as cached
    monkeypatch.setattr(rg, "KNOWN_MODELS", {
        "present": rg.PackagedGGUF("gguf", "gguf", "gemma", "x", "t")})
    assert dict(rg.known_model_states())["present"] == str(cache / "models" / "present")
