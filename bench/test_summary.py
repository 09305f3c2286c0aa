"""The test figures of trained runs side by side (`mala test` writes `RUN/test/metrics.json`): per category image /
pixel AUROC / AUPRO, and the mean over categories. A column may join several runs (one model per category, say):
`name=RUN,RUN,...`; each category is read from the run that tested it.

    python bench/test_summary.py one=runs/s14_seed0 alone=runs/alone_metal_plate,runs/alone_pcb
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = ("image_auroc", "pixel_auroc", "pixel_aupro")


def category_figures(runs: list[Path]) -> dict[str, tuple[float, ...]]:
    """Per category, its image / pixel AUROC / AUPRO in percent, from each run's test metrics."""
    figures = {}
    for run in runs:
        metrics = json.loads((run / "test" / "metrics.json").read_text())["metrics"]
        figures |= {category: tuple(100 * row[name] for name in FIGURES) for category, row in metrics.items()
                    if not category.endswith("mean") and "image_auroc" in row}  # not a dataset's or all's mean
    return figures


def column(spec: str) -> tuple[str, list[Path]]:
    """`name=RUN,RUN` (or a single RUN, named by its folder) to the column's name and runs."""
    name, _, runs = spec.rpartition("=")
    paths = [Path(run) for run in runs.split(",")]
    return name or paths[0].name, paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("columns", nargs="+", help="RUN or name=RUN,RUN,...")
    args = parser.parse_args()
    table = {name: category_figures(runs) for name, runs in map(column, args.columns)}
    categories = sorted(set().union(*table.values()))
    print("| category | " + " | ".join(table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for category in categories:
        cells = [" / ".join(f"{v:.1f}" for v in figures[category]) if category in figures else "-"
                 for figures in table.values()]
        print(f"| {category} | " + " | ".join(cells) + " |")
    means = []
    for figures in table.values():
        rows = [figures[c] for c in categories if c in figures]
        means.append(" / ".join(f"{sum(r[k] for r in rows) / len(rows):.2f}" for k in range(len(FIGURES))))
    print("| **mean** | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
