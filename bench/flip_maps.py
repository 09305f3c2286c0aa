"""Would averaging each image's maps with those of its mirror images (test-time flips) help? For a run that tuned in
training, the memory is refilled from the 80 % its stage 2 trained on, the held-out 20 % are mapped as they are and
flipped (left-right, and up-down), each flipped map is flipped back, and `mala tune`'s candidates are scored on the
average (mean of validation pixel AUROC and AUPRO), as `mala tune` scores them on the plain maps. `--test` scores the
same on the test set (the model as saved; outcome only). A flip is a second (third) pass of the whole model.

    python bench/flip_maps.py runs/s15_seed0 --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --test \
        --out runs/flip_seed0.json
"""

from __future__ import annotations

import argparse
import dataclasses
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
from mala.model.mala import MapParts  # noqa: E402
from mala.tune.protocol import MAP_PARTS, CategoryChoice, candidates, choose_fusion, validation_parts  # noqa: E402

FLIPS = {"none": (), "lr": ((2,),), "lr+ud": ((2,), (1,))}  # image axes of (N, H, W, 3) each extra pass mirrors


def flipped_back(parts: MapParts, axes: tuple[int, ...]) -> MapParts:
    """`parts` of mirrored images mirrored back: an image axis (1: rows, 2: columns) is a map's last two."""
    dims = [axis - 3 for axis in axes]  # -2: rows, -1: columns, on (B, H, W) and (B, 1, rows, columns) alike
    return dataclasses.replace(parts, **{name: getattr(parts, name).flip(dims) for name in MAP_PARTS
                                         if getattr(parts, name) is not None})


def view_parts(model: MALA, cache: ImageCache, sections: np.ndarray, axes: tuple[int, ...]) -> MapParts:
    """The parts of `cache` mirrored along `axes` (none: as it is), mirrored back."""
    if not axes:
        return validation_parts(model, cache, sections)
    mirrored = ImageCache(cache.samples, np.ascontiguousarray(np.flip(cache.images, axes)), cache.masks)
    return flipped_back(validation_parts(model, mirrored, sections), axes)


def averaged(views: list[MapParts]) -> MapParts:
    """The mean of the parts of several views of the same images."""
    return dataclasses.replace(views[0], **{name: torch.stack([getattr(v, name) for v in views]).mean(0)
                                            for name in MAP_PARTS if getattr(views[0], name) is not None})


def figures_by_flip(model: MALA, cache: ImageCache, categories: list[str], flip_names: list[str]
                    ) -> dict[str, dict[str, CategoryChoice]]:
    """`mala tune`'s candidates scored on each of `flip_names`' averaged maps; each view mapped once."""
    sections, fusions = known_sections(cache, categories), candidates(model)
    every = sorted({axes for name in flip_names for axes in ((), *FLIPS[name])})
    views = {axes: view_parts(model, cache, sections, axes) for axes in every}
    return {name: choose_fusion(model, cache, averaged([views[()]] + [views[a] for a in FLIPS[name]]), fusions)
            for name in flip_names}


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
