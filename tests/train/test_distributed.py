"""Data-parallel training: the ranks share each epoch without loss, and 2 processes (gloo, this CPU) reach the
weights of 1 process with the same global batch and seed, and build the same memory from their shares of images."""

import numpy as np
import pytest

from mala.cli import main
from mala.train.runner import batches_per_epoch, rank_positions
from tests.train.tiny_cli import run, train_command, weights

# measured 7e-6 after 6 steps: float32 gradient sums in another order (all-reduce of halves), through Adam
DDP_TOLERANCE = 5e-5
# the global map trains alike on every rank (same draws, same seed) on tokens each rank embedded from its own batches,
# which differ by float noise (2.4e-5, as the memory's); its 20 Adam steps on lite0's stride-4 + 8 + 16 tokens take
# that to 2e-4 (measured; 2e-5 with stride 8 + 16); the bound is at most one Adam step of its lr (1e-3)
GLOBAL_MAP_TOLERANCE = 1e-3


@pytest.mark.parametrize("count", [1, 7, 8, 30, 201])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_share_the_epoch_without_missing_or_extra_samples(count, world_size):
    shares = [rank_positions(count, rank, world_size) for rank in range(world_size)]
    assert len({len(share) for share in shares}) == 1  # equal steps on every rank
    together = np.concatenate(shares)
    assert set(together.tolist()) == set(range(count))  # none missing
    repeats = len(together) - count
    assert repeats == (-count) % world_size  # padding only when count does not divide, and less than world_size
    if count % world_size == 0:
        assert len(together) == len(set(together.tolist()))
    assert batches_per_epoch(count, 2, world_size) == -(-len(shares[0]) // 2)


def test_rank_shares_interleave_so_global_batches_match_one_process():
    """Batch k of 2 ranks with batch 2 holds the images of batch k of 1 process with batch 4."""
    order = np.arange(16)
    rank0, rank1 = (order[rank_positions(16, rank, 2)] for rank in (0, 1))
    for k in range(4):
        assert sorted([*rank0[2 * k:2 * k + 2], *rank1[2 * k:2 * k + 2]]) == list(range(4 * k, 4 * k + 4))


HYBRID = ["model.backbone=efficientnet_lite0", "model.patch_size=16", "stage1.target=both", "model.memory_weight=0.5"]


@pytest.mark.parametrize("encoder", [[], HYBRID], ids=["pixel", "hybrid"])
def test_two_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path, encoder):
    settings = ["stage1.epochs=2", "stage1.warmup_epochs=1", "stage1.images_per_category=8", "stage2.epochs=1",
                "stage2.images_per_category=8", "stage2.anomalous_per_category=6", *encoder]
    one = run(train_command(tmp_path / "one", settings + ["stage1.batch_size=4", "stage2.batch_size=4"],
                            "--devices", "1"))
    two = run(train_command(tmp_path / "two", settings + ["stage1.batch_size=2", "stage2.batch_size=2"],
                            "--devices", "2"))
    assert "Starting with 2 processes" in two.stdout + two.stderr
    single, parallel = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert single.keys() == parallel.keys()
    differences = {key: (single[key] - parallel[key]).abs().max().item() for key in single if single[key].numel()}
    global_map = {key: differences.pop(key) for key in list(differences) if ".global_map." in key}
    assert max(differences.values()) < DDP_TOLERANCE, sorted(differences.items(), key=lambda kv: -kv[1])[:3]
    assert max(global_map.values(), default=0) < GLOBAL_MAP_TOLERANCE, max(global_map.items(), key=lambda kv: kv[1])
    if encoder:  # the memory (compared above): each rank embedded half of the images, rank 0 built it from all
        assert parallel["s.model.memory.tokens"].shape[0] > 0
        # 54 images in batches of 8: 7 batches in one process, 4 on each rank of two (27 images each)
        assert "memory: metal_plate: 7/7 batch" in one.stderr and "memory: metal_plate: 4/4 batch" in two.stderr
    # header + 2 steps per epoch (8 images / global batch 4) x (2 stage-1 epochs + 1 stage-2 epoch), rank 0 only
    assert (tmp_path / "two" / "steps.csv").read_text().count("\n") == 1 + 2 * 2 + 2


def test_run_flags_with_resume_are_refused_in_one_line(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path), "--data", str(tmp_path), "--devices", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--devices" in error and "--resume" in error
