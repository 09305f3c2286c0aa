"""Shared fixtures: the real data beside the checkout (tests fail, never skip, when it is missing)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mala.config import MalaConfig, ModelConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(2)


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"test data missing: {path} (the real datasets must lie in ../shared/data beside the checkout)"
        )
    return path


@pytest.fixture
def small_config() -> MalaConfig:
    """A model small enough for unit tests: 64 px, 8 px patches, 2+1 blocks."""
    cfg = MalaConfig(
        model=ModelConfig(image_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                          decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, plpm_width=8)
    )
    cfg.run.accelerator = "cpu"
    return cfg
