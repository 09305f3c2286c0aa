"""Models for the deployment tests: a small MALA with fixed random weights, saved as a checkpoint and as ONNX."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mala.checkpoint import save_checkpoint
from mala.config import MalaConfig, ModelConfig, TilingConfig
from mala.data.images import read_rgb
from mala.deploy.graph import export_onnx
from mala.model import MALA
from mala.model.memory import MemorySection, image_features
from tests.conftest import shared_data


def small_model_config(hybrid: bool = False, image_size: int | list[int] = 64,
                       tiling: TilingConfig | None = None, **memory_keys) -> MalaConfig:
    """The pixel ViT, or (`hybrid`) the hybrid encoder on lite0 with a normal-feature memory in the map (its
    `memory_keys` of `ModelConfig`); with `tiling`, `image_size` is the tile."""
    hybrid_keys = {"patch_size": 16, "backbone": "efficientnet_lite0", "memory_weight": 0.5, **memory_keys}
    hybrid_keys = hybrid_keys if hybrid else {}
    cfg = MalaConfig(model=ModelConfig(**{**dict(image_size=image_size, patch_size=8, embed_dim=64, depth=2,
                                                  num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                                                  decoder_num_heads=2, plpm_width=8), **hybrid_keys}),
                     tiling=tiling or TilingConfig())
    cfg.run.score_kernel = 5
    return cfg


def save_random_model(path: Path, categories: list[str], seed: int = 0, hybrid: bool = False,
                      image_size: int | list[int] = 64, tiling: TilingConfig | None = None, **memory_keys) -> Path:
    """A model file as `mala train` writes it, with random weights (the deployment path does not care)."""
    cfg = small_model_config(hybrid, image_size, tiling, **memory_keys)
    torch.manual_seed(seed)
    model = MALA(cfg.model)
    if hybrid:
        model.memory.fill_sections(real_sections(model, categories))
        if model.score_memory is not None:  # its own tokens (layer-normed, on its grid), as `fill_memory` fills it
            model.score_memory.fill_sections(real_sections(model, categories, model.score_memory_features))
        if model.global_map is not None:  # "trained": a scale per section, as `train_global_map` sets them
            model.global_map.scales = 0.5 + torch.rand(len(categories))
    state = {"kind": "model", "config": cfg.to_dict(), "data": {"categories": categories, "object_categories": []},
             "model": model.state_dict()}
    save_checkpoint(path, state)
    return path


SECTION_SOURCES = ["metal_plate", "magnetic_tile"]  # real sets whose images fill sections 0, 1, 2, ... in turn
SECTION_IMAGES = 2


def real_sections(model: MALA, categories: list[str],
                  features: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[MemorySection]:
    """A memory section per category from the tokens (`features`: the memory's) of `SECTION_IMAGES` real training
    images (at the model's input size) of `SECTION_SOURCES` in turn, each with its own scale, so that routing has real
    image features to tell them apart."""
    features = features or model.memory_features
    sections = []
    for place, _ in enumerate(categories):
        source = SECTION_SOURCES[place % len(SECTION_SOURCES)]
        files = sorted(path for path in shared_data(source, "train", "good").iterdir())[:SECTION_IMAGES]
        images = torch.from_numpy(np.stack([read_rgb(path, model.image_shape) for path in files]))
        with torch.no_grad():
            tokens = features(images.permute(0, 3, 1, 2).float() / 255)
        sections.append(MemorySection(tokens.flatten(0, 1), typical_scale(tokens, place), image_features(tokens)))
    return sections


def typical_scale(tokens: torch.Tensor, place: int) -> float:
    """A distance scale of section `place` in the units of `tokens`: 2 + place for layer-normed ones (norm sqrt(C)),
    as much more for raw ones as their norm is, so that no map saturates."""
    return (2.0 + place) * float(tokens.norm(dim=-1).mean()) / tokens.shape[-1] ** 0.5


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_random_model(tmp_path / "run" / "model.safetensors", ["metal_plate", "magnetic_tile"])


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    source = save_random_model(folder / "model.safetensors", ["metal_plate", "magnetic_tile"])
    return export_onnx(source, folder / "model.onnx")
