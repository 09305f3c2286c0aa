"""A run's model with the fusion its tuning would have picked without the global map's candidates: the same weights
and memories, each category's best global-share-0 row of `RUN/tune/tuning.json` (the first of equals, as `mala tune`
picks). Testing both isolates what the global map adds (BENCHMARKS.md, "The global map built in").

    python bench/without_global.py runs/global_seed0 runs/global_seed0_g0
    mala test --checkpoint runs/global_seed0_g0 --data ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402


def fusion_without_global(tuning: dict, categories: list[str]) -> torch.Tensor:
    """The `section_fusion` rows (S, 3) of the best candidate with global share 0, per category in section order."""
    rows = []
    for category in categories:
        candidates = [c for c in tuning[category]["candidates"] if c.get("global_share", 0.0) == 0.0]
        best = max(candidates, key=lambda c: c["pixel_auroc"] + c["pixel_aupro"])
        rows.append([best["memory_weight"], best["score_map_share"], 0.0])
    return torch.tensor(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run that tuned in training (RUN/tune/tuning.json)")
    parser.add_argument("out", type=Path, help="folder for the copy's model file")
    args = parser.parse_args()
    tuning = json.loads((args.run / "tune" / "tuning.json").read_text())
    state = load_checkpoint(args.run / MODEL_FILE)
    state["model"]["section_fusion"] = fusion_without_global(tuning, state["data"]["categories"])
    state["model"].pop("section_map_levels", None)  # the levels of the tuned fusion's maps, not of these
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / MODEL_FILE, state)
    print(f"{args.out / MODEL_FILE}: {state['model']['section_fusion'].tolist()}")


if __name__ == "__main__":
    main()
