"""The two training stages on real images: stage 1 learns, stage 2 trains decoder + TBM only."""

import dataclasses

import numpy as np
import pytest
import torch
from lightning_fabric import Fabric

from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots
from mala.errors import CheckpointError, ConfigError
from mala.model import MALA
from mala.synth import AnomalySynthesizer
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2
from tests.conftest import shared_data
from tests.model.test_hybrid import hybrid_config


def _cache(count: int, size: int) -> ImageCache:
    samples = [s for s in scan_roots([shared_data("magnetic_tile")]) if s.split == "train"][:count]
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


def _decay_by_name(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    names = {id(p): name for name, p in module.named_parameters()}
    return {names[id(p)]: group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def _empty_cache(size: int) -> ImageCache:
    return ImageCache([], np.empty((0, size, size, 3), dtype=np.uint8), {})


@pytest.mark.parametrize("stage", [1, 2])
def test_weight_decay_spares_biases_norms_and_tokens_as_in_mae(small_config, stage):
    cfg = small_config
    cfg.stage1.weight_decay, cfg.stage2.weight_decay = 0.05, 0.01
    model, fabric = MALA(cfg.model), Fabric(accelerator="cpu", devices=1)
    if stage == 1:
        runner = Stage1(cfg, model, fabric, _empty_cache(64))
    else:
        runner = Stage2(cfg, model, fabric, _empty_cache(64), synthesize=None, foregrounds={})
    configured = 0.05 if stage == 1 else 0.01
    decay = _decay_by_name(model, runner.optimizer)
    assert set(decay) == {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(rate == 0 for name, rate in decay.items() if name.endswith(".bias") or "norm" in name)
    assert decay["decoder_norm.weight"] == decay["decoder_blocks.0.norm1.weight"] == 0
    assert decay["decoder_blocks.0.attn.qkv.weight"] == decay["decoder_embed.weight"] == configured
    if stage == 1:
        assert decay["cls_token"] == decay["mask_token"] == 0
        assert decay["patch_embed.proj.weight"] == decay["blocks.0.mlp.fc1.weight"] == configured
        plpm = runner.discriminator.module
        assert _decay_by_name(plpm, runner.disc_optimizer) == {
            name: 0.0 if p.ndim == 1 else configured for name, p in plpm.named_parameters()}
    else:
        assert decay["tbm.lp2.weight"] == configured and "tbm.lp2.bias" in decay
        assert "cls_token" not in decay and "blocks.0.mlp.fc1.weight" not in decay  # frozen: not optimised


def test_resuming_an_optimizer_of_another_grouping_is_refused_in_words(small_config):
    cfg = small_config
    stage = Stage2(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _empty_cache(64), None, {})
    single_group = torch.optim.AdamW([p for p in stage.model.parameters() if p.requires_grad]).state_dict()
    with pytest.raises(CheckpointError, match="1 parameter group"):
        stage.load_state_dict({"optimizer": single_group})


@pytest.mark.parametrize("hybrid", [False, True])
def test_stage2_keeps_the_frozen_encoder_in_eval_mode_through_train_calls(small_config, hybrid):
    cfg = small_config
    if hybrid:
        cfg.model = hybrid_config()
    model = MALA(cfg.model)
    stage = Stage2(cfg, model, Fabric(accelerator="cpu", devices=1), _empty_cache(64), None, {})
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model.encode_full(images)
    stage.model.train()  # the Fabric wrapper, as a training loop would call it
    frozen = model.encoder_modules() + ([model.feature_tokens] if hybrid else [])
    assert not any(m.training for module in frozen for m in module.modules())
    assert model.training and model.decoder_blocks[0].training and model.tbm.training
    stage.step((images, (torch.rand(2, 64, 64) > 0.8).float()), 0.0)
    with torch.no_grad():
        after = model.encode_full(images)
    for was, now in zip(before, after):
        assert (was is None and now is None) or torch.equal(was, now)
    model.set_stage(1)  # stage 1 trains the encoder: train mode again
    assert model.train().blocks[0].training


def test_the_generator_step_leaves_the_plpm_without_gradients_but_learns_from_it(small_config):
    cfg = small_config
    cfg.stage1.l1_weight, cfg.stage1.ssim_weight, cfg.stage1.adv_weight = 0.0, 0.0, 1.0  # the adversarial term alone
    torch.manual_seed(0)
    stage = Stage1(cfg, MALA(cfg.model), Fabric(accelerator="cpu", devices=1), _cache(4, 64))
    after_each_step = []
    optimize = stage.optimize

    def recording_optimize(module, optimizer, batches, loss_of):
        parts = optimize(module, optimizer, batches, loss_of)
        after_each_step.append({"plpm": [p.grad for p in stage.discriminator.parameters()],
                                "generator": [p.grad for p in stage.model.parameters() if p.requires_grad]})
        return parts

    stage.optimize = recording_optimize
    stage.step(torch.rand(4, 3, 64, 64), 0.5)
    generator_step, discriminator_step = after_each_step
    assert all(grad is None or not grad.any() for grad in generator_step["plpm"])
    assert any(grad is not None and grad.abs().sum() > 0 for grad in generator_step["generator"])
    assert all(grad is not None for grad in discriminator_step["plpm"])
    assert all(p.requires_grad for p in stage.discriminator.parameters())  # trainable again for the next step
