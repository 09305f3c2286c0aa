"""A copy of a trained model whose memory section of one category is padded to a number of rows (its own rows repeated
with noise of 0.01), the rest unchanged: the worst case of the section cap (`model.memory_section_size`) for
inference speed, measured with `mala cost` (BENCHMARKS.md, "The global map built in").

    python bench/padded_section.py runs/global_seed0 runs/pad40k_global --category magnetic_tile --rows 40000
    mala cost --checkpoint runs/pad40k_global/model.safetensors runs/pad40k_held/model.safetensors \
        --category magnetic_tile --repeats 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.memory import FeatureMemory, MemorySection  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402

NOISE = 0.01


def pad_section(memory: FeatureMemory, section: int, rows: int, seed: int = 0) -> None:
    """Refill `memory` with `section` padded to `rows` rows (random repeats of its own rows plus noise)."""
    generator = torch.Generator().manual_seed(seed)
    sections = []
    for k in range(memory.section_count):
        tokens = memory.section_rows(k)
        if k == section and rows > len(tokens):
            extra = tokens[torch.randint(len(tokens), (rows - len(tokens),), generator=generator)]
            tokens = torch.cat([tokens, extra + NOISE * torch.randn(extra.shape, generator=generator)])
        images = memory.image_features[memory.image_sections == k]
        sections.append(MemorySection(tokens, float(memory.scales[k]), images))
    memory.fill_sections(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--category", required=True)
    parser.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    model, _, info = load_trained_model(args.run)
    pad_section(model.memory, info["categories"].index(args.category), args.rows)
    state = load_checkpoint(args.run / MODEL_FILE)
    state["model"] = model.state_dict()
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / MODEL_FILE, state)
    rows = [len(model.memory.section_rows(k)) for k in range(model.memory.section_count)]
    print(f"{args.out / MODEL_FILE}: rows per section {rows}")


if __name__ == "__main__":
    main()
