"""The built-in policies: a Gemma 3 architecture small enough for GRPO on a 2-core CPU, no download.

`builtin:tiny-gemma` = byte-level BPE trained on the built-in benchmark's text + a randomly
initialised `Gemma3ForCausalLM` + a short supervised warm start on part of the train split, with
the exact prompt the RL stage uses. The warm start is deliberately short: the point is headroom
(greedy dev accuracy well below pass@8 at the rollout temperature) so GRPO has failures that
sampling can find and fix (see docs/grpo-calibration.md, round 3).
`builtin:micro-gemma` = the same tokenizer and architecture family at micro size, random init,
no warm start: a model that builds in seconds for tests.

Both are built on first use into the cache (`models/<name>-v<version>-data<dataset version>-s<seed>`), atomically, and
saved with `save_pretrained`, so they load like any Hugging Face directory. Bump `version` in a
recipe whenever the recipe changes: that is what makes a stale cache rebuild.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rl_core.cache import build_once, models_dir
from rl_core.catalogue import RECIPES, Recipe

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>"]  # ids 0, 1, 2 as in Gemma's own vocabulary


@dataclass
class BuildInfo:
    """What a build produced; saved as build_info.json next to the weights."""

    recipe: dict
    seed: int
    parameters: int
    vocab_size: int
    build_seconds: float
    sft_losses: list[float] = field(default_factory=list)
    prompt_tokens_mean: float = 0.0


def cached_path(name: str, seed: int = 0) -> Path:
    """The model's cache directory; it names the dataset version too, since the tokenizer and the
    warm start are learnt from the built-in data (a new benchmark version builds a new model)."""
    from sql_env.datasets.builtin.build import VERSION as DATA_VERSION

    recipe = _recipe(name)
    return models_dir() / f"{recipe.name}-v{recipe.version}-data{DATA_VERSION}-s{seed}"


def ensure_built(name: str, seed: int = 0, log: Callable[[str], None] | None = None) -> Path:
    """Directory of the built model `name` ("tiny-gemma" / "micro-gemma"), building it if needed."""
    recipe = _recipe(name)
    return build_once(cached_path(name, seed), lambda tmp: build(recipe, tmp, seed=seed, log=log))


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown built-in model {name!r}: choose one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


# --------------------------------------------------------------------------- data


def builtin_prompts(split: str) -> list[tuple]:
    """(example, plain prompt) for a built-in split: the prompt `SQLEnvironment.prompt` gives the RL
    stage (same `render_prompt`, same DDL), with each schema's DDL read once instead of per example."""
    from sql_env.datasets import database_path, load_dataset, schema_ddl
    from sql_env.prompts import render_prompt

    examples = load_dataset("builtin", split)
    ddl = {db: schema_ddl(database_path("builtin", db)) for db in sorted({e.db_id for e in examples})}
    return [(e, render_prompt(e, ddl[e.db_id], "plain")) for e in examples]


def builtin_env():
    """The built-in benchmark's environment with the plain prompt style the RL stage uses."""
    from sql_env import SQLEnvironment

    return SQLEnvironment(dataset="builtin", prompt_style="plain")


def tokenizer_corpus(train: list[tuple]) -> list[str]:
    """Train questions, gold SQL and every schema's DDL (one prompt per database carries it)."""
    per_db = {e.db_id: prompt for e, prompt in train}
    return [e.question for e, _ in train] + [e.gold_sql for e, _ in train] + list(per_db.values())


# --------------------------------------------------------------------------- pieces


# Pre-token pieces: a word with its leading space (identifiers keep their underscores, so
# `customer_id` can become one token), a single digit (numbers are copied digit by digit), a run of
# punctuation, whitespace. Against GPT-2's split this halves the prompt (DDL) length, and prompt
# length is the main cost of generation and training on CPU.
_PIECES = r" ?[A-Za-z_]+| ?[0-9]| ?[^\sA-Za-z0-9_]+|\s+"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE over `_PIECES`, wrapped as a HF fast tokenizer with Gemma's pad/eos/bos ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PIECES), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", padding_side="left"
    )


def gemma_config(recipe: Recipe, vocab_size: int):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        head_dim=recipe.head_dim,
        query_pre_attn_scalar=recipe.head_dim,
        max_position_embeddings=recipe.max_positions,
        sliding_window=recipe.max_positions,
        # All layers global: prompts are far shorter than any window, and the hybrid sliding-window
        # cache made CPU generation about 2x slower in our measurement.
        layer_types=["full_attention"] * recipe.num_layers,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )


def build(recipe: Recipe, out_dir: Path, *, seed: int = 0, log: Callable[[str], None] | None = None) -> BuildInfo:
    """Train the tokenizer, initialise the model, run the warm start, save everything into out_dir."""
    import torch
    from transformers import Gemma3ForCausalLM, GenerationConfig

    from rl_core.sft import SFTConfig, train_sft

    say = log or (lambda _msg: None)
    started = time.monotonic()
    train = builtin_prompts("train")
    tokenizer = train_tokenizer(tokenizer_corpus(train), recipe.vocab_size)
    say(f"tokenizer: {len(tokenizer)} tokens")

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(gemma_config(recipe, len(tokenizer))).float()
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: Gemma3ForCausalLM, {n_params:,} parameters")

    # The warm start sees only part of train (the calibration's recipe): RL keeps the whole pool.
    chosen = sorted(random.Random(seed).sample(range(len(train)), min(recipe.sft_examples, len(train))))
    pairs = [(train[i][1], train[i][0].gold_sql) for i in chosen]  # the SFT code appends eos
    prompt_tokens = [len(ids) for ids in tokenizer([prompt for _, prompt in train])["input_ids"]]
    losses: list[float] = []
    if recipe.sft_steps and pairs:
        # Constant lr after warmup: a recipe with fewer steps is then exactly a prefix of a longer
        # one, so intermediate checkpoints of one run measure every candidate step count.
        cfg = SFTConfig(steps=recipe.sft_steps, batch_size=recipe.sft_batch, lr=recipe.sft_lr, seed=seed,
                        schedule="constant", warmup_steps=5)

        def on_step(step: int, loss: float) -> None:
            if step % 10 == 0 or step == cfg.steps - 1:
                say(f"warm start step {step + 1}/{cfg.steps} loss {loss:.3f}")

        with _deterministic(torch):
            losses = train_sft(model, tokenizer, pairs, cfg, on_step=on_step)
    model.eval()
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, do_sample=False,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = BuildInfo(
        recipe=asdict(recipe), seed=seed, parameters=n_params, vocab_size=len(tokenizer),
        build_seconds=round(time.monotonic() - started, 2), sft_losses=[round(x, 4) for x in losses],
        prompt_tokens_mean=round(sum(prompt_tokens) / len(prompt_tokens), 1),
    )
    (out_dir / "build_info.json").write_text(json.dumps(asdict(info), indent=1))
    return info


class _deterministic:
    """Deterministic kernels during the build only (they are cheap on CPU), restored afterwards."""

    def __init__(self, torch_module):
        self.torch = torch_module

    def __enter__(self):
        self.previous = self.torch.are_deterministic_algorithms_enabled()
        self.torch.use_deterministic_algorithms(True, warn_only=True)

    def __exit__(self, *exc):
        self.torch.use_deterministic_algorithms(self.previous)


def read_build_info(path: Path) -> dict:
    info = Path(path) / "build_info.json"
    return json.loads(info.read_text()) if info.is_file() else {}


def evaluate_dev(path: Path | str, *, limit: int = 400, pass_k: int = 0, temperature: float = 0.7,
                 max_new_tokens: int = 128) -> dict:
    """Greedy dev execution accuracy of a model directory on the built-in benchmark (and pass@k if asked)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl_core.engine import HFEngine
    from rl_core.evaluate import greedy_accuracy, pass_at_k

    # A built directory is fp32 with pad/eos/bos and left padding saved: plain transformers loads
    # it as the policy loader would (which itself builds these models, so it is not used here).
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with builtin_env() as env:
        ids = env.example_ids("dev")[:limit] if limit else env.example_ids("dev")
        engine = HFEngine(model, tokenizer, stop_strings=env.stop_strings)
        greedy = greedy_accuracy(engine, env, ids, max_new_tokens=max_new_tokens)
        report = {"n": greedy.n, "greedy": greedy.accuracy, "greedy_stderr": greedy.stderr}
        if pass_k:
            import torch

            torch.manual_seed(0)
            report["pass_k"], report["sample_mean"] = pass_at_k(
                engine, env, ids, k=pass_k, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens)
    return report
