"""Synthetic-anomaly throughput on one CPU core: samples per second at --size px.

Run from the repository root: `python -m bench.synth [--seconds 1] [--runs 5] [--size 224]`.
Textures come from ../shared/data/dtd, normal images from ../shared/data/metal_plate; each figure is
the median over --runs timed runs of --seconds each. Time is the process's CPU time, so the figure
is what one core delivers even when other work shares the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable

# One core: set before numpy/scipy load their thread pools (torch is not imported here).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mala.config import SynthConfig  # noqa: E402
from mala.synth import AnomalySynthesizer, foreground_mask, perlin_mask, random_augment  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUM_IMAGES = 8


def load_images(size: int) -> list[np.ndarray]:
    paths = sorted((DATA_DIR / "metal_plate" / "train" / "good").glob("*.png"))[:NUM_IMAGES]
    if not paths:
        raise SystemExit(f"no images under {DATA_DIR / 'metal_plate'}: the benchmark needs ../shared/data")
    images = []
    for path in paths:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        images.append(np.asarray(resized, dtype=np.float32) / 255)
    return images


def calls_per_second(call: Callable[[int], object], seconds: float) -> float:
    """Call call(0), call(1), ... for `seconds` of CPU time and return the rate."""
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        call(count)
        count += 1
    return count / (time.process_time() - start)


def median_rate(make_call: Callable[[], Callable[[int], object]], seconds: float, runs: int) -> float:
    """Median rate over runs; make_call builds a fresh callable per run (e.g. with a cold cache)."""
    return statistics.median(calls_per_second(make_call(), seconds) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row; the median is shown")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    args = parser.parse_args()

    cfg = SynthConfig(texture_dir=str(DATA_DIR / "dtd"))
    images = load_images(args.size)
    foregrounds = [foreground_mask(image) for image in images]
    warm = AnomalySynthesizer(cfg, args.size)
    warm.preload()

    size = (args.size, args.size)

    def sample(synth: AnomalySynthesizer, with_foreground: bool) -> Callable[[int], object]:
        def call(index: int) -> object:
            which = index % len(images)
            foreground = foregrounds[which] if with_foreground else None
            rng = np.random.default_rng([0, 0, index])
            return synth(images[which], rng, anomalous=True, foreground=foreground)

        return call

    def mask(index: int) -> object:
        return perlin_mask(size, np.random.default_rng(index), cfg)

    def augment(index: int) -> object:
        rng = np.random.default_rng(index)
        return random_augment(images[index % len(images)], rng, cfg.num_augmentations)

    def segment(index: int) -> object:
        return foreground_mask(images[index % len(images)])

    rows: dict[str, Callable[[], Callable[[int], object]]] = {
        "anomalous sample, object (foreground), warm cache": lambda: sample(warm, True),
        "anomalous sample, texture (no foreground), warm": lambda: sample(warm, False),
        "anomalous sample, cold cache (decodes textures)": lambda: sample(
            AnomalySynthesizer(cfg, args.size), True
        ),
        "perlin_mask": lambda: mask,
        "random_augment, 3 augmentations": lambda: augment,
        "foreground_mask (once per image)": lambda: segment,
    }
    print(f"{args.size} px, 1 thread, median of {args.runs} runs of {args.seconds:g} s CPU time")
    print(f"{'what':<52} {'per second':>10} {'ms each':>8}")
    for name, make_call in rows.items():
        rate = median_rate(make_call, args.seconds, args.runs)
        print(f"{name:<52} {rate:>10.1f} {1000 / rate:>8.2f}")


if __name__ == "__main__":
    main()
