"""Inference speed of a TRAINED model, its normal-feature memory included (`mala cost` builds models with an empty
memory), against the same model without the memory, measured in the same run.

    python bench/model_speed.py --checkpoint RUN/model.safetensors --batch 1 --repeats 7 --rounds 3

Each round times `--repeats` maps of random images at the model's input size (a tiled model's source size: tiles
cut, run and stitched) (median, after a warm-up) with the
memory and without it (`memory_weight` 0), alternating, so that load on a shared machine hits both alike.
Prints images/s per round, the medians over rounds and the ratio; `--memory-radius R` first thins the memory as
`bench/hybrid_maps.py` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.model.load import load_trained_model  # noqa: E402
from mala.eval.cost import images_per_second  # noqa: E402
from mala.sizes import describe_shape  # noqa: E402
from mala.train.fill_memory import thin_sections  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-radius", type=float, default=0.0)
    args = parser.parse_args()
    model, cfg, _ = load_trained_model(args.checkpoint)
    memory = model.memory
    if args.memory_radius > 0:
        thin_sections(memory, args.memory_radius, cfg.run.seed)
    weight = cfg.model.memory_weight
    rates: dict[str, list[float]] = {"with memory": [], "without": []}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, w in (("with memory", weight), ("without", 0.0)):
                model.cfg = dataclasses.replace(cfg.model, memory_weight=w)
                rates[name].append(images_per_second(model, args.batch, args.repeats, cfg))
    tiles = f", {cfg.tile_grid.count} tiles of it stitched at {describe_shape(cfg.input_shape)}" if cfg.tile_grid else ""
    print(f"{args.checkpoint}: {describe_shape(model.image_shape)}{tiles}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, memory of "
          f"{len(memory.tokens)} tokens, weight {weight}")
    for name, values in rates.items():
        print(f"{name}: {', '.join(f'{v:.1f}' for v in values)} img/s, median {statistics.median(values):.1f}")
    print(f"ratio with / without: {statistics.median(rates['with memory']) / statistics.median(rates['without']):.2f}")


if __name__ == "__main__":
    main()
