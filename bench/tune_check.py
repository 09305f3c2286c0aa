"""Does `mala tune`'s choice hold on the test set? (issue 22, item 3.) On the protocol's own model (the one `mala
tune` trained on 80 % of the training images, `TUNE_DIR/protocol`), every candidate fusion of mala/tune/protocol.py is
scored per category on the protocol's validation images (small synthetic defects on held-out normals) and on the real
test set (outcome only); prints per category the rank correlation of the two, and the test figures of the config's
fusion, of the protocol's choice and of the test-best. `--weights` / `--shares` score a wider grid than `mala tune`'s;
the report has `mala tune`'s grid and the wider one. `--crack-contrast` tries fainter validation cracks, and
`--test-figures` reuses an earlier run's test figures (they do not depend on validation); `--memory-sigma` blurs the
memory's maps.

    python bench/tune_check.py --checkpoint runs/tune_seed0/tune/protocol \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --out runs/tune_check_seed0.json
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
from scipy.stats import spearmanr  # noqa: E402

from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.tune.protocol import (MEMORY_WEIGHTS, SCORE_MAP_SHARES, VALIDATION_ANOMALIES, CategoryChoice,  # noqa: E402
                                Fusion, candidates, choose_fusion, validation_parts)
from mala.synth.validation import CRACK_CONTRAST  # noqa: E402
from mala.tune.split import validation_split  # noqa: E402


def figures_of(model, cache: ImageCache, categories: list[str], fusions: list[Fusion]) -> dict[str, CategoryChoice]:
    """Every candidate's pixel AUROC / AUPRO per category of `cache` (with `choose_fusion`'s pick)."""
    return choose_fusion(model, cache, validation_parts(model, cache, known_sections(cache, categories)), fusions)


def as_rows(choices: dict[str, CategoryChoice]) -> dict[str, list[list[float]]]:
    """Every candidate's figures per category, as JSON rows (weight, share, global share, pixel AUROC, AUPRO), the
    config's first."""
    return {category: [[*fusion.values, *figures] for fusion, figures in choice.validation.items()]
            for category, choice in choices.items()}


def from_rows(rows: dict[str, list[list[float]]]) -> dict[str, CategoryChoice]:
    """`as_rows` read back; rows written before the global share (weight, share, pixel AUROC, AUPRO) read as share 0."""
    return {category: CategoryChoice({Fusion(*fusion): (auroc, aupro) for *fusion, auroc, aupro in entries})
            for category, entries in rows.items()}


def within(choices: dict[str, CategoryChoice], fusions: list[Fusion]) -> dict[str, CategoryChoice]:
    """The choices as if only `fusions` had been scored (the config's first)."""
    return {category: CategoryChoice({f: choice.validation[f] for f in fusions})
            for category, choice in choices.items()}


def compare(validation: dict[str, CategoryChoice], test: dict[str, CategoryChoice]) -> dict:
    """Per category and on the mean: rho of the candidates' validation and test scores; test pixel AUROC / AUPRO of
    the config's fusion, of the protocol's choice and of the test-best."""
    rows = {}
    for category, choice in validation.items():
        outcome = test[category]
        fusions = list(choice.validation)
        rho = spearmanr([choice.score(f) for f in fusions], [outcome.score(f) for f in fusions])[0]
        rows[category] = {"rho": None if np.isnan(rho) else round(float(rho), 2), "chosen": str(choice.chosen),
                          "test_best": str(outcome.chosen),
                          **{name: [round(v, 2) for v in outcome.validation[f]] for name, f in
                             (("default_test", choice.default), ("chosen_test", choice.chosen),
                              ("best_test", outcome.chosen))}}
    rows["mean"] = {name: [round(float(np.mean([rows[c][name][k] for c in validation])), 2) for k in (0, 1)]
                    for name in ("default_test", "chosen_test", "best_test")}
    return rows


def print_comparison(title: str, rows: dict) -> None:
    """`compare`'s rows as a markdown table under `title`."""
    print(f"{title}\n| category | rho | chosen | test-best | test: config's | chosen | test-best |\n"
          "|---|---|---|---|---|---|---|")
    for category, row in rows.items():
        cells = " | ".join("{:.1f} / {:.1f}".format(*row[k]) for k in ("default_test", "chosen_test", "best_test"))
        print(f"| {category} | {row.get('rho', '')} | {row.get('chosen', '')} | {row.get('test_best', '')} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the protocol's model (TUNE_DIR/protocol)")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=list(MEMORY_WEIGHTS))
    parser.add_argument("--shares", type=float, nargs="+", default=list(SCORE_MAP_SHARES))
    parser.add_argument("--crack-contrast", type=float, nargs=2, default=list(CRACK_CONTRAST),
                        help="the validation cracks' contrast range (mala/synth/validation.py)")
    parser.add_argument("--test-figures", type=Path, help="an earlier run's JSON (same checkpoint and grid): its test "
                        "figures are kept")
    parser.add_argument("--memory-sigma", type=float, help="blur the memory's maps by this sigma (px) instead of "
                        "the model's `memory_sigma`")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info = load_trained_model(args.checkpoint)
    if args.memory_sigma is not None:
        model.cfg.memory_sigma = args.memory_sigma
    categories, samples = info["categories"], scan_roots(args.data, info["categories"])
    train = ImageCache.build(train_samples(samples), cfg.input_shape, desc="decoding training images")
    validation = validation_split(train, cfg.input_shape, VALIDATION_ANOMALIES, tuple(args.crack_contrast))[1]
    wide = candidates(model, tuple(args.weights), tuple(args.shares))
    figures = {"validation": figures_of(model, validation, categories, wide)}
    if args.test_figures is not None:
        figures["test"] = from_rows(json.loads(args.test_figures.read_text())["figures"]["test"])
    else:
        test = ImageCache.build(test_samples(samples), cfg.input_shape, desc="decoding test images")
        figures["test"] = figures_of(model, test, categories, wide)
    grids = {"mala tune's grid": candidates(model), "the wider grid": wide}
    report = {}
    for name, fusions in grids.items():
        report[name] = rows = compare(*(within(figures[split], fusions) for split in ("validation", "test")))
        print_comparison(f"{name} ({len(fusions)} candidates)", rows)
    if args.out is not None:
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "crack_contrast": args.crack_contrast,
                                        "memory_sigma": model.cfg.memory_sigma,
                                        **report, "figures": {k: as_rows(v) for k, v in figures.items()}}, indent=1))


if __name__ == "__main__":
    main()
