"""Stage 1: masked reconstruction of normal images with the PLPM discriminator (paper eq. 3)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from mala.config import MalaConfig
from mala.data.dataset import ImageCache, NormalImages, draw_per_category, epoch_rng
from mala.model import MALA, PseudoLabelPredictor
from mala.train.losses import adversarial_loss, discriminator_loss, stage1_reconstruction_loss


def warmup_cosine_lr(base_lr: float, progress_epochs: float, warmup_epochs: int, total_epochs: int) -> float:
    """MAE's schedule: linear warm-up, then half-cycle cosine decay to 0."""
    if progress_epochs < warmup_epochs:
        return base_lr * progress_epochs / warmup_epochs
    span = max(total_epochs - warmup_epochs, 1)
    return base_lr * 0.5 * (1 + math.cos(math.pi * (progress_epochs - warmup_epochs) / span))


class Stage1:
    """One training stage: builds the epoch's data and performs the generator and discriminator steps."""

    stage = 1

    def __init__(self, cfg: MalaConfig, model: MALA, fabric, cache: ImageCache):
        self.cfg, self.fabric, self.cache = cfg, fabric, cache
        self.settings = cfg.stage1
        model.set_stage(1)
        generator_params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            generator_params, lr=self.settings.lr, weight_decay=self.settings.weight_decay, betas=self.settings.betas
        )
        self.model, self.optimizer = fabric.setup(model, optimizer)
        self.model.mark_forward_method("reconstruct")  # so DDP syncs gradients of this non-forward method
        self.discriminator = self.disc_optimizer = None
        if self.settings.use_plpm:
            plpm = PseudoLabelPredictor(cfg.model.plpm_width)
            disc_optimizer = torch.optim.AdamW(  # the paper's AdamW settings for both players
                plpm.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay, betas=self.settings.betas
            )
            self.discriminator, self.disc_optimizer = fabric.setup(plpm, disc_optimizer)
        self.steps_per_epoch = 1

    def loader(self, epoch: int) -> DataLoader:
        rng = epoch_rng(self.cfg.run.seed, self.stage, epoch)
        drawn = draw_per_category(self.cache.indices_by_category(), self.settings.images_per_category, rng)
        indices = rng.permutation(np.concatenate(list(drawn.values())))
        loader = DataLoader(
            NormalImages(self.cache, indices),
            batch_size=self.settings.batch_size,
            num_workers=self.cfg.run.num_workers,
        )
        loader = self.fabric.setup_dataloaders(loader)
        self.steps_per_epoch = len(loader)
        return loader

    def _set_lr(self, progress_epochs: float) -> float:
        lr = warmup_cosine_lr(self.settings.lr, progress_epochs, self.settings.warmup_epochs, self.settings.epochs)
        for optimizer in filter(None, (self.optimizer, self.disc_optimizer)):
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def step(self, images: torch.Tensor, progress_epochs: float) -> dict[str, float]:
        lr = self._set_lr(progress_epochs)
        reconstruction = self.model.reconstruct(images, self.settings.mask_ratio).image
        adversarial = adversarial_loss(self.discriminator(reconstruction)) if self.discriminator else None
        loss = stage1_reconstruction_loss(images, reconstruction, adversarial, self.settings)
        self.optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss.total)
        self.optimizer.step()
        parts = {"loss": loss.total.item(), **loss.parts, "lr": lr}
        if self.discriminator:
            disc_loss = discriminator_loss(self.discriminator(images), self.discriminator(reconstruction.detach()))
            self.disc_optimizer.zero_grad(set_to_none=True)
            self.fabric.backward(disc_loss)
            self.disc_optimizer.step()
            parts["disc"] = disc_loss.item()
        return parts

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict()}
        if self.discriminator:
            state["plpm"] = self.discriminator.state_dict()
            state["plpm_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.discriminator:
            self.discriminator.load_state_dict(state["plpm"])
            self.disc_optimizer.load_state_dict(state["plpm_optimizer"])
