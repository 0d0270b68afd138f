"""HFEngine on a real (tiny, random-init) Gemma 3 with a real fast tokenizer."""

import pytest
import torch

from rl_core.engine import HFEngine, VLLMEngine, encode_prompt

CHARS = list("abcdefghijklmnopqrstuvwxyz ;:?=")


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    from tokenizers import decoders, processors

    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


def tiny_gemma(vocab_size: int, seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
                              pad_token_id=0, eos_token_id=1, bos_token_id=2, sliding_window=512)
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    return tiny_gemma(len(tok)), tok


def test_encode_prompt_adds_bos_once(setup):
    _, tok = setup
    assert encode_prompt(tok, "ab") == [2, tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")]
    assert encode_prompt(tok, "<bos>ab")[0] == 2 and encode_prompt(tok, "<bos>ab")[1] != 2


def test_generate_groups_stops_and_truncates(setup):
    model, tok = setup
    engine = HFEngine(model, tok, stop_strings=[";"])
    torch.manual_seed(0)
    groups = engine.generate(["ab", "select x"], n=3, temperature=1.0, top_p=1.0, max_new_tokens=12)
    assert [len(g) for g in groups] == [3, 3]
    stop = set(engine.stop_ids)
    for prompt, group in zip(["ab", "select x"], groups, strict=True):
        for c in group:
            assert c.prompt_ids == encode_prompt(tok, prompt)
            assert 1 <= len(c.token_ids) <= 12
            assert not any(t in stop or tok.decode(t) == ";" for t in c.token_ids[:-1])  # nothing after a stop
            assert c.finished == (c.token_ids[-1] in stop or c.text.endswith(";"))
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)


def test_greedy_is_deterministic_and_matches_unbatched(setup):
    model, tok = setup
    engine = HFEngine(model, tok)
    batched = engine.generate(["ab", "select abc from t"], n=1, temperature=0.0, top_p=1.0, max_new_tokens=8)
    alone = engine.generate(["ab"], n=1, temperature=0.0, top_p=1.0, max_new_tokens=8)
    assert batched[0][0].token_ids == alone[0][0].token_ids  # left padding does not change the result


def test_vllm_engine_missing_is_a_clear_error(setup):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        model, tok = setup
        with pytest.raises(RuntimeError, match="gpu extra"):
            VLLMEngine(model, tok)
    else:
        pytest.skip("vllm is installed; the missing-vllm message is not reachable")


def test_shared_prefill_gives_the_same_tokens_as_plain_generate(setup):
    model, tok = setup
    engine = HFEngine(model, tok)
    prompts = ["ab", "select abc from t where x"]
    shared = engine.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_new_tokens=8)
    plain = [[c] * 2 for (c,) in engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=8)]
    assert [[c.token_ids for c in g] for g in shared] == [[c.token_ids for c in g] for g in plain]


def test_greedy_matches_transformers_generate(setup):
    """The row-dropping decode loop gives generate's greedy tokens, stops included."""
    model, tok = setup
    engine = HFEngine(model, tok, stop_strings=[";"])
    stop_ids = [*engine.stop_ids, tok.convert_tokens_to_ids(";")]
    prompts = ["ab", "select abc from t where x", "q"]
    ours = engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_new_tokens=10)
    for prompt, (c,) in zip(prompts, ours, strict=True):
        ids = torch.tensor([encode_prompt(tok, prompt)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                             eos_token_id=stop_ids, pad_token_id=tok.pad_token_id)
        theirs = out[0, ids.shape[1]:].tolist()
        end = next((i + 1 for i, t in enumerate(theirs) if t in stop_ids), len(theirs))
        assert c.token_ids == theirs[:end]


@pytest.mark.parametrize("old_sampling", [False, True], ids=["race", "multinomial"])
@pytest.mark.parametrize("top_p", [1.0, 0.6])
def test_sampling_follows_the_tempered_distribution(setup, top_p, old_sampling):
    """First tokens of many samples match softmax(logits / T) (nucleus-filtered) within sampling error."""
    model, tok = setup
    engine = HFEngine(model, tok)
    engine.old_sampling = old_sampling
    prompt, temperature, n = "select abc", 0.7, 4000
    ids = torch.tensor([encode_prompt(tok, prompt)])
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=ids).logits[0, -1].float() / temperature, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        probs = probs / probs.sum()
    torch.manual_seed(0)
    (group,) = engine.generate([prompt], n=n, temperature=temperature, top_p=top_p, max_new_tokens=1)
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in group]), minlength=probs.shape[0]).float()
    assert counts[probs == 0].sum() == 0  # nothing outside the nucleus
    expected = probs * n
    seen = expected > 0
    # every token's count within 5 binomial standard deviations (+1 for tiny expectations)
    tolerance = 5 * (expected * (1 - probs)).sqrt() + 1
    assert ((counts[seen] - expected[seen]).abs() <= tolerance[seen]).all()


def test_prefill_token_cap_splits_calls_without_changing_results(setup):
    model, tok = setup
    prompts = ["ab", "select abc from t where x", "q", "select x"]
    capped = HFEngine(model, tok, max_prefill_tokens=8)  # at most one or two prompts per call
    whole = HFEngine(model, tok)
    assert whole.max_prefill_tokens > 10_000  # a small vocabulary is not capped
    a = capped.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_new_tokens=6)
    b = whole.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_new_tokens=6)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]


def _race_cdf_gap(xs: torch.Tensor) -> float:
    """max |P(E <= x) - (1 - exp(-x))| over `xs` for the sampler's own Exp(1) draws, counted exactly
    on the 2^53-point grid of fp64 uniforms that torch.rand draws from (bisection per x)."""
    from rl_core.engine import exponential_of_uniform

    grid = 2 ** 53
    lo = torch.full(xs.shape, -1, dtype=torch.int64)  # largest k with E(k / 2^53) <= x (-1: none)
    hi = torch.full(xs.shape, grid - 1, dtype=torch.int64)
    top = exponential_of_uniform(hi.double() / grid) <= xs
    lo = torch.where(top, hi, lo)
    hi = torch.where(top, hi + 1, hi)
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        ok = exponential_of_uniform(mid.double() / grid) <= xs
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    cdf = (lo + 1).double() / grid
    return float((cdf - (-torch.expm1(-xs))).abs().max())


def test_race_sampler_implied_probabilities_on_a_262k_row_are_exact_to_1e_3_down_to_1e_9():
    """The race picks i with probability p_i / sum(p) when E ~ Exp(1) exactly; the sampler's draws
    differ from Exp(1) by at most `gap` in CDF (measured here on its own transform and grid). Swapping
    one of the n racers' exact Exp(1) for the drawn one moves P(i wins) by at most `gap` (each racer
    enters through one threshold event), so each round's error is at most n * gap: the implied
    probability of token i is within n_blocks * gap / P(block) + width * gap / P(i | block) of exact."""
    from rl_core.engine import block_masses, race_block

    gen = torch.Generator().manual_seed(0)
    vocab = 262_144
    logits = torch.randn(1, vocab, generator=gen) * 3
    logits[0, 7] = 40.0  # a peaked row: one token near 1, most of the rest far below 1e-9
    logits[0, 1000:1010] = 40.0 + torch.log(torch.logspace(-8.9, -6, 10))  # planted small tokens
    probs = torch.softmax(logits, -1)
    gap = _race_cdf_gap(torch.logspace(-14, 2, 4000, dtype=torch.float64))
    assert gap <= 2.0 ** -52
    width = race_block(vocab)
    mass = block_masses(probs)[0]
    p = probs[0].double()
    p_block = (mass / mass.sum()).repeat_interleave(width)[:vocab]
    p_inside = p / mass.repeat_interleave(width)[:vocab]
    rel_err = mass.numel() * gap / p_block + width * gap / p_inside
    small = p >= 1e-9
    assert int(small.sum()) >= 11 and bool((p[1000:1010] >= 1e-9).all())
    assert float(rel_err[small].max()) < 1e-3
    assert torch.allclose(p_block * p_inside, p / p.sum(), rtol=1e-12, atol=0)  # the two rounds compose


def test_race_sampler_draws_each_token_at_its_rate_and_never_a_zero_one():
    from rl_core.engine import race_sample

    probs = torch.tensor([0.5, 0.0, 0.2, 0.1, 0.0] + [0.2 / 32] * 32)  # 37 tokens: the last block padded
    torch.manual_seed(0)
    n = 40_000
    counts = torch.bincount(race_sample(probs.expand(n, -1)), minlength=probs.numel()).double()
    expected = probs.double() * n
    assert counts[probs == 0].sum() == 0
    assert bool(((counts - expected).abs() <= 5 * (expected * (1 - probs.double())).sqrt() + 1).all())


def test_a_nan_row_raises_instead_of_drawing_a_token():
    from rl_core.engine import _sample

    logits = torch.zeros(2, 300)
    logits[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _sample(logits, temperature=1.0, top_p=1.0)
