"""The validation figures of runs that tuned in training (`run.tune`), side by side: per category, the protocol's
score (mean of validation pixel AUROC and AUPRO) of the fusion each run chose, and the mean over categories. Runs
that differ in one training setting (epochs, say) are ranked by it without a test label (issue 22, item 3).

    python bench/tuning_summary.py runs/ep40_seed0 runs/held_seed0 runs/ep100_seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def chosen_scores(run: Path) -> dict[str, float]:
    """Per category: the validation score of the run's chosen fusion (`RUN/tune/tuning.json`)."""
    tuning = json.loads((run / "tune" / "tuning.json").read_text())
    scores = {}
    for category, entry in tuning.items():
        chosen = entry["chosen"]
        row = next(c for c in entry["candidates"] if all(c.get(k, 0.0) == v for k, v in chosen.items()))
        scores[category] = (row["pixel_auroc"] + row["pixel_aupro"]) / 2
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    table = {run.name: chosen_scores(run) for run in args.runs}
    categories = list(next(iter(table.values())))
    print("| category | " + " | ".join(table) + " |\n|---|" + "---|" * len(table))
    for category in categories:
        print(f"| {category} | " + " | ".join(f"{scores[category]:.2f}" for scores in table.values()) + " |")
    print("| **mean** | " + " | ".join(f"**{sum(s.values()) / len(s):.2f}**" for s in table.values()) + " |")


if __name__ == "__main__":
    main()
