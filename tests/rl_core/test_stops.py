"""Where a completion ends: every end token of the model, stop strings across token boundaries,
and SFT targets that end the way generation stops (an instruct model's end-of-turn token)."""

import pytest
import torch

from rl_core.engine import HFEngine
from rl_core.sft import collate, completion_end_id, encode_pairs
from tests.rl_core.test_engine import tiny_gemma, tiny_tokenizer

TEMPLATE = ("{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
            "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
            "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def instruct_like():
    """A tiny chat model: `<end_of_turn>` is special, listed in generation_config as an end token."""
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<end_of_turn>", "<start_of_turn>"]})
    tok.chat_template = TEMPLATE
    model = tiny_gemma(len(tok))
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.eos_token_id = [tok.eos_token_id, eot]
    return model, tok, eot


def sample(engine, n=64, max_new_tokens=16):
    torch.manual_seed(0)
    (group,) = engine.generate(["select abc"], n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens)
    return group


def test_generation_stops_at_every_end_token_of_the_model():
    model, tok, eot = instruct_like()
    group = sample(HFEngine(model, tok))
    assert all(eot not in c.token_ids[:-1] for c in group)  # nothing generated after an end of turn
    ended = [c for c in group if c.token_ids[-1] == eot]
    assert ended and all(c.finished for c in ended)  # the sample did reach it: the check bites


def test_a_stop_string_spanning_two_tokens_ends_the_completion_at_the_token_completing_it():
    model, tok = tiny_gemma(len(tiny_tokenizer())), tiny_tokenizer()
    stops = [a + b for a in "abcde" for b in "abcde"]  # every one is two tokens in this tokenizer
    group = sample(HFEngine(model, tok, stop_strings=stops))
    hits = 0
    for c in group:
        text = tok.decode(c.token_ids, skip_special_tokens=False)
        before_last = tok.decode(c.token_ids[:-1], skip_special_tokens=False)
        assert not any(s in before_last for s in stops), text  # never runs past a match
        if any(text.endswith(s) for s in stops):
            hits += 1
            assert c.finished
    assert hits >= 3  # matches do occur in this sample, so the cut is exercised


def test_sft_targets_end_with_the_instruct_models_end_of_turn():
    model, tok, eot = instruct_like()
    assert completion_end_id(model, tok, "chat") == eot
    assert completion_end_id(model, tok, "plain") == tok.eos_token_id
    encoded = encode_pairs(tok, [("say cat:", "aaa")], end_id=eot)
    labels = collate(encoded, tok.pad_token_id)["labels"][0]
    assert labels[len(encoded[0][0]) - 1] == eot


@pytest.mark.parametrize("style", ["chat", "plain"])
def test_a_model_without_a_listed_end_of_turn_ends_targets_with_eos(style):
    model, tok, _ = instruct_like()
    model.generation_config.eos_token_id = tok.eos_token_id  # only eos ends generation here
    assert completion_end_id(model, tok, style) == tok.eos_token_id
