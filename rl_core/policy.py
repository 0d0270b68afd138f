"""Load a policy for GRPO: a built-in tiny Gemma, a local Hugging Face directory, or a Hub id.

    policy = load_policy("builtin:tiny-gemma", lora_rank=16)
    policy.model       # a causal LM (a peft PeftModel when lora_rank > 0), on CPU, eval mode
    policy.tokenizer   # fast tokenizer, pad/eos/bos set, padding_side="left" for generation
    policy.prompt_style  # "plain" (base / built-in models) or "chat" (instruct models with a chat template)

lora_rank 0 means full fine-tuning, always on fp32 weights (a bf16 checkpoint is upcast: the
optimizer's master copy); > 0 wraps the model with a peft LoRA adapter (fp32) so only the
adapter trains and the frozen base keeps the checkpoint's dtype. The KL reference is not the loaded base but the policy GRPO starts from (after
any supervised stage): the trainer keeps it (`GRPOTrainer.reference`). The caller moves the model
to its device (`resolve_device`).
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rl_core.tiny_gemma import RECIPES, ensure_built

BUILTIN_PREFIX = "builtin:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_INSTRUCT_NAME = re.compile(r"(-it\b|-it-|instruct|chat)", re.IGNORECASE)
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class PolicyLoadError(ValueError):
    """The model name cannot be loaded; the message says how to fix it."""


@dataclass
class Policy:
    model: Any
    tokenizer: Any
    prompt_style: str  # "plain" | "chat"
    name: str  # the name it was loaded by, e.g. "builtin:tiny-gemma"
    path: str = ""  # directory the weights came from
    lora_rank: int = 0
    adapter_base: str = ""  # a LoRA policy: the saved weights its adapter sits on ("" = the model itself)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


def load_policy(
    model: str,
    *,
    lora_rank: int = 0,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    seed: int = 0,
    dtype: str = "auto",
    init_weights: str | os.PathLike[str] | None = None,
    continue_adapter: bool = False,
) -> Policy:
    """Resolve `model` to weights + tokenizer, optionally wrap with LoRA. Raises PolicyLoadError on bad names.

    `init_weights`: another trial's saved policy (its `adapter/` directory) to start from instead of
    the model's own weights: full weights are loaded as they are; a LoRA adapter is merged, in fp32,
    into the weights it was trained on (its own parent's, recursively, named in `ADAPTER_BASE_FILE`),
    so any new LoRA of this trial starts exactly where the parent ended (B = 0).
    `continue_adapter` (with lora_rank > 0 and a LoRA parent): keep training the parent's adapter
    itself, on the weights it sat on, instead of merging it and starting a fresh one."""
    if lora_rank < 0:
        raise PolicyLoadError(f"lora_rank must be >= 0 (0 = full fine-tuning), got {lora_rank}")
    if dtype not in _DTYPES:
        raise PolicyLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
    path, builtin = _resolve(model, seed)
    torch_dtype = _torch_dtype(dtype, path)
    lm, tokenizer = _load_dir(path, torch_dtype)
    style = "chat" if (not builtin and tokenizer.chat_template and _INSTRUCT_NAME.search(model)) else "plain"
    weights = Path(init_weights).resolve() if init_weights is not None else None
    adapter_base = ""
    if weights is not None and lora_rank > 0 and _stacks(lm, weights):
        resume = continue_adapter
        lm = _stacked_lora(lm, weights, resume, lora_rank, lora_alpha, lora_dropout, target_modules, seed)
        adapter_base = _adapter_base(weights) if resume else str(weights)
    elif weights is not None and continue_adapter and lora_rank > 0 and _is_adapter(weights):
        from peft import PeftModel

        adapter_base = _adapter_base(weights)
        lm = PeftModel.from_pretrained(_load_below(lm, weights), weights, is_trainable=True)
    elif lora_rank > 0:
        if weights is not None:
            lm, adapter_base = _load_parent(lm, weights), str(weights)
        lm = _wrap_lora(lm, lora_rank, lora_alpha, lora_dropout, target_modules, seed)
    else:
        if weights is not None:
            lm = _load_parent(lm, weights)
        # full fine-tuning keeps fp32 master weights: AdamW on bf16 rounds small updates away
        lm = lm.float()  # (compute still runs in bf16 under autocast where the hardware is fast)
    lm.eval()
    return Policy(model=lm, tokenizer=tokenizer, prompt_style=style, name=model, path=str(path), lora_rank=lora_rank,
                  adapter_base=adapter_base)


def _resolve(model: str, seed: int) -> tuple[Path | str, bool]:
    """(directory or Hub id to load, whether it is a built-in). Builds a built-in on first use."""
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX) :]
        if name not in RECIPES:
            choices = ", ".join(BUILTIN_PREFIX + n for n in sorted(RECIPES))
            raise PolicyLoadError(f"unknown built-in model {model!r}: choose one of {choices}")
        return ensure_built(name, seed=0), True  # one cached build serves every trial seed
    imported = _imported_dir(model)
    if imported is not None:
        return Path(imported), False
    local = Path(model).expanduser()
    if local.exists() or _looks_like_path(model):
        return _check_dir(local), False
    if not _HUB_ID.match(model):
        raise PolicyLoadError(
            f"model {model!r} is neither a built-in (builtin:tiny-gemma), an existing local directory, "
            "nor a Hub id like 'google/gemma-3-270m'"
        )
    return _hub_snapshot(model), False


def _imported_dir(model: str) -> str | None:
    """A GGUF file, a packaged model name or an earlier import, converted once by rl_core.gguf."""
    try:
        from rl_core.gguf import ModelImportError, resolve_model_name
    except ImportError:  # the GGUF importer is optional
        return None
    try:
        return resolve_model_name(model)
    except ModelImportError as exc:
        raise PolicyLoadError(str(exc)) from exc


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or (os.sep in name and name.count("/") != 1)


def _check_dir(path: Path) -> Path:
    if not path.exists():
        raise PolicyLoadError(f"model directory {str(path)!r} does not exist: pass a directory written by save_pretrained, or builtin:tiny-gemma")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise PolicyLoadError(
            f"{str(path)!r} is not a Hugging Face model directory (no config.json): "
            "pass a directory written by save_pretrained (config.json, weights, tokenizer files)"
        )
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise PolicyLoadError(f"{str(path)!r} has a config.json but no weights (*.safetensors or *.bin): re-save the model with save_pretrained")
    return path


def _hub_snapshot(repo_id: str) -> Path:
    """A local snapshot of a Hub model: the local HF cache first, the network only when reachable."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    offline_hint = (
        "download it where the Hub is reachable (e.g. `huggingface-cli download "
        f"{repo_id} --local-dir DIR`) and pass that local directory instead, or use builtin:tiny-gemma"
    )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if _offline_flag() or not _reachable(endpoint):
        raise PolicyLoadError(f"the Hugging Face Hub ({endpoint}) is not reachable, so {repo_id!r} cannot be fetched: {offline_hint}")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (HfHubHTTPError, OSError) as exc:
        raise PolicyLoadError(f"could not fetch {repo_id!r} from the Hub ({exc.__class__.__name__}: {exc}); {offline_hint}") from exc


def _offline_flag() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """One TCP connect with a short timeout, so an offline machine fails at once instead of retrying."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _torch_dtype(dtype: str, path: Path | str):
    """'auto': the dtype the checkpoint was saved in, except bf16/fp16 become float32 where this
    machine has no fast kernels for them (a CPU without native bf16, or half precision on CPU)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    config = json.loads((Path(path) / "config.json").read_text())
    saved = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "float32"), torch.float32)
    if saved == torch.bfloat16:
        fast = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else _cpu_has_bf16()
        return saved if fast else torch.float32
    if saved == torch.float16 and not torch.cuda.is_available():
        return torch.float32
    return saved


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _load_dir(path: Path | str, torch_dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise PolicyLoadError(f"could not load a causal LM from {str(path)!r}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise PolicyLoadError(f"{str(path)!r} has no fast tokenizer (tokenizer.json): re-save it with a transformers fast tokenizer")
    if tokenizer.eos_token_id is None:
        raise PolicyLoadError(f"the tokenizer in {str(path)!r} defines no eos token: set eos_token in tokenizer_config.json")
    if tokenizer.pad_token_id is None:  # generation pads; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    gen = lm.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    if gen.eos_token_id is None:
        gen.eos_token_id = tokenizer.eos_token_id
    return lm, tokenizer


ADAPTER_BASE_FILE = "adapter_base.json"  # in a LoRA trial's adapter/: {"weights": what the adapter sits on}


def _is_adapter(weights: Path) -> bool:
    if not weights.is_dir():
        raise PolicyLoadError(f"the parent's weights {str(weights)!r} do not exist: the parent trial saved none")
    return (weights / "adapter_config.json").is_file()


def _adapter_base(weights: Path) -> str:
    """The saved weights a LoRA adapter was trained on ("" = the model itself)."""
    file = weights / ADAPTER_BASE_FILE
    return str(json.loads(file.read_text()).get("weights") or "") if file.is_file() else ""


def _adapter_chain(weights: Path) -> tuple[list[Path], Path | None]:
    """The adapters `weights` stands on, root first and `weights` last (empty for full weights), and
    the full weights the chain starts from (None: the model itself)."""
    chain: list[Path] = []
    while _is_adapter(weights):
        chain.append(weights)
        below = _adapter_base(weights)
        if not below:
            return chain[::-1], None
        weights = Path(below)
    return chain[::-1], weights


def _stacks(lm, weights: Path) -> bool:
    """A LoRA child of a LoRA chain on a half-precision base keeps that base (merging would make it
    fp32, about 2x slower on a bf16 CPU, or round the update away): the ancestors' adapters are
    stacked on it, frozen, in fp32, and a new adapter trains on top."""
    import torch

    chain, root = _adapter_chain(weights)
    return bool(chain) and root is None and next(lm.parameters()).dtype in (torch.bfloat16, torch.float16)


def _stacked_lora(lm, weights: Path, resume: bool, rank: int, alpha: int, dropout: float, target_modules,
                  seed: int):
    """`lm` with every adapter of the chain active: the ancestors frozen, the trainable one named
    "default" (the parent's own adapter when `resume`, else a new one seeded by `seed`)."""
    import torch
    from peft import LoraConfig, PeftModel

    chain, _ = _adapter_chain(weights)
    frozen = chain[:-1] if resume else chain
    names = [f"ancestor{i}" for i in range(len(frozen))]
    model = PeftModel.from_pretrained(lm, frozen[0], adapter_name=names[0]) if frozen else None
    for name, path in zip(names[1:], frozen[1:], strict=True):
        model.load_adapter(path, adapter_name=name)
    if resume:
        if model is None:
            model = PeftModel.from_pretrained(lm, weights, is_trainable=True)
        else:
            model.load_adapter(weights, adapter_name="default", is_trainable=True)
    else:
        torch.manual_seed(seed)
        model.add_adapter("default", LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                                target_modules=target_modules, task_type="CAUSAL_LM"))
    model.base_model.set_adapter(names + ["default"])
    for name, param in model.named_parameters():
        param.requires_grad_(".default." in name)
    return model


def _load_below(lm, weights: Path):
    """The model a saved adapter was trained on: `lm` itself, or its own parent's policy."""
    below = _adapter_base(weights)
    return _load_parent(lm, Path(below)) if below else lm


def _load_parent(lm, weights: Path):
    """The base model `lm` with a parent trial's saved policy in it, in fp32: full weights as saved;
    an adapter merged into what it was trained on (recursively: a grandparent's policy first).
    The merge runs in fp32 because a bf16 merge rounds most of a small update away."""
    from transformers import AutoModelForCausalLM

    if _is_adapter(weights):
        from peft import PeftModel

        return PeftModel.from_pretrained(_load_below(lm, weights).float(), weights).merge_and_unload()
    try:
        return AutoModelForCausalLM.from_pretrained(weights, dtype="float32")
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f"could not load the parent's weights from {str(weights)!r}: {exc}") from exc


def _wrap_lora(lm, rank: int, alpha: int, dropout: float, target_modules, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # adapter init (A is random) is then reproducible per trial seed
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(lm, config)
    except ValueError as exc:
        raise PolicyLoadError(f"LoRA target_modules={target_modules!r} do not fit this model ({exc}); use 'all-linear'") from exc


def resolve_device(name: str = "auto") -> Any:
    """The torch device a trial runs on: "auto" is the first CUDA GPU when torch sees one, else CPU.

    Asking for "cuda" where torch sees no GPU is an error that says what to do, not a silent CPU run.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PolicyLoadError(f"device {name!r}: torch sees no CUDA GPU here (torch {torch.__version__}); "
                                  "use \"auto\" or \"cpu\", or install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PolicyLoadError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
    return device
