"""A run's tuning done again, as `mala train` does it, into a copy of its model: the memory refilled from the 80 % its
stage 2 trained on, the held-out 20 % (each also with a small synthetic defect) mapped, each category's fusion and
mirror views chosen (`mala.engine.tune_sections`), then the copy takes the picks and the levels (the same weights and
memories otherwise). For runs trained before a tuning setting existed: `--set run.mirror_gflops=13` gives a run of
the old `tiny` the mirror views of today's. `mala test` on the copy gives the outcome.

    python bench/retune.py runs/s15_seed0 runs/s15_seed0_mirrors --data D/magnetic_tile D/metal_plate D/deeppcb \
        D/pv_el_cells --set run.mirror_gflops=13
    mala test --checkpoint runs/s15_seed0_mirrors --data ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.run_validation import refilled_model  # noqa: E402
from mala.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mala.config import apply_overrides  # noqa: E402
from mala.engine import tune_sections  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run that tuned in training")
    parser.add_argument("out", type=Path, help="folder for the copy's model file and the tuning report")
    parser.add_argument("--data", nargs="+", required=True, help="the data the run trained on, all of it")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run.* settings the tuning reads, and model.memory_search, as `mala train --set` "
                        "takes them")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info, validation = refilled_model(args.run, args.data)
    cfg = apply_overrides(cfg, args.overrides)
    model.set_memory_search(cfg.model.memory_search)
    choices, tuning = tune_sections(model, validation, info["categories"], cfg, args.out / "tune")
    state = load_checkpoint(args.run / MODEL_FILE)
    tuning.store(state["model"])
    state["config"] = cfg.to_dict()  # the copy says what it was tuned with
    save_checkpoint(args.out / MODEL_FILE, state)
    print(f"{args.out / MODEL_FILE}: " + "; ".join(f"{c} {choice.chosen}" for c, choice in choices.items()))


if __name__ == "__main__":
    main()
