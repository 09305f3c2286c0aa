"""Would averaging each image's maps with those of its mirror images (test-time flips) help? For a run that tuned in
training, the memory is refilled from the 80 % its stage 2 trained on, the held-out 20 % are mapped as they are and
flipped (left-right, and up-down), each flipped map is flipped back, and `mala tune`'s candidates are scored on the
average (mean of validation pixel AUROC and AUPRO), as `mala tune` scores them on the plain maps. `--test` scores the
same on the test set (the model as saved; outcome only). A flip is a second (third) pass of the whole model. Every
category takes each flip here; `mala train` offers them within `run.mirror_gflops`.

    python bench/flip_maps.py runs/s15_seed0 --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --test \
        --out runs/flip_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.run_validation import refilled_model  # noqa: E402
from bench.tune_check import as_rows, compare, print_comparison  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.tune.protocol import CategoryChoice, candidates, choose_fusion, validation_views  # noqa: E402

FLIPS = {"none": 0, "lr": 1, "lr+ud": 2}  # mirror views (`MIRROR_VIEWS`) each image also takes


def figures_by_flip(model: MALA, cache: ImageCache, categories: list[str], flip_names: list[str]
                    ) -> dict[str, dict[str, CategoryChoice]]:
    """`mala tune`'s candidates scored on each of `flip_names`' averaged maps (`validation_views` of every category
    with every view); each view mapped once."""
    sections, fusions = known_sections(cache, categories), candidates(model)
    most = max(FLIPS[name] for name in flip_names)
    views = validation_views(model, cache, sections, {category: most for category in categories})
    return {name: choose_fusion(model, cache, views[FLIPS[name]], fusions) for name in flip_names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run that tuned in training")
    parser.add_argument("--data", nargs="+", required=True, help="the data the run trained on, all of it")
    parser.add_argument("--flips", nargs="+", choices=list(FLIPS), default=list(FLIPS))
    parser.add_argument("--test", action="store_true", help="score the candidates on the test set too (outcome)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info, validation = refilled_model(args.run, args.data)
    categories = info["categories"]
    figures = {"validation": figures_by_flip(model, validation, categories, args.flips)}
    if args.test:
        model, cfg, info = load_trained_model(args.run)
        test = ImageCache.build(test_samples(scan_roots(args.data, categories)), cfg.input_shape,
                                desc="decoding test images")
        figures["test"] = figures_by_flip(model, test, categories, args.flips)
    report = {}
    for name in args.flips:
        picks = figures["validation"][name]
        score = np.mean([picks[c].score(picks[c].chosen) for c in categories])
        print(f"flips {name}: validation score of the picks {score:.2f}")
        if args.test:
            report[name] = rows = compare(picks, figures["test"][name])
            print_comparison(f"flips {name}: validation against test", rows)
    if args.out is not None:
        args.out.write_text(json.dumps({"run": str(args.run), "comparison": report, "figures": {
            split: {name: as_rows(c) for name, c in by_flip.items()} for split, by_flip in figures.items()}}, indent=1))


if __name__ == "__main__":
    main()
