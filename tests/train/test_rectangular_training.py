"""Training at a rectangular size: stage 1 learns, and a whole run (train, test, reload) keeps height x width."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from lightning_fabric import Fabric

from mala import engine
from mala.model.load import load_trained_model
from mala.config import load_config
from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots
from mala.model import MALA
from mala.train.stage1 import Stage1
from tests.conftest import shared_data

SHAPE = (32, 64)  # height, width: half the pixels of the square tests, twice as wide as high


def _training_images(count: int) -> ImageCache:
    samples = [s for s in scan_roots([shared_data("magnetic_tile")]) if s.split == "train"][:count]
    return ImageCache.build(samples, SHAPE)


def test_stage1_loss_falls_at_a_rectangular_size(small_config):
    torch.manual_seed(0)
    cfg = small_config
    cfg.model = dataclasses.replace(cfg.model, image_size=list(SHAPE))
    cfg.stage1.images_per_category, cfg.stage1.batch_size = 64, 16
    cfg.stage1.base_lr, cfg.stage1.warmup_epochs, cfg.stage1.epochs = 4e-3 * 256 / 16, 1, 12
    stage = Stage1(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _training_images(64))
    losses = []
    for epoch in range(cfg.stage1.epochs):
        for step, images in enumerate(stage.loader(epoch)):
            assert images.shape[-2:] == SHAPE
            losses.append(stage.step(images, epoch + step / stage.steps_per_epoch)["loss"])
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, (first, last)


def test_a_whole_run_keeps_height_and_width(small_config, tmp_path):
    cfg = small_config
    cfg.model = dataclasses.replace(cfg.model, image_size=list(SHAPE))
    cfg.stage1.epochs, cfg.stage1.warmup_epochs, cfg.stage1.images_per_category, cfg.stage1.batch_size = 1, 1, 8, 4
    cfg.stage2.epochs, cfg.stage2.images_per_category, cfg.stage2.anomalous_per_category = 1, 8, 6
    cfg.stage2.batch_size, cfg.run.score_kernel = 4, 5
    root = shared_data("metal_plate")
    model_file = engine.train(cfg, [root], tmp_path / "run")
    assert load_config(str(tmp_path / "run" / "config.yaml")).model.image_shape == SHAPE
    model, saved, _ = load_trained_model(model_file)
    assert saved.model.image_size == list(SHAPE) and model.grid == (4, 8)
    results = engine.test(model_file, [root], out=tmp_path / "report", figures_per_category=1)
    assert 0 <= results["metal_plate"]["pixel_auroc"] <= 1
