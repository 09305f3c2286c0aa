"""Would `mala tune` do better choosing each category's memory blur too? Merges `bench/tune_check.py` runs on one
protocol model, each with another `--memory-sigma` (the first: the model's own), into one grid of (sigma, fusion)
candidates of `mala tune`'s weights and shares, and prints per category what the protocol picks among them and
what the test (outcome only) says, beside the pick at the model's sigma alone.

    python bench/tune_check.py --checkpoint runs/tune_seed0/tune/protocol $DATA --memory-sigma 2 \
        --out runs/tune_check_sigma2_seed0.json                                           # and 4
    python bench/blur_check.py runs/tune_check_seed0.json runs/tune_check_sigma2_seed0.json \
        runs/tune_check_sigma4_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tune_check import compare, from_rows, print_comparison  # noqa: E402
from mala.tune.protocol import MEMORY_WEIGHTS, SCORE_MAP_SHARES, CategoryChoice  # noqa: E402


def blurred_grid(runs: list[dict], split: str) -> dict[str, CategoryChoice]:
    """Per category, the candidates of `mala tune`'s grid of every run, named by sigma and fusion, the first run's first
    candidate (the model's own sigma and the config's fusion) first."""
    per_run = [(run.get("memory_sigma", 0.0), from_rows(run["figures"][split])) for run in runs]
    return {category: CategoryChoice({f"sigma {sigma:g}, {fusion}": figures for sigma, choices in per_run
                                      for fusion, figures in choices[category].validation.items()
                                      if fusion.memory_weight in MEMORY_WEIGHTS
                                      and fusion.score_map_share in SCORE_MAP_SHARES})
            for category in per_run[0][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="tune_check.py JSON files, the model's own sigma first")
    runs = [json.loads(path.read_text()) for path in parser.parse_args().runs]
    for name, chosen_from in (("the model's sigma only", runs[:1]), ("every sigma", runs)):
        print_comparison(name, compare(*(blurred_grid(chosen_from, split) for split in ("validation", "test"))))


if __name__ == "__main__":
    main()
