"""Checkpoints as single safetensors files (no pickle): tensors in the body, JSON state in the header metadata.

Reading and writing only: what the state means (a model, a run to resume) is read by `mala.model.load` and the
trainer.

Nested state (optimizer state dicts, run progress) is split into a JSON skeleton and named tensors, so
one file holds everything and one `os.replace` makes writing it atomic: a kill leaves the old file or the new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from mala.errors import CheckpointError

FORMAT = "mala-checkpoint-1"
_TENSOR = "__tensor__"


def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list by a reference, collecting the tensors under unique names."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {str(k): split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `split_tensors`. Dict keys that were integers (optimizer state ids) come back as integers."""
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            return tensors[obj[_TENSOR]]
        return {(int(k) if k.isdigit() else k): join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (nested dicts of tensors and JSON values) atomically to `path`."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = split_tensors(state, "s", tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temporary), metadata={"format": FORMAT, "state": json.dumps(skeleton)})
    os.replace(temporary, path)


def _header_metadata(path: Path) -> dict[str, str]:
    """The string metadata of any safetensors file (reads the header only)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint without its tensors (cheap: reads the header only)."""
    metadata = _header_metadata(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a mala checkpoint (no '{FORMAT}' header)")
    return json.loads(metadata["state"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    skeleton = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: checkpoint is damaged ({exc})") from None
    try:
        return join_tensors(skeleton, tensors)
    except KeyError as exc:
        raise CheckpointError(f"{path}: checkpoint is damaged (tensor {exc} missing)") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights by name: a mala checkpoint's model part, or every tensor of another safetensors file (timm, hub)."""
    if _header_metadata(path).get("format") == FORMAT:
        state = load_checkpoint(path)
        if "model" not in state:
            raise CheckpointError(f"{path}: a mala checkpoint without model weights")
        return state["model"]
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: safetensors file is damaged ({exc})") from None


def model_file(path: Path) -> Path:
    """A run folder stands for its final model file."""
    path = Path(path)
    return path / "model.safetensors" if path.is_dir() else path
