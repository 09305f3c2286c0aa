"""Would `mala tune` pick better from a wider grid of fusions? For a run that tuned in training (`run.tune`), its
memory is refilled from the 80 % its stage 2 trained on (as the tuning had it), the held-out 20 % (each also with a
small synthetic defect) are mapped once with every part, and every candidate of weights x coarse shares x global
shares is scored as `mala tune` scores it (mean of validation pixel AUROC and AUPRO). With `--anomalies` naming more
than one group (`small`: cracks and specks, `broad`: shades, `large`: DRAEM and cut-paste), each group is scored
with the normals on its own and the groups weigh alike. A copy of the run's model file takes each category's pick (the
same weights and memories otherwise) and the normal level of its map, as training stores them, so `mala test` gives
the outcome; with the tuning's own grid and anomalies (the defaults) it redoes the tuning of a run without mirror
views (`bench/retune.py` redoes any run's). `--test` also scores
every candidate on the test set (outcome only; the model as saved, its memory of all training images) and prints, per
category, the rank correlation of validation and test over the candidates (the JSON's figures:
`bench/leave_one_out.py` reads them).

    python bench/wider_fusion.py runs/global_seed0 runs/global_seed0_wide --data D/magnetic_tile D/metal_plate \
        D/deeppcb D/pv_el_cells --global-shares 0 0.5 0.75 1
    mala test --checkpoint runs/global_seed0_wide --data ...
    python bench/wider_fusion.py runs/global_seed0 runs/global_seed0_broad --data ... --anomalies small broad --test
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.run_validation import refilled_model  # noqa: E402
from bench.tune_check import as_rows, compare, figures_of, print_comparison  # noqa: E402
from mala.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.mala import MapParts  # noqa: E402
from mala.tune.protocol import (MEMORY_WEIGHTS, SCORE_MAP_SHARES, GLOBAL_SHARES, CategoryChoice, Fusion,  # noqa: E402
                                SectionTuning, choice_table, choose_fusion, part_of, validation_parts)
from mala.tune.split import VALIDATION_KINDS  # noqa: E402

GROUPS = {"large": VALIDATION_KINDS[:2], "small": VALIDATION_KINDS[2:4], "broad": VALIDATION_KINDS[4:]}


def group_choices(model: MALA, validation: ImageCache, parts: MapParts, fusions: list[Fusion],
                  groups: list[str]) -> dict[str, dict[str, CategoryChoice]]:
    """`choose_fusion` on each group of anomalies with the normals, and (key "all") the groups' figures averaged per
    candidate."""
    per_group = {}
    for group in groups:
        kept = np.array([i for i, sample in enumerate(validation.samples)
                         if not sample.label or sample.path.stem.split("_", 1)[1] in GROUPS[group]])
        per_group[group] = choose_fusion(model, validation.subset(kept), part_of(parts, kept), fusions)
    first = next(iter(per_group.values()))
    per_group["all"] = {category: CategoryChoice({fusion: tuple(np.mean(
        [g[category].validation[fusion] for g in per_group.values()], 0)) for fusion in fusions}) for category in first}
    return per_group


def test_choices(run: Path, data: list[str], fusions: list[Fusion]) -> dict[str, CategoryChoice]:
    """Every candidate's test pixel AUROC / AUPRO per category, the run's model as saved (outcome only)."""
    model, cfg, info = load_trained_model(run)
    test = ImageCache.build(test_samples(scan_roots(data, info["categories"])), cfg.input_shape,
                            desc="decoding test images")
    return figures_of(model, test, info["categories"], fusions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run that tuned in training")
    parser.add_argument("out", type=Path, help="folder for the copy's model file and the figures")
    parser.add_argument("--data", nargs="+", required=True, help="the data the run trained on, all of it")
    parser.add_argument("--weights", type=float, nargs="+", default=list(MEMORY_WEIGHTS))
    parser.add_argument("--shares", type=float, nargs="+", default=list(SCORE_MAP_SHARES))
    parser.add_argument("--global-shares", type=float, nargs="+", default=list(GLOBAL_SHARES))
    parser.add_argument("--anomalies", nargs="+", choices=list(GROUPS), default=["small"])
    parser.add_argument("--test", action="store_true", help="score every candidate on the test set too (outcome)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info, validation = refilled_model(args.run, args.data, tuple(args.anomalies))
    categories = info["categories"]
    parts = validation_parts(model, validation, known_sections(validation, categories))
    default = Fusion(cfg.model.memory_weight, cfg.model.score_map_share, cfg.model.global_share)
    grid = [Fusion(w, s, g) for g, w, s in itertools.product(args.global_shares, args.weights, args.shares)]
    fusions = [default] + [f for f in grid if f != default]
    by_group = group_choices(model, validation, parts, fusions, args.anomalies)
    choices = by_group["all"]
    print(choice_table(choices))
    state = load_checkpoint(args.run / MODEL_FILE)
    SectionTuning.of(model, validation, parts, choices, categories).store(state["model"])
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / MODEL_FILE, state)
    test = test_choices(args.run, args.data, fusions) if args.test else None
    for group, group_choice in by_group.items():  # each group alone, then "all": the pick
        figures = {"validation": as_rows(group_choice)}
        if test is not None:
            figures["test"] = as_rows(test)
            print_comparison(f"{args.run}: validation ({group}) against test", compare(group_choice, test))
        name = "wider_fusion.json" if group == "all" else f"wider_fusion_{group}.json"
        (args.out / name).write_text(json.dumps(
            {"run": str(args.run), "anomalies": args.anomalies if group == "all" else [group],
             "memory_sigma": cfg.model.memory_sigma,
             "chosen": {category: choice.chosen.values for category, choice in group_choice.items()},
             "figures": figures}, indent=1))
    print(f"{args.out / MODEL_FILE}: {state['model']['section_fusion'].tolist()}")


if __name__ == "__main__":
    main()
