"""Would `mala tune` pick better from a wider grid of fusions? For a run that tuned in training (`run.tune`), its
memory is refilled from the 80 % its stage 2 trained on (as the tuning had it), the held-out 20 % (each also with a
small synthetic defect) are mapped once with every part, and every candidate of weights x coarse shares x global
shares is scored as `mala tune` scores it (mean of validation pixel AUROC and AUPRO). A copy of the run's model file
takes each category's pick (the same weights and memories otherwise), so `mala test` gives the outcome. No test image
is read here.

    python bench/wider_fusion.py runs/global_seed0 runs/global_seed0_wide --data D/magnetic_tile D/metal_plate \
        D/deeppcb D/pv_el_cells --global-shares 0 0.5 0.75 1
    mala test --checkpoint runs/global_seed0_wide --data ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.run_validation import refilled_model  # noqa: E402
from mala.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402
from mala.tune.protocol import (MEMORY_WEIGHTS, SCORE_MAP_SHARES, GLOBAL_SHARES, Fusion, choice_table,  # noqa: E402
                                choose_fusion, section_fusion, validation_parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run that tuned in training")
    parser.add_argument("out", type=Path, help="folder for the copy's model file and the figures")
    parser.add_argument("--data", nargs="+", required=True, help="the data the run trained on, all of it")
    parser.add_argument("--weights", type=float, nargs="+", default=list(MEMORY_WEIGHTS))
    parser.add_argument("--shares", type=float, nargs="+", default=list(SCORE_MAP_SHARES))
    parser.add_argument("--global-shares", type=float, nargs="+", default=list(GLOBAL_SHARES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info, validation = refilled_model(args.run, args.data)
    categories = info["categories"]
    parts = validation_parts(model, validation, known_sections(validation, categories))
    default = Fusion(cfg.model.memory_weight, cfg.model.score_map_share, cfg.model.global_share)
    grid = [Fusion(w, s, g) for g, w, s in itertools.product(args.global_shares, args.weights, args.shares)]
    choices = choose_fusion(model, validation, parts, [default] + [f for f in grid if f != default])
    print(choice_table(choices))
    state = load_checkpoint(args.run / MODEL_FILE)
    state["model"]["section_fusion"] = section_fusion(choices, categories)
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / MODEL_FILE, state)
    figures = {category: {"chosen": choice.chosen.values,
                          "candidates": [[*fusion.values, *figures] for fusion, figures in choice.validation.items()]}
               for category, choice in choices.items()}
    (args.out / "wider_fusion.json").write_text(json.dumps({"run": str(args.run), "figures": figures}, indent=1))
    print(f"{args.out / MODEL_FILE}: {state['model']['section_fusion'].tolist()}")


if __name__ == "__main__":
    main()
