"""Training the global map: the autoencoder learns the normal images (its loss falls), each category gets its own
error scale, an image whose parts are in the wrong place lights up, and the model file keeps all of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mala.checkpoint import save_checkpoint
from mala.config import GlobalMapConfig, MalaConfig
from mala.model import MALA
from mala.model.load import load_trained_model
from mala.train.fill_memory import fill_memory
from mala.train.fit_global_map import train_global_map
from tests.model.test_hybrid import hybrid_config, two_category_cache

MODEL = hybrid_config(memory_weight=0.5, memory_stride=8, memory_norm="none", memory_pool=1, score_memory=True,
                      score_memory_stride=16, global_map=True)  # as `tiny`: the score from a memory of its own


@pytest.fixture(scope="module")
def trained() -> tuple[MALA, list[float]]:
    """The global map of a hybrid trained on two categories: a ramp and the ramp mirrored."""
    model = MALA(MODEL).eval()
    cache = two_category_cache()
    losses = train_global_map(model, cache, GlobalMapConfig(steps=200, batch_size=8), seed=0)
    fill_memory(model, cache, seed=0)
    return model, losses


def ramp_and_swapped() -> torch.Tensor:
    """A new noisy ramp of category 0, and the same with its halves swapped: every part normal, in the wrong place."""
    ramp = two_category_cache().images[0].astype(int)
    normal = np.clip(ramp + np.random.default_rng(5).integers(-8, 9, ramp.shape), 0, 255)
    swapped = np.concatenate([normal[:, 32:], normal[:, :32]], axis=1)
    return torch.from_numpy(np.stack([normal, swapped])).permute(0, 3, 1, 2).float() / 255


def test_the_autoencoder_learns_the_normal_images_and_scales_each_category(trained):
    model, losses = trained
    assert len(losses) == 2 and losses[-1] < 0.7 * losses[0]
    net = model.global_map
    assert net.trained and net.scales.shape == (2,) and (net.scales > 0).all()
    assert not any(p.requires_grad for p in net.parameters())  # trained once, then fixed like the memory
    assert not net.training


def test_parts_in_the_wrong_place_raise_the_global_map(trained):
    model, _ = trained
    with torch.no_grad():
        parts = model.map_parts(ramp_and_swapped(), 0, every_part=True)
    errors = parts.global_distance.mean(dim=(1, 2, 3))
    assert errors[0] < 1.0  # in units of the category's 99 % training quantile: a normal image stays below
    assert errors[1] > 1.5 * errors[0]


def test_the_global_share_moves_the_anomaly_map_only(trained):
    model, _ = trained
    with torch.no_grad():
        parts = model.map_parts(ramp_and_swapped(), 0, every_part=True)
        without, shared = model.fused_maps(parts, 0.5, 0.0, 0.0), model.fused_maps(parts, 0.5, 0.0, 0.5)
        model.section_fusion = torch.tensor([[0.5, 0.0, 0.5], [0.5, 0.0, 0.0]])
        torch.testing.assert_close(model.maps(ramp_and_swapped(), 0), shared)
        torch.testing.assert_close(model.maps(ramp_and_swapped(), 1)[:, 1], model.fused_maps(
            model.map_parts(ramp_and_swapped(), 1, every_part=True), 0.5, 0.0, 0.0)[:, 1])
        model.section_fusion = torch.zeros(0, 3)
    assert not torch.allclose(without[:, 0], shared[:, 0])
    torch.testing.assert_close(without[:, 1], shared[:, 1])  # the image score's map does not read it
    assert shared[1, 0].mean() - without[1, 0].mean() > shared[0, 0].mean() - without[0, 0].mean()


def test_a_saved_model_keeps_its_global_map_and_older_files_load_with_share_zero(trained, tmp_path):
    model, _ = trained
    cfg, path, images = MalaConfig(model=MODEL), tmp_path / "model.safetensors", ramp_and_swapped()
    model.section_fusion = torch.tensor([[0.5, 0.0, 0.5], [0.75, 0.33, 0.0]])
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded = load_trained_model(path)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, 0), model.maps(images, 0))
    older = model.state_dict() | {"section_fusion": torch.tensor([[0.5, 0.0], [0.75, 0.33]])}  # before the share
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": older})
    loaded = load_trained_model(path)[0]
    torch.testing.assert_close(loaded.section_fusion, torch.tensor([[0.5, 0.0, 0.0], [0.75, 0.33, 0.0]]))
    model.section_fusion = torch.zeros(0, 3)


def test_images_whose_share_is_zero_skip_the_global_map_with_the_same_maps(trained):
    model, _ = trained
    images = ramp_and_swapped()
    model.section_fusion = torch.tensor([[0.5, 0.0, 0.0], [0.5, 0.0, 0.5]])
    with torch.no_grad():
        skipped, every = model.map_parts(images, 0), model.map_parts(images, 0, every_part=True)
        assert skipped.global_distance is None and every.global_distance is not None
        torch.testing.assert_close(model.fused_maps(skipped, 0.5, 0.0, 0.0), model.fused_maps(every, 0.5, 0.0, 0.0))
        assert model.map_parts(images, torch.tensor([0, 1])).global_distance is not None  # one image reads it
        assert model.map_parts(images, 1).global_distance is not None
    model.section_fusion = torch.zeros(0, 3)


def test_the_channel_statistics_match_torch_on_the_whole_pool_without_copying_it():
    from mala.train.fit_global_map import channel_statistics

    tokens = (3.0 + 2.0 * torch.randn(600, 49, 8, generator=torch.Generator().manual_seed(0))).half()
    mean, std = channel_statistics(tokens, inputs_at_once=64)
    flat = tokens.flatten(0, 1).float()
    torch.testing.assert_close(mean, flat.mean(dim=0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(std, flat.std(dim=0), rtol=1e-5, atol=1e-5)
