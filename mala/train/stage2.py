"""Stage 2: frozen encoder; decoder and Token Balance Module learn anomaly maps from synthetic anomalies (eq. 6)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mala.config import MalaConfig
from mala.data.dataset import ImageCache
from mala.train.epoch_data import SyntheticAnomalies, draw_per_category, epoch_rng
from mala.model import MALA
from mala.train.losses import stage2_loss
from mala.train.runner import StageRunner, adamw, load_optimizer_state


class Stage2(StageRunner):
    stage = 2

    def __init__(self, cfg: MalaConfig, model: MALA, fabric, cache: ImageCache, synthesize, foregrounds):
        super().__init__(cfg, fabric, cache, cfg.stage2)
        self.synthesize, self.foregrounds = synthesize, foregrounds
        model.set_stage(2)
        optimizer = adamw(model, self.settings.lr, self.settings.weight_decay)
        self.model, self.optimizer = fabric.setup(model, optimizer)
        self.model.mark_forward_method("map_logits")  # so DDP syncs gradients of this non-forward method

    def epoch_dataset(self, epoch: int) -> Dataset:
        rng = epoch_rng(self.cfg.run.seed, self.stage, epoch)
        per_category = self.settings.images_per_category
        drawn = draw_per_category(self.cache.indices_by_category(), per_category, rng)
        indices = np.concatenate(list(drawn.values()))
        anomalous = np.tile(np.arange(per_category) < self.settings.anomalous_per_category, len(drawn))
        order = rng.permutation(len(indices))
        return SyntheticAnomalies(  # seeded per sample position: the same images on any number of ranks
            self.cache, indices[order], anomalous[order], self.synthesize, self.foregrounds,
            seed=(self.cfg.run.seed, self.stage, epoch), crops=self.random_tiles(rng, len(indices)),
        )

    def accumulated_step(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                         progress_epochs: float) -> dict[str, float]:
        def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
            images, masks = batch
            loss = stage2_loss(self.model.map_logits(images), masks, self.settings)
            return loss.total, {"loss": loss.total.item(), **loss.parts}

        return {**self.optimize(self.model, self.optimizer, batches, loss_of), "lr": self.settings.lr}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
