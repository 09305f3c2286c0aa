"""How an epoch's samples are shared among data-parallel ranks, and the loaders that read one rank's share.

The epoch order is the same on every rank (drawn from (seed, stage, epoch)); rank r takes positions
r, r + W, r + 2W, ... of it. So batch k of all ranks together is batch k of one process with W times the batch
size, which makes a W-process run follow a 1-process run with the same global batch.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader, Dataset, Subset


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
