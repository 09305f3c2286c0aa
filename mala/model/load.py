"""A trained model from its file: strict loading with one-line errors, the memory's size made room for."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from mala.checkpoint import load_checkpoint, model_file
from mala.config import MalaConfig, config_from_dict
from mala.errors import CheckpointError
from mala.model.mala import MALA


def _numbers_in_order(key: str) -> list[str | int]:
    """Sort key that puts blocks.2 before blocks.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape))


def first_keys(keys: list[str], shown: int = 6) -> str:
    """The first keys and how many more there are, for one-line messages."""
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def describe_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """'missing: ...; unexpected: ...; wrong shape: ...' (the first keys of each and how many more), None if all fit."""
    missing = sorted(set(expected) - set(given), key=_numbers_in_order)
    unexpected = sorted(set(given) - set(expected), key=_numbers_in_order)
    wrong = [f"{k} {_shape(given[k])} (model {_shape(expected[k])})"
             for k in sorted(set(expected) & set(given), key=_numbers_in_order) if expected[k].shape != given[k].shape]
    details = [f"{label}: {first_keys(keys)}"
               for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "; ".join(details) or None


def load_module_state(module: torch.nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load with a one-line error listing what does not match."""
    problems = describe_mismatch(module.state_dict(), state)
    if problems:
        raise CheckpointError(f"{where}: weights do not match the model ({problems})")
    module.load_state_dict(state)


def load_model_state(model: MALA, state: dict[str, torch.Tensor], where: Path) -> None:
    """`load_module_state` for a MALA, after making room for the normal-feature memory the state holds."""
    model.prepare_to_load(state)
    load_module_state(model, state, where)


def load_trained_model(path: Path, memory_search: str | None = None) -> tuple[MALA, MalaConfig, dict[str, Any]]:
    """A trained model (a run's `model.safetensors`, or its training checkpoint) in eval mode, with config and data
    info; `memory_search` ("exact" or "int8") replaces the file's `model.memory_search` (None: keep it)."""
    path = model_file(path)
    state = load_checkpoint(path)
    if "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: a mala checkpoint without model weights or config")
    cfg = config_from_dict(state["config"], str(path))
    if memory_search is not None:
        cfg.model = dataclasses.replace(cfg.model, memory_search=memory_search)
    model = MALA(cfg.model)
    load_model_state(model, state["model"], path)
    return model.eval(), cfg, state.get("data", {})
