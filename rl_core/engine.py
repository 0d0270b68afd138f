"""Rollout engines: sample G completions for each of P prompts, stopping at the end of the SQL.

`HFEngine` (the default) runs transformers `generate` on the policy itself: one call for the
whole P x G batch with a KV cache, so the weights it samples from are always the trained ones.
`VLLMEngine` (the `gpu` extra) is imported lazily and must be told about new weights (`sync`).

Sampling uses exactly softmax(logits / T) with optional top-p and *no* top-k: the trainer's
log-probs assume that distribution, and transformers would otherwise apply its default top_k=50.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (e.g. vllm not installed); the message says the fix."""


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]  # sampled tokens, up to and including the stop token
    text: str  # decoded token_ids without special tokens
    finished: bool  # True when a stop token ended it; False when max_new_tokens cut it


class Engine(Protocol):
    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[list[Completion]]:
        """n completions per prompt (temperature 0 = greedy), grouped per prompt in order."""

    def sync(self) -> None:
        """Make the engine sample from the policy's current weights."""


def autocast_context(device: torch.device) -> Any:
    """bf16 autocast where the hardware does it fast (CUDA with bf16); plain fp32 elsewhere. Rollouts
    and the learner both run under it, so the policy that samples is the one that is scored."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, adding BOS only when the text does not already hold it."""
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = bool(bos) and prompt.startswith(bos)
    return tokenizer(prompt, add_special_tokens=not has_bos)["input_ids"]


def end_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a turn: the tokenizer's EOS and each id the model's generation config
    lists (Gemma-3 instruct lists `<eos>` and `<end_of_turn>`; the latter ends its turns)."""
    ids = {tokenizer.eos_token_id} if isinstance(getattr(tokenizer, "eos_token_id", None), int) else set()
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([listed] if isinstance(listed, int) else (listed or []))
    return sorted(ids)


class StopStrings:
    """Finds the token that completes a stop string in a row's decoded text.

    A stop string may span tokens ("\n--" is two in both tokenizers here), so each new token is
    checked on the decoded text of the row's last few tokens: a match of m characters spans at
    most m tokens, and a match can only end at the newest token (older ones were checked before).
    """

    def __init__(self, tokenizer: Any, strings: Sequence[str]) -> None:
        self.tokenizer, self.strings = tokenizer, tuple(s for s in strings if s)
        self.window = max((len(s) for s in self.strings), default=0)

    def hits(self, rows: Sequence[list[int]]) -> list[bool]:
        """For each row (its completion tokens so far): does its newest token complete a match?"""
        if not self.strings:
            return [False] * len(rows)
        tails = self.tokenizer.batch_decode([r[-self.window:] for r in rows], skip_special_tokens=False)
        return [any(s in t for s in self.strings) for t in tails]


class HFEngine:
    def __init__(self, model: Any, tokenizer: Any, *, stop_strings: Sequence[str] = (),
                 max_batch: int = 256, max_prefill_tokens: int | None = None) -> None:
        self.model = model
        if max_prefill_tokens is None:
            # Measured on CPU: a gemma-3-270m (262k vocabulary) prefill of 16 prompts x 161 tokens
            # peaked at 6.4 GiB; 1,024 prompt tokens per call keeps an evaluation near 3 GiB.
            # Small vocabularies (the built-in policies) need no cap.
            vocab = getattr(getattr(model, "config", None), "vocab_size", 0) or 0
            max_prefill_tokens = 1024 if vocab > 65536 else 1 << 30
        self.max_prefill_tokens = max_prefill_tokens
        self.tokenizer = tokenizer
        self.stop_ids = end_token_ids(model, tokenizer)
        self.stop_strings = StopStrings(tokenizer, stop_strings)
        if not self.stop_ids and not self.stop_strings.strings:
            raise ValueError("the tokenizer has no EOS token and no stop strings were given; "
                             "pass stop_strings so generation knows where the SQL ends")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.max_batch = max_batch
        self.old_sampling = False  # True: torch.multinomial draws (the old path, for benchmarks)

    def sync(self) -> None:
        """Nothing to do: generation runs on the trained module itself."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[list[Completion]]:
        prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        longest = max((len(ids) for ids in prompt_ids), default=1)
        per_call = max(1, min(self.max_batch // n, self.max_prefill_tokens // longest))
        # Similar lengths share a call so little compute goes to padding (schemas differ in length).
        order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
        groups: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), per_call):
            chunk = order[start:start + per_call]
            flat = self._generate_batch([prompt_ids[i] for i in chunk], n, temperature, top_p, max_new_tokens)
            for j, i in enumerate(chunk):
                groups[i] = flat[j * n:(j + 1) * n]
        return groups

    def _generate_batch(self, prompts: list[list[int]], n: int, temperature: float, top_p: float,
                        max_new_tokens: int) -> list[Completion]:
        width = max(len(ids) for ids in prompts)
        device = next(self.model.parameters()).device
        input_ids_PL = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask_PL = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every completion starts at column `width`
            input_ids_PL[row, width - len(ids):] = torch.tensor(ids)
            mask_PL[row, width - len(ids):] = 1
        input_ids_PL, mask_PL = input_ids_PL.to(device), mask_PL.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_context(device):
                rows = self._decode(input_ids_PL, mask_PL, n, temperature, top_p, max_new_tokens)
        finally:
            self.model.train(was_training)
        completions = []
        for (tokens, finished), ids in zip(rows, (ids for ids in prompts for _ in range(n)), strict=True):
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            completions.append(Completion(list(ids), tokens, text, finished))
        return completions

    def _decode(self, input_ids_PL: torch.Tensor, mask_PL: torch.Tensor, n: int, temperature: float,
                top_p: float, max_new_tokens: int) -> list[tuple[list[int], bool]]:
        """Sample n continuations per prompt (tokens, whether a stop ended them); finished rows
        leave the batch at once.

        `generate` keeps every row until the last one stops, so one long sample makes the whole
        batch pay for max_new_tokens; here a row that emits a stop token is dropped from the batch
        and its KV cache, so the cost follows the completions' real lengths. Each prompt is
        encoded once and its cache copied n times. Sampling is exactly softmax(logits / T) with
        optional nucleus (top-p) filtering, no top-k; temperature 0 is greedy. A row stops at an
        end token or at the token that completes a stop string (`StopStrings`).
        """
        positions_PL = (mask_PL.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids_PL, attention_mask=mask_PL, position_ids=positions_PL,
                         use_cache=True, logits_to_keep=1)
        cache = out.cache
        if n > 1:
            for layer in cache.layers:
                layer.batch_repeat_interleave(n)
        logits_BV = out.logits[:, -1].float().repeat_interleave(n, 0)
        mask_BL = mask_PL.repeat_interleave(n, 0)
        pos_B1 = positions_PL[:, -1:].repeat_interleave(n, 0) + 1
        alive_B = torch.arange(logits_BV.shape[0], device=logits_BV.device)
        stop_V = torch.zeros(logits_BV.shape[-1], dtype=torch.bool, device=logits_BV.device)
        stop_V[[i for i in self.stop_ids if i < stop_V.shape[0]]] = True
        rows: list[list[int]] = [[] for _ in range(logits_BV.shape[0])]
        finished = [False] * len(rows)
        for t in range(max_new_tokens):
            token_B = _sample(logits_BV, temperature, top_p, self.old_sampling)
            alive = alive_B.tolist()
            for row, token in zip(alive, token_B.tolist(), strict=True):
                rows[row].append(token)
            stop_B = stop_V[token_B] | torch.tensor(self.stop_strings.hits([rows[r] for r in alive]),
                                                    device=stop_V.device)
            for row in (alive_B[stop_B]).tolist():
                finished[row] = True
            if t == max_new_tokens - 1:
                break
            keep_B = ~stop_B
            if not bool(keep_B.any()):
                break
            if not bool(keep_B.all()):
                idx = keep_B.nonzero().squeeze(1)
                for layer in cache.layers:
                    layer.batch_select_indices(idx)
                alive_B, token_B, mask_BL, pos_B1 = alive_B[idx], token_B[idx], mask_BL[idx], pos_B1[idx]
            mask_BL = torch.cat([mask_BL, mask_BL.new_ones((mask_BL.shape[0], 1))], dim=1)
            out = self.model(input_ids=token_B[:, None], attention_mask=mask_BL, position_ids=pos_B1,
                             cache=cache, use_cache=True, logits_to_keep=1)
            cache, logits_BV, pos_B1 = out.cache, out.logits[:, -1].float(), pos_B1 + 1
        return list(zip(rows, finished, strict=True))

class VLLMEngine:
    """vLLM rollouts for GPUs. Unverified until run on a GPU (none was available when written).

    The policy is saved once to a temp dir for vLLM to load; `sync` pushes the current weights
    (LoRA merged into the base) into the running engine after every optimizer step.
    """

    def __init__(self, model: Any, tokenizer: Any, *, stop_strings: Sequence[str] = (),
                 gpu_memory_utilization: float = 0.3) -> None:
        try:
            import vllm
        except ImportError:
            raise EngineUnavailable("VLLMEngine needs vllm: install the gpu extra "
                               "(pip install 'openrl-agent[gpu]') or use the default HFEngine") from None
        self.model = model
        self.tokenizer = tokenizer
        self.stop_strings = list(stop_strings)
        self.end_ids = end_token_ids(model, tokenizer)
        self._vllm = vllm
        self._dir = tempfile.mkdtemp(prefix="openrl-vllm-")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        self.llm = vllm.LLM(model=self._dir, gpu_memory_utilization=gpu_memory_utilization,
                            enable_prefix_caching=True)

    def sync(self) -> None:
        merged = hasattr(self.model, "merge_adapter")
        if merged:
            self.model.merge_adapter()
        try:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            weights = [(k.replace("base_layer.", ""), v) for k, v in base.state_dict().items()
                       if "lora_" not in k]
            self.llm.collective_rpc(_load_weights, args=(weights,))
        finally:
            if merged:
                self.model.unmerge_adapter()
        self.llm.reset_prefix_cache()

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[list[Completion]]:
        params = self._vllm.SamplingParams(
            n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0, top_k=-1,
            max_tokens=max_new_tokens, stop=self.stop_strings or None, stop_token_ids=self.end_ids,
            include_stop_str_in_output=True)
        prompt_ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        groups = []
        for ids, out in zip(prompt_ids, outputs, strict=True):
            groups.append([Completion(ids, list(c.token_ids), c.text, c.finish_reason == "stop")
                           for c in out.outputs])
        return groups

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


def _sample(logits_BV: torch.Tensor, temperature: float, top_p: float, multinomial: bool = False) -> torch.Tensor:
    """One token per row from softmax(logits / T), nucleus-filtered when top_p < 1; argmax at T=0.

    The draw is an exponential race, argmax_i p_i / E_i with E_i ~ Exp(1), which picks i with
    probability exactly p_i / sum(p), run in two rounds (`race_sample`) so it costs about as much
    as the softmax. `multinomial=True` is the old path (torch.multinomial, 40 ms per call on
    8 x 262k logits on this project's CPU). A NaN probability raises instead of drawing a token.
    """
    if temperature <= 0:
        return logits_BV.argmax(-1)
    probs_BV = torch.softmax(logits_BV / temperature, dim=-1)
    if top_p < 1.0:
        sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
        # keep the smallest set whose mass reaches top_p (the top token always stays)
        drop_BV = sorted_BV.cumsum(-1) - sorted_BV >= top_p
        sorted_BV = sorted_BV.masked_fill(drop_BV, 0.0)
        probs_BV = torch.zeros_like(probs_BV).scatter_(-1, order_BV, sorted_BV)
    if multinomial:
        return torch.multinomial(probs_BV, 1).squeeze(1)
    return race_sample(probs_BV)


def race_block(vocab: int) -> int:
    """Block width of the two-round race: the power of two nearest above sqrt(vocab) (512 for 262k)."""
    return 1 << max(0, math.ceil(math.log2(max(vocab, 1)) / 2))


def block_masses(probs_BV: torch.Tensor) -> torch.Tensor:
    """(B, blocks) fp64 sums of `race_block`-wide slices of each row (zero-padded at the end)."""
    width = race_block(probs_BV.shape[-1])
    pad = -probs_BV.shape[-1] % width
    padded_BV = torch.nn.functional.pad(probs_BV, (0, pad)) if pad else probs_BV
    return padded_BV.reshape(probs_BV.shape[0], -1, width).sum(-1, dtype=torch.float64)


def exponentials(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Exp(1) draws in fp64 from 53-bit uniforms: -log(1 - U), U = k 2^-53, with U = 0 mapped to
    2^-54 (never 0, so w / E stays finite). P(E <= x) is within 2^-53 of 1 - exp(-x) for every x,
    so a weight of 1e-9 against one of 1 still wins its share (fp32 uniforms stop near 6e-8)."""
    return exponential_of_uniform(torch.rand(shape, dtype=torch.float64, device=device))


def exponential_of_uniform(u: torch.Tensor) -> torch.Tensor:
    """The transform `exponentials` applies to its fp64 uniforms (apart so tests can audit it)."""
    return (-torch.log1p(-u)).clamp_(min=2.0 ** -54)


def race_sample(probs_BV: torch.Tensor) -> torch.Tensor:
    """argmax p / Exp(1) per row, exact, in two rounds: a race between blocks weighted by their
    mass, then one inside the winning block: P(i) = (m_b / M)(p_i / m_b) = p_i / M. Each round
    races about sqrt(V) fp64 keys instead of V (a 262k-wide fp64 race cost ~10x the softmax)."""
    mass_BN = block_masses(probs_BV)
    if bool(torch.isnan(mass_BN).any()):
        raise ValueError("the policy's next-token probabilities hold NaN (non-finite logits): "
                         "the weights diverged; lower learning_rate")
    block_B = (mass_BN / exponentials(tuple(mass_BN.shape), mass_BN.device)).argmax(-1)
    width = race_block(probs_BV.shape[-1])
    cols_BW = block_B[:, None] * width + torch.arange(width, device=probs_BV.device)
    inside_BW = probs_BV.gather(1, cols_BW.clamp(max=probs_BV.shape[-1] - 1)).double()
    inside_BW = inside_BW.masked_fill(cols_BW >= probs_BV.shape[-1], 0.0)  # the padding past V
    pick_B = (inside_BW / exponentials(tuple(inside_BW.shape), inside_BW.device)).argmax(-1)
    return cols_BW.gather(1, pick_B[:, None]).squeeze(1)


def _load_weights(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs inside each vLLM worker: load the pushed tensors into its model."""
    worker.model_runner.model.load_weights(weights=weights)
