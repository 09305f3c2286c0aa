"""A trained model with its normal-feature memory rebuilt under other memory settings (the memory is filled after
stage 2 from the frozen backbone and the training images only, so this gives the model `mala train` would have
written with those settings and the same stage 2).

    python bench/refill_memory.py --checkpoint RUN/model.safetensors --data D/magnetic_tile D/metal_plate \
        --set memory_stride=8 --set memory_sigma=2 --set memory_weight=0.75 --out runs/refilled.safetensors

`--set KEY=VALUE` changes `model.KEY` (memory_stride, memory_sigma, memory_radius, memory_size, memory_weight) or,
as `run.KEY=VALUE`, a run setting (score_kernel). The training images are those of `--data`, in the categories the
model was trained on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.checkpoint import save_checkpoint  # noqa: E402
from mala.config import apply_overrides  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, train_samples  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], help="model.KEY=VALUE or run.KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    trained, cfg, info = load_trained_model(args.checkpoint)
    cfg = apply_overrides(cfg, [s if s.startswith("run.") else f"model.{s}" for s in args.set])
    model = MALA(cfg.model).eval()
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith("memory.")}
    model.load_state_dict(kept, strict=False)
    samples = train_samples(scan_roots(args.data, info.get("categories")))
    cache = ImageCache.build(samples, cfg.input_shape, desc="decoding training images")
    fill_memory(model, cache, cfg.run.seed, cfg.tile_grid)
    save_checkpoint(args.out, {"kind": "model", "config": cfg.to_dict(), "data": info, "model": model.state_dict()})
    print(f"{args.out}: memory of {len(model.memory.tokens):,} tokens in {model.memory.section_count} sections")


if __name__ == "__main__":
    main()
