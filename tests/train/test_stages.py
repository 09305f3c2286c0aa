"""The two training stages on real images: stage 1 learns, stage 2 trains decoder + TBM only."""

import dataclasses

import numpy as np
import pytest
import torch
from lightning_fabric import Fabric

from mala.data.dataset import ImageCache
from mala.data.mvtec import scan_mvtec
from mala.errors import ConfigError
from mala.model import MALA
from mala.synth import AnomalySynthesizer
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2
from tests.conftest import shared_data


def _cache(count: int, size: int) -> ImageCache:
    samples = [s for s in scan_mvtec(shared_data("magnetic_tile")) if s.split == "train"][:count]
    return ImageCache.build(samples, size)


def test_stage1_loss_falls_on_magnetic_tile(small_config):
    torch.manual_seed(0)
    cfg = small_config
    cfg.stage1.images_per_category, cfg.stage1.batch_size = 64, 16
    cfg.stage1.base_lr, cfg.stage1.warmup_epochs, cfg.stage1.epochs = 4e-3 * 256 / 16, 1, 12
    stage = Stage1(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _cache(64, 64))
    losses = []
    for epoch in range(cfg.stage1.epochs):
        for step, images in enumerate(stage.loader(epoch)):
            losses.append(stage.step(images, epoch + step / stage.steps_per_epoch)["loss"])
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, (first, last)


def test_stage2_freezes_encoder_and_trains_decoder_and_tbm(small_config):
    cfg = small_config
    cfg.stage2.images_per_category, cfg.stage2.anomalous_per_category, cfg.stage2.batch_size = 8, 6, 4
    model = MALA(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    synth = AnomalySynthesizer(cfg.synth, cfg.model.image_size)
    stage = Stage2(cfg, model, Fabric(accelerator="cpu", devices=1), _cache(8, 64), synth, {})
    for batch in stage.loader(0):
        stage.step(batch, 0.0)
    after = model.state_dict()
    encoder = [k for k in after if k.startswith(("blocks.", "patch_embed", "norm.", "cls_token"))]
    trained = [k for k in after if k.startswith(("decoder_blocks.", "decoder_embed", "decoder_norm", "tbm."))]
    assert encoder and trained
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert all(not torch.equal(before[k], after[k]) for k in trained)
    # not used by the map, so untouched too
    assert torch.equal(before["mask_token"], after["mask_token"])
    assert torch.equal(before["decoder_pred.weight"], after["decoder_pred.weight"])


def _stage1_losses(cfg, epochs: int) -> list[dict[str, float]]:
    stage = Stage1(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _cache(32, cfg.model.image_size))
    return [stage.step(images, epoch + step / stage.steps_per_epoch)
            for epoch in range(epochs) for step, images in enumerate(stage.loader(epoch))]


def test_stage1_feature_target_learns_the_masked_backbone_features(small_config):
    torch.manual_seed(0)
    cfg = small_config
    cfg.model = dataclasses.replace(cfg.model, patch_size=16, backbone="efficientnet_lite0")
    cfg.stage1.target, cfg.stage1.images_per_category, cfg.stage1.batch_size = "features", 32, 8
    cfg.stage1.base_lr, cfg.stage1.warmup_epochs, cfg.stage1.epochs = 2e-3 * 256 / 8, 1, 6
    parts = _stage1_losses(cfg, cfg.stage1.epochs)
    assert all(set(p) == {"loss", "feature", "lr"} for p in parts)  # no pixel terms, no PLPM
    first, last = np.mean([p["feature"] for p in parts[:3]]), np.mean([p["feature"] for p in parts[-3:]])
    assert last < 0.8 * first, (first, last)


def test_stage1_both_targets_add_the_feature_term_to_eq3(small_config):
    cfg = small_config
    cfg.model = dataclasses.replace(cfg.model, patch_size=16, backbone="efficientnet_lite0")
    cfg.stage1.target, cfg.stage1.images_per_category, cfg.stage1.batch_size = "both", 8, 8
    (parts,) = _stage1_losses(cfg, 1)
    assert {"l1", "ssim", "adv", "feature", "disc"} <= set(parts)


def test_stage1_feature_target_needs_a_backbone(small_config):
    small_config.stage1.target = "features"
    with pytest.raises(ConfigError, match="needs a backbone"):
        Stage1(small_config, MALA(small_config.model), Fabric(accelerator="cpu", devices=1), _cache(4, 64))
