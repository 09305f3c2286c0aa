"""What both training stages share: the epoch's loader (this rank's share) and one optimizer step over
accumulated batches with optional gradient clipping."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mala.config import MalaConfig
from mala.data.dataset import Crops, ImageCache
from mala.errors import CheckpointError
from mala.train.distributed import batches_per_epoch, rank_loader

LossFunction = Callable[[Any], tuple[torch.Tensor, dict[str, float]]]


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters as MAE groups them (timm's `param_groups_weight_decay`): matrices and kernels decay;
    biases, 1-D parameters (norms) and the module's `no_weight_decay()` names (tokens) do not."""
    skip = set(module.no_weight_decay()) if hasattr(module, "no_weight_decay") else set()
    decayed, kept = [], []
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            exempt = parameter.ndim <= 1 or name.endswith(".bias") or name in skip
            (kept if exempt else decayed).append(parameter)
    return [{"params": kept, "weight_decay": 0.0}, {"params": decayed, "weight_decay": weight_decay}]


def adamw(module: nn.Module, lr: float, weight_decay: float, **options: Any) -> torch.optim.AdamW:
    """AdamW over the module's trainable parameters in `weight_decay_groups`."""
    return torch.optim.AdamW(weight_decay_groups(module, weight_decay), lr=lr, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Resume an optimizer; a checkpoint written before its parameter groups changed is refused in words."""
    saved, wanted = len(state["param_groups"]), len(optimizer.param_groups)
    if saved != wanted:
        raise CheckpointError(f"the checkpoint's optimizer has {saved} parameter group(s), this version {wanted} "
                              "(weight decay now spares biases, norms and tokens): it cannot be resumed; start a "
                              "new run")
    optimizer.load_state_dict(state)


def optimizer_steps(batches: int, accumulate: int) -> int:
    """Optimizer steps of an epoch of `batches`: the last step takes what is left when they do not divide."""
    return -(-batches // accumulate)


class StageRunner(ABC):
    """Base of `Stage1` and `Stage2`: they give the epoch's dataset and the losses, this class the rest."""

    stage: int

    def __init__(self, cfg: MalaConfig, fabric, cache: ImageCache, settings):
        self.cfg, self.fabric, self.cache, self.settings = cfg, fabric, cache, settings
        self.steps_per_epoch = 1  # optimizer steps, known once the first loader is built

    @property
    def global_batch_size(self) -> int:
        """Images per optimizer step over all ranks."""
        return self.settings.batch_size * self.fabric.world_size * self.cfg.run.accumulate

    @abstractmethod
    def epoch_dataset(self, epoch: int) -> Dataset:
        """The samples of `epoch`, in the order every rank shares."""

    def random_tiles(self, rng: np.random.Generator, count: int) -> Crops | None:
        """With tiling, a tile at a random position of each of the epoch's `count` images; None without."""
        grid = self.cfg.tile_grid
        return None if grid is None else Crops(grid.random_corners(rng, count), grid.tile)

    def loader(self, epoch: int, skip_steps: int = 0) -> DataLoader:
        """This rank's batches of `epoch`, without those of the first `skip_steps` optimizer steps."""
        dataset = self.epoch_dataset(epoch)
        batches = batches_per_epoch(len(dataset), self.settings.batch_size, self.fabric.world_size)
        self.steps_per_epoch = optimizer_steps(batches, self.cfg.run.accumulate)
        return rank_loader(dataset, self.settings.batch_size, self.cfg.run.num_workers, self.fabric,
                           skip_batches=skip_steps * self.cfg.run.accumulate)

    def optimize(self, module, optimizer, batches: Sequence[Any], loss_of: LossFunction) -> dict[str, float]:
        """One optimizer step on the summed gradients of `batches` (each loss divided by their count, so the
        step equals one on the concatenated batch); returns the mean of the loss parts."""
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for index, batch in enumerate(batches):
            # ranks exchange gradients once per optimizer step, on its last batch
            with self.fabric.no_backward_sync(module, enabled=index < len(batches) - 1):
                loss, parts = loss_of(batch)
                self.fabric.backward(loss / len(batches))
            sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
        if self.cfg.run.clip_grad > 0:
            self.fabric.clip_gradients(module, optimizer, max_norm=self.cfg.run.clip_grad)
        optimizer.step()
        return {k: v / len(batches) for k, v in sums.items()}

    def step(self, batch: Any, progress_epochs: float) -> dict[str, float]:
        """One optimizer step on one batch."""
        return self.accumulated_step([batch], progress_epochs)

    @abstractmethod
    def accumulated_step(self, batches: Sequence[Any], progress_epochs: float) -> dict[str, float]:
        """One optimizer step over `batches` (with the stage's learning-rate schedule); returns the loss parts."""
