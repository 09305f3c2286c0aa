"""Training images per second of each stage, against the floor set by this machine's matrix-multiply rate.

    python bench/train_throughput.py --presets tiny,base --size 224 --steps 3

For each preset and stage: FLOPs of one training step (forward + backward, counted by torch's FlopCounterMode),
the median time of `--steps` timed steps after one warm-up, and the ratio of the measured rate to
the rate a step would reach if every FLOP ran at the GEMM rate measured just before (same process).
`--batch` times a smaller batch than the preset's (on a CPU the rate per image hardly depends on it, and a
`base` stage-1 step of 128 images takes minutes here). `gemm_flops_per_second`, `stage_steps` and `measure`
are reused by other benches.
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


def stage_steps(preset: str, size: int, batch: int | None = None):
    """One training step per stage (forward, loss, backward) on random images of the preset's batch sizes, or of
    `batch`: {name: (step function, images per step)}."""
    cfg = load_config(preset)
    cfg.model.image_size = size
    model, plpm = MALA(cfg.model), PseudoLabelPredictor(cfg.model.plpm_width)
    images1 = torch.rand(batch or cfg.stage1.batch_size, 3, size, size)
    images2 = torch.rand(batch or cfg.stage2.batch_size, 3, size, size)
    masks2 = (torch.rand(len(images2), size, size) > 0.9).float()

    def stage1() -> None:
        model.set_stage(1)
        recon = model.reconstruct(images1, cfg.stage1.mask_ratio).image
        stage1_reconstruction_loss(images1, recon, adversarial_loss(plpm(recon)), cfg.stage1).total.backward()

    def stage2() -> None:
        model.set_stage(2)
        stage2_loss(model.map_logits(images2), masks2, cfg.stage2).total.backward()

    return {"stage 1": (stage1, len(images1)), "stage 2": (stage2, len(images2))}


def step_flops(step) -> float:
    """FLOPs of one call of `step` (forward + backward); the call also serves as warm-up."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(step, steps: int) -> tuple[float, list[float]]:
    """(FLOPs per step, seconds of each of `steps` timed steps)."""
    flops, times = step_flops(step), []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return flops, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", "--preset", default="tiny", help="comma-separated presets [tiny]")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage; the median counts [3]")
    parser.add_argument("--batch", type=int, help="images per timed step [the preset's batch sizes]")
    args = parser.parse_args()
    print(f"{args.size} px, {torch.get_num_threads()} threads, median of {args.steps} timed steps")
    print("| preset | stage | batch | GFLOP per image | images/s (each step) | median | GEMM GFLOP/s | floor images/s "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        for name, (step, batch) in stage_steps(preset, args.size, args.batch).items():
            gemm = gemm_flops_per_second()
            flops, times = measure(step, args.steps)
            rates = [batch / seconds for seconds in times]
            rate, floor = statistics.median(rates), gemm / (flops / batch)
            print(f"| {preset} | {name} | {batch} | {flops / batch / 1e9:.2f} | {', '.join(f'{r:.1f}' for r in rates)} "
                  f"| {rate:.1f} | {gemm / 1e9:.0f} | {floor:.1f} | {rate / floor:.2f} |", flush=True)


if __name__ == "__main__":
    main()
