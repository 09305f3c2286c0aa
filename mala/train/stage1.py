"""Stage 1: masked reconstruction of normal images with the PLPM discriminator (paper eq. 3)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mala.config import MalaConfig
from mala.data.dataset import ImageCache
from mala.train.epoch_data import NormalImages, draw_per_category, epoch_rng
from mala.errors import ConfigError
from mala.model import MALA, PseudoLabelPredictor
from mala.model.mala import MaskedReconstruction
from mala.train.losses import (LossTerms, adversarial_loss, discriminator_loss, masked_feature_loss,
                               stage1_reconstruction_loss)
from mala.train.runner import StageRunner, adamw, load_optimizer_state


def warmup_cosine_lr(base_lr: float, progress_epochs: float, warmup_epochs: int, total_epochs: int) -> float:
    """MAE's schedule: linear warm-up, then half-cycle cosine decay to 0."""
    if progress_epochs < warmup_epochs:
        return base_lr * progress_epochs / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1)
    return base_lr * 0.5 * (1 + math.cos(math.pi * (progress_epochs - warmup_epochs) / span))


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block the module passes gradients on to its input but takes none into its own parameters."""
    trainable = [parameter for parameter in module.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


class Stage1(StageRunner):
    """One training stage: builds the epoch's data and performs the generator and discriminator steps."""

    stage = 1

    def __init__(self, cfg: MalaConfig, model: MALA, fabric, cache: ImageCache):
        super().__init__(cfg, fabric, cache, cfg.stage1)
        if self.settings.target != "pixels" and not model.hybrid:
            raise ConfigError(f"stage1.target={self.settings.target} needs a backbone (model.backbone); the pixel "
                              f"ViT reconstructs pixels")
        model.set_stage(1)
        if model.hybrid and self.settings.target == "pixels":  # an unused head would stall DDP's gradient sync
            model.decoder_feature_pred.requires_grad_(False)
        self.num_patches = model.num_patches
        optimizer = adamw(model, self.settings.lr, self.settings.weight_decay, betas=self.settings.betas)
        self.model, self.optimizer = fabric.setup(model, optimizer)
        self.model.mark_forward_method("reconstruct")  # so DDP syncs gradients of this non-forward method
        self.discriminator = self.disc_optimizer = None
        if self.settings.use_plpm and self.settings.target != "features":
            plpm = PseudoLabelPredictor(cfg.model.plpm_width)
            # the paper's AdamW settings for both players
            disc_optimizer = adamw(plpm, self.settings.lr, self.settings.weight_decay, betas=self.settings.betas)
            self.discriminator, self.disc_optimizer = fabric.setup(plpm, disc_optimizer)

    def epoch_dataset(self, epoch: int) -> Dataset:
        rng = epoch_rng(self.cfg.run.seed, self.stage, epoch)
        drawn = draw_per_category(self.cache.indices_by_category(), self.settings.images_per_category, rng)
        indices = rng.permutation(np.concatenate(list(drawn.values())))
        return NormalImages(self.cache, indices, self.random_tiles(rng, len(indices)))

    @property
    def base_lr(self) -> float:
        """MAE's rule, lr = base_lr x global batch / 256, with the batch over all devices and accumulated steps."""
        return self.settings.base_lr * self.global_batch_size / 256

    def _set_lr(self, progress_epochs: float) -> float:
        lr = warmup_cosine_lr(self.base_lr, progress_epochs, self.settings.warmup_epochs, self.settings.epochs)
        for optimizer in filter(None, (self.optimizer, self.disc_optimizer)):
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def _mask_noise(self, batch_size: int) -> torch.Tensor:
        """MAE's masking noise for this rank's images: every rank draws it for the whole global batch (the trainer
        seeds each step alike on all ranks) and takes its rows, as `rank_positions` takes its images."""
        world, rank = self.fabric.world_size, self.fabric.global_rank
        return torch.rand(batch_size * world, self.num_patches)[rank::world]

    def accumulated_step(self, batches: Sequence[torch.Tensor], progress_epochs: float) -> dict[str, float]:
        lr = self._set_lr(progress_epochs)
        reconstructions: list[torch.Tensor] = []

        def generator_loss(images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            reconstruction = self.model.reconstruct(images, self.settings.mask_ratio, self._mask_noise(len(images)))
            reconstructions.append(reconstruction.image.detach())
            loss = self.reconstruction_loss(images, reconstruction)
            return loss.total, {"loss": loss.total.item(), **loss.parts}

        def disc_loss(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            images, fake = pair
            loss = discriminator_loss(self.discriminator(images), self.discriminator(fake))
            return loss, {"disc": loss.item()}

        with self._discriminator_frozen():
            parts = self.optimize(self.model, self.optimizer, batches, generator_loss)
        if self.discriminator:  # on the reconstructions from before the generator's update, as before
            parts |= self.optimize(self.discriminator, self.disc_optimizer, list(zip(batches, reconstructions)),
                                   disc_loss)
        return {**parts, "lr": lr}

    def reconstruction_loss(self, images: torch.Tensor, reconstruction: MaskedReconstruction) -> LossTerms:
        """Paper eq. 3 on the pixels, the masked feature loss, or both (`stage1.target`)."""
        total, parts = torch.zeros(()), {}
        if self.settings.target != "features":
            fake = reconstruction.image
            adversarial = adversarial_loss(self.discriminator(fake)) if self.discriminator else None
            pixels = stage1_reconstruction_loss(images, fake, adversarial, self.settings)
            total, parts = pixels.total, pixels.parts
        if self.settings.target != "pixels":
            features = masked_feature_loss(reconstruction.features, reconstruction.target_features, reconstruction.mask)
            total = total + self.settings.feature_weight * features
            parts["feature"] = features.item()
        return LossTerms(total, parts)

    @contextmanager
    def _discriminator_frozen(self) -> Iterator[None]:
        """For the generator step: the adversarial term reaches the generator only, so no gradient fills the PLPM
        and, under DDP, no all-reduce of one runs on every micro-batch (its forward outside DDP's gradient sync)."""
        if self.discriminator is None:
            yield
            return
        with frozen(self.discriminator), self.fabric.no_backward_sync(self.discriminator):
            yield

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.discriminator:
            state["plpm"] = self.discriminator.state_dict()
            state["plpm_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.discriminator:
            self.discriminator.load_state_dict(state["plpm"])
            load_optimizer_state(self.disc_optimizer, state["plpm_optimizer"])
