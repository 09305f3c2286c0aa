"""Models for the deployment tests: a small MALA with fixed random weights, saved as a checkpoint and as ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mala.checkpoint import save_checkpoint
from mala.config import MalaConfig, ModelConfig
from mala.deploy.graph import export_onnx
from mala.model import MALA


def small_model_config() -> MalaConfig:
    cfg = MalaConfig(model=ModelConfig(image_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                                       decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, plpm_width=8))
    cfg.run.score_kernel = 5
    return cfg


def save_random_model(path: Path, categories: list[str], seed: int = 0) -> Path:
    """A model file as `mala train` writes it, with random weights (the deployment path does not care)."""
    cfg = small_model_config()
    torch.manual_seed(seed)
    state = {"kind": "model", "config": cfg.to_dict(), "data": {"categories": categories, "object_categories": []},
             "model": MALA(cfg.model).state_dict()}
    save_checkpoint(path, state)
    return path


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_random_model(tmp_path / "run" / "model.safetensors", ["metal_plate", "magnetic_tile"])


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    source = save_random_model(folder / "model.safetensors", ["metal_plate", "magnetic_tile"])
    return export_onnx(source, folder / "model.onnx")
