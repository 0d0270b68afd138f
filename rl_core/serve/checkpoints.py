"""Saved weights: `tinker://<model_id>/weights/<name>` (adapter + optimizer state, to resume
training) and `tinker://<model_id>/sampler_weights/<name>` (adapter only, to sample from), stored under
the server's state directory as `<model_id>/<kind>/<name>/{adapter.safetensors, optimizer.pt, meta.json}`.

Writes go to a temporary directory renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rl_core.serve.host import LoraSpec, Snapshot
from rl_core.serve.wire import NotFound, UserError

KINDS = ("weights", "sampler_weights")
_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


@dataclass(frozen=True)
class TinkerPath:
    model_id: str
    kind: str  # "weights" | "sampler_weights"
    name: str

    def __str__(self) -> str:
        return f"tinker://{self.model_id}/{self.kind}/{self.name}"

    @staticmethod
    def parse(path: str) -> TinkerPath:
        parts = path.removeprefix("tinker://").split("/") if path.startswith("tinker://") else []
        if len(parts) != 3 or parts[1] not in KINDS or not _NAME.match(parts[2]):
            raise UserError(f"{path!r} is not a checkpoint path of this server "
                            "(tinker://<model_id>/weights/<name> or tinker://<model_id>/sampler_weights/<name>)")
        return TinkerPath(*parts)


@dataclass
class Checkpoint:
    base_model: str
    spec: LoraSpec
    tensors: Snapshot
    optimizer: dict | None


class CheckpointStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, path: TinkerPath) -> Path:
        return self.root / path.model_id.replace(":", "_") / path.kind / path.name

    def save(self, path: TinkerPath, ckpt: Checkpoint, *, overwrite: bool = True) -> None:
        target = self._dir(path)
        if target.exists() and not overwrite:
            raise UserError(f"{path} already exists: pass overwrite=True or choose another name")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{path.name}."))
        save_file({k: v.detach().cpu().contiguous() for k, v in ckpt.tensors.items()}, tmp / "adapter.safetensors")
        if ckpt.optimizer is not None:
            torch.save(ckpt.optimizer, tmp / "optimizer.pt")
        (tmp / "meta.json").write_text(json.dumps({"base_model": ckpt.base_model, "lora": ckpt.spec.to_dict()}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)

    def meta(self, path: TinkerPath) -> tuple[str, LoraSpec]:
        meta_file = self._dir(path) / "meta.json"
        if not meta_file.is_file():
            raise NotFound(f"no checkpoint at {path}")
        meta = json.loads(meta_file.read_text())
        return meta["base_model"], LoraSpec(**meta["lora"])

    def load(self, path: TinkerPath, *, optimizer: bool) -> Checkpoint:
        base, spec = self.meta(path)
        folder = self._dir(path)
        opt = None
        if optimizer:
            if not (folder / "optimizer.pt").is_file():
                raise UserError(f"{path} holds no optimizer state (sampler weights do not): load it without the optimizer")
            opt = torch.load(folder / "optimizer.pt", weights_only=True)
        return Checkpoint(base_model=base, spec=spec, tensors=load_file(folder / "adapter.safetensors"), optimizer=opt)
