"""Leave one dataset out (issue 22, item 3): would a setting chosen on the other datasets hold on one nobody looked
at? Reads the per-category candidate figures that the selection benches wrote (validation on training images and
test as the outcome) and, holding each dataset out in turn, compares how its test scores the candidate that each rule
picks without looking at it:

- `others' test`: best on the other datasets' test sets (how `tiny`'s first defaults were chosen);
- `others' validation`: best on the other datasets' validation (one setting for all, chosen on training images);
- `own validation`: best on the held-out dataset's own validation, per category (what `mala tune` does);
- `test-best`: best on the held-out test itself, per category (out of reach: the ceiling).

Scores are the bench's protocol score (mean of the named metrics, in %), per category, averaged over the held-out
dataset's categories and then over the held-out datasets; regret = test-best minus the rule's.

    python bench/leave_one_out.py runs/map_scales_small.json --metrics pixel_auroc pixel_aupro
    python bench/leave_one_out.py runs/position_seed0.json
    python bench/leave_one_out.py runs/tune_check_sigma0_seed0.json runs/tune_check_sigma2_seed0.json \
        runs/tune_check_sigma4_seed0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# The category -> dataset grouping of `../shared/data`: the two solar-cell sets come from one source and are held out
# together.
DATASETS = {"el_mono": "pv_el_cells", "el_multi": "pv_el_cells", "pcb": "deeppcb"}
SPLITS = ("validation", "test")

Table = dict[str, dict[str, dict[str, float]]]  # category -> candidate -> split -> score (%)


def from_named_figures(figures: dict, metrics: list[str]) -> Table:
    """`map_scales.py` / `fusion.py`: category -> candidate -> split -> metric (fraction)."""
    return {category: {name: {split: 100 * float(np.mean([row[split][m] for m in metrics])) for split in SPLITS}
                       for name, row in candidates.items()} for category, candidates in figures.items()}


def from_position_rows(figures: dict) -> Table:
    """`position_memory.py`: category -> rows of (lam, split, weight, share, pixel_auroc, aupro) in %."""
    table: Table = {}
    for category, rows in figures.items():
        for row in rows:
            name = f"lam {row['lam']:g}, w {row['weight']:g}, share {row['share']:g}"
            table.setdefault(category, {}).setdefault(name, {})[row["split"]] = (row["pixel_auroc"] + row["aupro"]) / 2
    return table


def from_tune_rows(figures: dict, sigma: float) -> Table:
    """`tune_check.py`, `wider_fusion.py`: split -> category -> rows of (weight, share[, global share], pixel AUROC,
    AUPRO) in %, at one memory blur."""
    table: Table = {}
    for split in SPLITS:
        for category, rows in figures[split].items():
            for *fusion, pixel, aupro in rows:
                name = f"sigma {sigma:g}, " + ", ".join(f"{value:g}" for value in fusion)
                table.setdefault(category, {}).setdefault(name, {})[split] = (pixel + aupro) / 2
    return table


def from_score_check(figures: dict) -> Table:
    """`score_check.py`: split -> candidate -> category -> image AUROC (%)."""
    table: Table = {}
    for split in SPLITS:
        for name, per_category in figures[split].items():
            for category, value in per_category.items():
                table.setdefault(category, {}).setdefault(name, {})[split] = value
    return table


def load(path: Path, metrics: list[str]) -> Table:
    """One bench file's candidates, recognised by its layout."""
    run = json.loads(path.read_text())
    figures = run["figures"]
    if "memory_sigma" in run:
        return from_tune_rows(figures, run["memory_sigma"])
    if set(figures) == set(SPLITS):
        return from_score_check(figures)
    first = next(iter(figures.values()))
    return from_position_rows(figures) if isinstance(first, list) else from_named_figures(figures, metrics)


def merged(tables: list[Table]) -> Table:
    """The candidates of several files on one model, side by side (their names must differ)."""
    joined: Table = {}
    for table in tables:
        for category, candidates in table.items():
            joined.setdefault(category, {}).update(candidates)
    return joined


def best(table: Table, categories: list[str], split: str) -> str:
    """The candidate with the best mean `split` score over `categories` (the first of equals)."""
    names = list(table[categories[0]])
    return max(names, key=lambda name: np.mean([table[c][name][split] for c in categories]))


def held_out_scores(table: Table) -> dict[str, dict[str, float]]:
    """Per held-out dataset: the mean test score of its categories under each rule."""
    by_dataset: dict[str, list[str]] = {}
    for category in table:
        by_dataset.setdefault(DATASETS.get(category, category), []).append(category)
    results = {}
    for dataset, held in by_dataset.items():
        others = [c for c in table if c not in held]
        picks = {"others' test": {c: best(table, others, "test") for c in held},
                 "others' validation": {c: best(table, others, "validation") for c in held},
                 "own validation": {c: best(table, [c], "validation") for c in held},
                 "test-best": {c: best(table, [c], "test") for c in held}}
        results[dataset] = {rule: float(np.mean([table[c][pick[c]]["test"] for c in held]))
                            for rule, pick in picks.items()}
    return results


def report(results: dict[str, dict[str, float]]) -> str:
    """Markdown: per held-out dataset, each rule's test score; the mean and the mean regret."""
    rules = list(next(iter(results.values())))
    lines = ["| held out | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for dataset, scores in results.items():
        lines.append(f"| {dataset} | " + " | ".join(f"{scores[r]:.2f}" for r in rules) + " |")
    means = {r: np.mean([s[r] for s in results.values()]) for r in rules}
    lines.append("| **mean** | " + " | ".join(f"**{means[r]:.2f}**" for r in rules) + " |")
    lines.append("| regret | " + " | ".join(f"{means['test-best'] - means[r]:.2f}" for r in rules) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="bench JSON files of one model (merged if several)")
    parser.add_argument("--metrics", nargs="+", default=["pixel_auroc", "pixel_aupro"],
                        help="for map_scales.py / fusion.py files: the metrics whose mean is the score")
    args = parser.parse_args()
    table = merged([load(path, args.metrics) for path in args.runs])
    print(f"{len(next(iter(table.values())))} candidates, {len(table)} categories")
    print(report(held_out_scores(table)))


if __name__ == "__main__":
    main()
