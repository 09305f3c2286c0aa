"""Training images per second of each stage, against the floor set by this machine's matrix-multiply rate.

    python bench/train_throughput.py --preset tiny --size 224 --steps 5

For each stage: FLOPs of one training step (forward + backward, counted by torch's FlopCounterMode),
the median time of `--steps` timed steps after one warm-up, and the ratio of the measured rate to
the rate a step would reach if every FLOP ran at the GEMM rate measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from mala.config import load_config
from mala.model import MALA, PseudoLabelPredictor
from mala.train.losses import adversarial_loss, stage1_reconstruction_loss, stage2_loss


def gemm_flops_per_second(size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def stage_steps(preset: str, size: int):
    """One training step per stage (forward, loss, backward) on random images of the preset's batch size."""
    cfg = load_config(preset)
    cfg.model.image_size = size
    model, plpm = MALA(cfg.model), PseudoLabelPredictor(cfg.model.plpm_width)
    images1 = torch.rand(cfg.stage1.batch_size, 3, size, size)
    images2 = torch.rand(cfg.stage2.batch_size, 3, size, size)
    masks2 = (torch.rand(cfg.stage2.batch_size, size, size) > 0.9).float()

    def stage1() -> None:
        model.set_stage(1)
        recon = model.reconstruct(images1, cfg.stage1.mask_ratio).image
        stage1_reconstruction_loss(images1, recon, adversarial_loss(plpm(recon)), cfg.stage1).total.backward()

    def stage2() -> None:
        model.set_stage(2)
        stage2_loss(model.map_logits(images2), masks2, cfg.stage2).total.backward()

    return {"stage 1": (stage1, len(images1)), "stage 2": (stage2, len(images2))}


def measure(step, steps: int) -> tuple[float, float]:
    """(FLOPs per step, median seconds per step)."""
    with FlopCounterMode(display=False) as counter:
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return counter.get_total_flops(), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    gemm = gemm_flops_per_second()
    print(f"{args.preset} at {args.size} px, {torch.get_num_threads()} threads, GEMM rate {gemm / 1e9:.1f} GFLOP/s")
    print("| stage | batch | GFLOP per image | images/s | floor images/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, (step, batch) in stage_steps(args.preset, args.size).items():
        flops, seconds = measure(step, args.steps)
        rate, floor = batch / seconds, gemm / (flops / batch)
        print(f"| {name} | {batch} | {flops / batch / 1e9:.2f} | {rate:.1f} | {floor:.1f} | {rate / floor:.2f} |")


if __name__ == "__main__":
    main()
