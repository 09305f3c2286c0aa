"""The two training stages on real images: stage 1 learns, stage 2 trains decoder + TBM only."""

import numpy as np
import torch
from lightning_fabric import Fabric

from mala.data.dataset import ImageCache
from mala.data.mvtec import scan_mvtec
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
