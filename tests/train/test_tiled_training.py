"""Training on tiles: stage 1 learns on random tiles, stage 2 synthesises on tiles inside the cropped foreground,
the hybrid's memory holds the grid tiles' features, and a whole run is tested at the stitched and full sizes."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from lightning_fabric import Fabric

from mala import engine
from mala.model.load import load_trained_model
from mala.config import TilingConfig, load_config
from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots
from mala.model import MALA
from mala.synth import AnomalySynthesizer
from mala.train.fill_memory import normal_feature_tokens
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2
from tests.conftest import shared_data
from tests.data.layouts import mvtec_category
from tests.model.test_hybrid import hybrid_config

SOURCE = (96, 128)  # each image resized to this, then cut into the small config's 64 px tiles


def _tiled(cfg, stride: int = 32):
    return dataclasses.replace(cfg, tiling=TilingConfig(source_size=list(SOURCE), stride=stride))


def _training_images(count: int, shape=SOURCE) -> ImageCache:
    samples = [s for s in scan_roots([shared_data("magnetic_tile")]) if s.split == "train"][:count]
    return ImageCache.build(samples, shape)


def test_stage1_learns_on_random_tiles(small_config):
    torch.manual_seed(0)
    small = dataclasses.replace(small_config, model=dataclasses.replace(small_config.model, image_size=32))
    cfg = dataclasses.replace(small, tiling=TilingConfig(source_size=[48, 64], stride=16))
    cfg.stage1.images_per_category, cfg.stage1.batch_size = 64, 16
    cfg.stage1.base_lr, cfg.stage1.warmup_epochs, cfg.stage1.epochs = 4e-3 * 256 / 16, 1, 12
    stage = Stage1(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _training_images(64, (48, 64)))
    corners = stage.epoch_dataset(0).crop.corners
    assert len({tuple(corner) for corner in corners.tolist()}) > 32  # anywhere, not only on the grid
    losses = []
    for epoch in range(cfg.stage1.epochs):
        for step, images in enumerate(stage.loader(epoch)):
            assert images.shape[-2:] == (32, 32)
            losses.append(stage.step(images, epoch + step / stage.steps_per_epoch)["loss"])
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, (first, last)


def test_stage2_synthesises_on_tiles_inside_their_share_of_the_foreground(small_config):
    cfg = _tiled(small_config)
    cfg.synth.local_prob = 1.0
    cfg.stage2.images_per_category, cfg.stage2.anomalous_per_category = 16, 16
    cache = _training_images(4)
    foreground = np.zeros(SOURCE, dtype=bool)
    foreground[:, :64] = True  # the left half: tiles reaching into it get anomalies there only
    synthesize = AnomalySynthesizer(cfg.synth, cfg.model.image_shape)
    stage = Stage2(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), cache, synthesize,
                   {index: foreground for index in range(4)})
    dataset = stage.epoch_dataset(0)
    for item in range(len(dataset)):
        image, mask = dataset[item]
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        (y, x), tile_foreground = dataset.crop.corners[item], dataset.crop(item, foreground)
        if tile_foreground.any():
            assert not mask.numpy()[~tile_foreground].any(), (y, x)
        unchanged = mask.numpy() == 0
        expected = cache.images[dataset.indices[item], y:y + 64, x:x + 64].astype(np.float32) / 255
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy()[unchanged], expected[unchanged], atol=1e-6)


def test_the_memory_holds_the_grid_tiles_features():
    cfg = hybrid_config(image_size=64)
    model = MALA(cfg).eval()
    cache = _training_images(3)
    grid = _tiled(dataclasses.replace(load_config("tiny"), model=cfg), stride=64).tile_grid
    assert grid.count == 4  # rows 0, 32; columns 0, 64
    [tokens] = normal_feature_tokens(model, cache, np.arange(3), grid)  # no score memory: one memory's tokens
    assert tokens.shape == (3, 4 * 16, model.feature_tokens.channels)
    last_tile = torch.from_numpy(cache.images[2, 32:, 64:]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        torch.testing.assert_close(tokens[2, 48:], model.feature_tokens(last_tile)[0])


def test_a_whole_tiled_run_is_tested_at_the_stitched_and_the_full_size(small_config, tmp_path):
    cfg = _tiled(small_config, stride=48)
    cfg.stage1.epochs, cfg.stage1.warmup_epochs, cfg.stage1.images_per_category, cfg.stage1.batch_size = 1, 1, 8, 4
    cfg.stage2.epochs, cfg.stage2.images_per_category, cfg.stage2.anomalous_per_category = 1, 8, 6
    cfg.stage2.batch_size, cfg.run.score_kernel = 4, 5
    root = tmp_path / "data"
    mvtec_category(root, "plate", normals=4, defects=2)
    model_file = engine.train(cfg, [root], tmp_path / "run")
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert saved.tiling == TilingConfig(source_size=list(SOURCE), stride=48) and saved.model.image_shape == (64, 64)
    model, loaded, _ = load_trained_model(model_file)
    assert loaded.tile_grid.count == 6 and model.image_shape == (64, 64)
    for full_resolution in (False, True):
        results = engine.test(model_file, [root], out=tmp_path / f"report{full_resolution}", figures_per_category=1,
                              full_resolution=full_resolution)
        assert 0 <= results["plate"]["pixel_auroc"] <= 1
