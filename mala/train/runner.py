"""What both training stages share: the epoch's loader (this rank's share) and one optimizer step over
accumulated batches with optional gradient clipping.

How an epoch's samples are shared among data-parallel ranks: the epoch order is the same on every rank (drawn from
(seed, stage, epoch)); rank r takes positions r, r + W, r + 2W, ... of it. So batch k of all ranks together is
batch k of one process with W times the batch size, which makes a W-process run follow a 1-process run with the
same global batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mala.config import MalaConfig
from mala.data.dataset import ImageCache
from mala.errors import CheckpointError
from mala.train.epoch_data import Crops

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


def padded_length(count: int, world_size: int) -> int:
    """The epoch length rounded up to a multiple of the world size, so every rank gets the same number of steps."""
    return -(-count // world_size) * world_size


def rank_positions(count: int, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s positions in an epoch of `count` samples.

    Each position lies in exactly one rank's share. When `count` is not a multiple of the world size, the shares
    are padded (as torch's DistributedSampler does) with the first positions of the epoch, so fewer than
    `world_size` samples are seen twice and none is left out; a run with count % world_size == 0 has no repeat."""
    return np.arange(padded_length(count, world_size))[rank::world_size] % count


def rank_loader(dataset: Dataset, batch_size: int, num_workers: int, fabric, skip_batches: int = 0) -> DataLoader:
    """This rank's share of `dataset` in order, in batches, without the first `skip_batches` (already trained:
    a resumed epoch continues where it stopped)."""
    positions = rank_positions(len(dataset), fabric.global_rank, fabric.world_size)
    loader = DataLoader(Subset(dataset, positions[skip_batches * batch_size:].tolist()), batch_size=batch_size,
                        num_workers=num_workers)
    return fabric.setup_dataloaders(loader, use_distributed_sampler=False)  # the split is ours


def batches_per_epoch(count: int, batch_size: int, world_size: int) -> int:
    """Batches of one rank in an epoch of `count` samples."""
    return -(-padded_length(count, world_size) // world_size // batch_size)


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
