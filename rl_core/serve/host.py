"""One loaded base model and the LoRA adapters of every client training on it.

The base weights are loaded once (`rl_core.policy.load_policy`, so built-ins, local directories and
Hub ids resolve as they do for trials); each training client is a named peft adapter on it with
its own AdamW optimizer, and a request runs with its adapter switched in (`set_adapter`). Only one
thread (the scheduler's worker) ever calls into a host, so switching needs no lock.

Samplers never run on a training adapter: a sampler holds a frozen copy of the adapter's tensors
(a snapshot taken by `save_weights_for_sampler`), and a request copies it into a scratch adapter of
the same shape, so a later `optim_step` cannot change what an existing sampler samples from.

Log-probs for the losses come from the final hidden states through the LM head in row chunks
(`rl_core.grpo.masked_head_log_probs`, the trainer's own path), at temperature 1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from rl_core.grpo import masked_head_log_probs
from rl_core.policy import BUILTIN_PREFIX, load_policy, resolve_device
from rl_core.serve import losses
from rl_core.serve.sampler import SampleParams, sample
from rl_core.serve.wire import Datum, FwdBwdRequest, Sequence, UserError

_ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
_MLP = ["gate_proj", "up_proj", "down_proj"]
TOKENS_PER_PASS = 16384  # padded tokens per forward: bounds activation memory on long batches


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    seed: int | None = None
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True

    def targets(self) -> list[str]:
        return (_ATTN if self.train_attn else []) + (_MLP if self.train_mlp else []) + \
            (["lm_head"] if self.train_unembed else [])

    def shape_key(self) -> tuple:
        return (self.rank, self.train_mlp, self.train_attn, self.train_unembed)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Adapter:
    name: str  # the peft adapter name
    spec: LoraSpec
    params: dict[str, torch.nn.Parameter]  # generic name (adapter name removed) -> live parameter
    optimizer: torch.optim.Optimizer | None = None


Snapshot = dict[str, torch.Tensor]


class BaseHost:
    def __init__(self, model_name: str, device: str = "auto", lora_alpha: int = 32) -> None:
        self.name = model_name
        self.device = resolve_device(device)
        policy = load_policy(model_name)
        self.model: Any = policy.model.to(self.device)
        self.model.eval()  # dropout off everywhere, as in the trainer
        self.tokenizer = policy.tokenizer
        # The SDK's get_tokenizer() calls AutoTokenizer.from_pretrained(tokenizer_id): a built-in's
        # is its cache directory (readable where the client shares this machine), a Hub model's its id.
        self.tokenizer_id = policy.path if model_name.startswith(BUILTIN_PREFIX) else model_name
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.lora_alpha = lora_alpha
        self._count = 0
        self._scratch: dict[tuple, Adapter] = {}

    # ---- adapters ------------------------------------------------------------------------
    def add_adapter(self, spec: LoraSpec, *, optimizer: bool = True) -> Adapter:
        from peft import LoraConfig, PeftModel, get_peft_model

        if spec.rank < 1:
            raise UserError(f"LoRA rank must be at least 1, got {spec.rank} (full fine-tuning is not served)")
        if not spec.targets():
            raise UserError("at least one of train_mlp, train_attn, train_unembed must be true")
        self._count += 1
        name = f"m{self._count}"
        config = LoraConfig(r=spec.rank, lora_alpha=self.lora_alpha, lora_dropout=0.0, target_modules=spec.targets())
        # The seed fixes A's initialisation without disturbing anyone else's random stream.
        with torch.random.fork_rng(devices=[self.device.index or 0] if self.device.type == "cuda" else []), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tied-embedding and adapter-name notices from peft
            torch.manual_seed(spec.seed if spec.seed is not None else int.from_bytes(np.random.bytes(4), "little"))
            if isinstance(self.model, PeftModel):
                self.model.add_adapter(name, config)
            else:
                self.model = get_peft_model(self.model, config, adapter_name=name)
        self.model.to(self.device)
        self.model.eval()
        params = {n.replace(f".{name}.", "."): p for n, p in self.model.named_parameters() if f".{name}." in n}
        params = dict(sorted(params.items()))  # a fixed order: the optimizer state is saved by position
        adapter = Adapter(name=name, spec=spec, params=params)
        if optimizer:
            adapter.optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95), eps=1e-12,
                                                  weight_decay=0.0)
        return adapter

    def remove_adapter(self, adapter: Adapter) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "adapter was active, now deleted": every request sets its own
            self.model.delete_adapter(adapter.name)

    def _activate(self, adapter: Adapter) -> None:
        self.model.set_adapter(adapter.name)  # also marks only its parameters as trainable

    def snapshot(self, adapter: Adapter) -> Snapshot:
        return {n: p.detach().clone() for n, p in adapter.params.items()}

    def load_tensors(self, adapter: Adapter, tensors: Snapshot) -> None:
        if set(tensors) != set(adapter.params):
            raise UserError("the checkpoint's LoRA tensors do not match this model's adapter "
                            "(different rank or trained layers)")
        with torch.no_grad():
            for n, p in adapter.params.items():
                p.copy_(tensors[n].to(p.device, p.dtype))

    # ---- training ------------------------------------------------------------------------
    def forward_backward(self, adapter: Adapter, req: FwdBwdRequest) -> tuple[list[dict], dict[str, float]]:
        """Per-datum outputs (log-probs, per-token loss) and metrics; gradients accumulate unless forward_only."""
        loss = losses.resolve(req.loss_fn, req.config)
        if not req.data:
            raise UserError("forward_backward got no data")
        for i, d in enumerate(req.data):
            if not d.tokens:
                raise UserError(f"datum {i} has no input tokens")
            losses.check_inputs(loss, req.loss_fn, i, len(d.tokens), d.inputs)
            targets = d.inputs["target_tokens"]
            if len(targets) and (targets.min() < 0 or targets.max() >= self.vocab_size):
                raise UserError(f"datum {i}: target_tokens outside the vocabulary [0, {self.vocab_size})")
        self._activate(adapter)
        outputs: list[dict] = []
        total = 0.0
        for micro in _micro_batches(req.data):
            with torch.set_grad_enabled(not req.forward_only):
                loss_sum = torch.zeros((), device=self.device)
                for d, logp_T in zip(micro, self._logprobs(micro), strict=True):
                    x = {k: torch.as_tensor(v, device=self.device, dtype=torch.float32)
                         for k, v in d.inputs.items() if k != "target_tokens"}
                    elem_T = loss.fn(logp_T, x, req.config)
                    loss_sum = loss_sum + elem_T.sum()
                    outputs.append({"logprobs": logp_T.detach().float().cpu().numpy(),
                                    "elementwise_loss": elem_T.detach().float().cpu().numpy()})
                if not req.forward_only:
                    loss_sum.backward()
            total += float(loss_sum.detach())
        if not math.isfinite(total):
            raise UserError(f"the loss is {total}: check the advantages and sampling log-probs")
        return outputs, {"loss:sum": total}

    def _logprobs(self, data: list[Datum]) -> list[torch.Tensor]:
        """log p(target_tokens[t] | tokens[:t+1]) per datum, one padded forward for the micro-batch."""
        width = max(len(d.tokens) for d in data)
        ids_BL = torch.zeros((len(data), width), dtype=torch.long)
        tgt_BL = torch.zeros_like(ids_BL)
        mask_BL = torch.zeros_like(ids_BL)
        for row, d in enumerate(data):
            ids_BL[row, :len(d.tokens)] = torch.tensor(d.tokens, dtype=torch.long)
            tgt_BL[row, :len(d.tokens)] = torch.as_tensor(d.inputs["target_tokens"], dtype=torch.long)
            mask_BL[row, :len(d.tokens)] = 1
        ids_BL, tgt_BL, mask_BL = ids_BL.to(self.device), tgt_BL.to(self.device), mask_BL.to(self.device)
        causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden_BLH = causal_lm.get_decoder()(input_ids=ids_BL, attention_mask=mask_BL).last_hidden_state
        softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
        logp_BL, _ = masked_head_log_probs(hidden_BLH, causal_lm.get_output_embeddings(), tgt_BL, mask_BL,
                                           temperature=1.0, softcap=softcap)
        return [logp_BL[row, :len(d.tokens)] for row, d in enumerate(data)]

    def optim_step(self, adapter: Adapter, lr: float, beta1: float, beta2: float, eps: float,
                   weight_decay: float, grad_clip_norm: float) -> dict[str, float]:
        """One AdamW step with this call's hyperparameters (Tinker sends them per step), then zero grads."""
        if adapter.optimizer is None:
            raise UserError("this model has no optimizer")
        for group in adapter.optimizer.param_groups:
            group.update(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
        params = list(adapter.params.values())
        norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip_norm if grad_clip_norm > 0 else float("inf")))
        adapter.optimizer.step()
        adapter.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": norm, "learning_rate": lr}

    # ---- sampling ------------------------------------------------------------------------
    def sample(self, spec: LoraSpec | None, tensors: Snapshot | None, prompt: list[int], n: int,
               params: SampleParams, prompt_logprobs: bool = False) -> tuple[list[Sequence], list[float] | None]:
        """Sample from the base model (spec None) or from a snapshot copied into a scratch adapter."""
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise UserError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        if spec is None:
            if hasattr(self.model, "disable_adapter"):
                with self.model.disable_adapter():
                    return sample(self.model, self.tokenizer, prompt, n, params, prompt_logprobs)
            return sample(self.model, self.tokenizer, prompt, n, params, prompt_logprobs)
        scratch = self._scratch.get(spec.shape_key())
        if scratch is None:
            scratch = self._scratch[spec.shape_key()] = self.add_adapter(LoraSpec(**{**spec.to_dict(), "seed": 0}),
                                                                         optimizer=False)
        self.load_tensors(scratch, tensors or {})
        self._activate(scratch)
        return sample(self.model, self.tokenizer, prompt, n, params, prompt_logprobs)


def _micro_batches(data: list[Datum]) -> list[list[Datum]]:
    batches: list[list[Datum]] = [[]]
    width = 0
    for d in data:
        new_width = max(width, len(d.tokens))
        if batches[-1] and new_width * (len(batches[-1]) + 1) > TOKENS_PER_PASS:
            batches.append([])
            new_width = len(d.tokens)
        batches[-1].append(d)
        width = new_width
    return batches
