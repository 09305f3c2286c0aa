"""Two memories, chosen on training images only (issue 22): the anomaly map from a memory of raw tokens, which
localises better, and the image score from a memory of the same tokens layer-normed, which ranks images better
(`model.score_memory`; BENCHMARKS.md, "The memory taken apart").

    python bench/two_memories.py pick --map-run runs/fusion_pool1_raw.json \
        --score-run runs/fusion_pool1_token.json runs/fusion_pool1_token_s8.json
    python bench/two_memories.py check --checkpoint runs/split80/model.safetensors --data D/magnetic_tile ... \
        --set model.memory_norm=none model.score_memory=true ... --out runs/two_memories.json

`pick` reads runs of bench/fusion.py on the same model, for each of the two memory norms, and takes every
pair of a map candidate (from `--map-run`) and a score candidate (from `--score-run`) with the same blur (the model
has one) and radius (`model.memory_radius`, one for both memories) and weighted fusions (`model.memory_weight`,
`model.score_memory_weight`), on any two grid strides (`model.memory_stride`, `model.score_memory_stride`).
A pair's validation score is the mean of the three figures we report, on validation (bench/selection.py's
protocol: no test labels): the score candidate's image AUROC and the map candidate's pixel AUROC and AUPRO
(`--without-aupro`: the first two only, the rule before 2026-12-04, which could not tell the map's grids apart);
its test figures are the same three on the test set. Prints the best pairs by validation, the protocol's pick and
the rank correlation of validation and test (the mean of the same figures) over all pairs.

`check` builds the configuration as `mala` builds it: the trained model's memories refilled from all training
images with the `--set` memory keys (`mala.train.fill_memory`), then tested as `mala test` tests, each image in its
own category's section. With `--keep-memories` the trained memories stay as they are and `--set` may only change
what inference alone reads (`INFERENCE_KEYS`: fusion weights, blur, score kernel). Prints image / pixel AUROC and
AUPRO per category and writes them as JSON; `--save` also writes the refilled model (for `mala cost --checkpoint`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench.memory_sections import figures  # noqa: E402
from mala.checkpoint import save_checkpoint  # noqa: E402
from mala.config import MalaConfig, apply_overrides  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import category_metrics, known_sections, predict_cache  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402

CANDIDATE = re.compile(r"stride (?P<stride>\d+), radius (?P<radius>[\d.]+), sigma (?P<sigma>[\d.]+), "
                       r"weighted (?P<weight>[\d.]+), kernel (?P<kernel>\d+)")
SEED = 0
INFERENCE_KEYS = {"model.memory_weight", "model.score_memory_weight", "model.score_map_share", "model.memory_sigma",
                  "run.score_kernel"}  # what `check --keep-memories` may change: no memory depends on them


def weighted_candidates(run: dict) -> dict[str, dict]:
    """The run's weighted-fusion candidates: name -> its parts (stride, radius, sigma, weight, kernel)."""
    names = next(iter(run["figures"].values()))
    return {name: match.groupdict() for name in names if (match := CANDIDATE.fullmatch(name))}


def mean_figure(run: dict, name: str, split: str, metric: str) -> float:
    """A candidate's figure on one split, in %, the mean over the run's categories."""
    return 100 * float(np.mean([rows[name][split][metric] for rows in run["figures"].values()]))


def pairs(map_run: dict, score_run: dict, with_aupro: bool = True) -> list[dict]:
    """Every (map candidate, score candidate) of the same blur and radius, with its validation and test figures
    (image AUROC, pixel AUROC, AUPRO) and its validation score: their mean (or of the first two, not `with_aupro`)."""
    counted = 3 if with_aupro else 2
    maps, scores = weighted_candidates(map_run), weighted_candidates(score_run)
    out = []
    for (map_name, m), (score_name, s) in itertools.product(maps.items(), scores.items()):
        if (m["sigma"], m["radius"], m["kernel"]) != (s["sigma"], s["radius"], "1") or m["weight"] == "0":
            continue  # the map's kernel does not matter: one of them; weight 0 has no memory in the map
        split_figures = {split: [mean_figure(score_run, score_name, split, "image_auroc"),
                                 mean_figure(map_run, map_name, split, "pixel_auroc"),
                                 mean_figure(map_run, map_name, split, "pixel_aupro")] for split in ("validation", "test")}
        out.append({"map": map_name, "score": score_name,
                    "validation": float(np.mean(split_figures["validation"][:counted])),
                    "test_score": float(np.mean(split_figures["test"][:counted])),  # the same mean on test
                    "validation_figures": split_figures["validation"], "test": split_figures["test"]})
    return sorted(out, key=lambda pair: -pair["validation"])


def merged(paths: list[Path]) -> dict:
    """The figures and memory rows of several bench/fusion.py runs of one memory (other strides, radii or blurs) as
    one run."""
    figures: dict = {}
    rows: dict = {}
    for path in paths:
        run = json.loads(path.read_text())
        for category, candidates in run["figures"].items():
            figures.setdefault(category, {}).update(candidates)
        rows.update(run["memory"].get("rows", {}))
    return {"figures": figures, "rows": rows}


def comparisons(run: dict, candidate: str, image_size: int = 224) -> float | None:
    """Millions of (query token, memory row) distances an image costs in the candidate's memory, by its largest
    section of all training images (what the model holds; the search's cost), or None when the run has no rows."""
    parts = CANDIDATE.fullmatch(candidate)
    sections = run["rows"].get(f"stride {parts['stride']}, radius {parts['radius']}", {}).get("test")
    if not sections:
        return None
    return (image_size // int(parts["stride"])) ** 2 * max(sections.values()) / 1e6


def pair_cost(map_run: dict, score_run: dict, pair: dict) -> list[float | None]:
    """`comparisons` of the pair's map memory and score memory."""
    return [comparisons(map_run, pair["map"]), comparisons(score_run, pair["score"])]


def within(map_run: dict, score_run: dict, ranked: list[dict], most: float | None) -> list[dict]:
    """The pairs whose two searches cost at most `most` million distances an image together (all for None)."""
    if most is None:
        return ranked
    return [p for p in ranked if None not in (cost := pair_cost(map_run, score_run, p)) and sum(cost) <= most]


def pick(map_paths: list[Path], score_paths: list[Path], shown: int, with_aupro: bool, most: float | None) -> None:
    map_run, score_run = merged(map_paths), merged(score_paths)
    ranked = within(map_run, score_run, pairs(map_run, score_run, with_aupro), most)
    if not ranked:
        raise SystemExit("no pair of candidates shares a blur and radius (were both runs on the same --sigmas and "
                         "--memory-radius?) within --most-distances")
    print("| map (memory of --map-run) | score (memory of --score-run) | validation | validation: image / pixel AUROC "
          "/ AUPRO | test | distances per image, M (map + score) |\n|---|---|---|---|---|---|")
    for pair in ranked[:shown]:
        cost = pair_cost(map_run, score_run, pair)
        print(f"| {pair['map']} | {pair['score']} | {pair['validation']:.1f} | "
              + " / ".join(f"{v:.1f}" for v in pair["validation_figures"]) + " | "
              + " / ".join(f"{v:.1f}" for v in pair["test"]) + " | "
              + " + ".join("?" if c is None else f"{c:.1f}" for c in cost) + " |")
    rho = spearmanr([p["validation"] for p in ranked], [p["test_score"] for p in ranked])[0]
    print(f"the protocol's pick: map {ranked[0]['map']}; score {ranked[0]['score']}; rho over {len(ranked)} pairs "
          f"{rho:.2f}")


def refilled(trained: MALA, cfg: MalaConfig, overrides: list[str], train: ImageCache) -> tuple[MALA, MalaConfig]:
    """The trained model with its memories emptied, rebuilt by `overrides` and refilled from `train`."""
    cfg = apply_overrides(cfg, overrides)
    model = MALA(cfg.model).eval()
    kept = {k: v for k, v in trained.state_dict().items() if not k.startswith(("memory.", "score_memory."))}
    model.load_state_dict(kept, strict=False)  # stage 2's weights; the memories are filled below
    fill_memory(model, train, SEED)
    return model, cfg


def kept(model: MALA, cfg: MalaConfig, overrides: list[str]) -> tuple[MALA, MalaConfig]:
    """The trained model as it is, memories included, with `overrides` of keys that only inference reads."""
    changed = sorted({o.split("=", 1)[0] for o in overrides} - INFERENCE_KEYS)
    if changed:
        raise SystemExit(f"--keep-memories: {', '.join(changed)} change(s) the memories; "
                         f"only {', '.join(sorted(INFERENCE_KEYS))} may be set")
    cfg = apply_overrides(cfg, overrides)
    model.cfg = cfg.model
    return model, cfg


def check(checkpoint: Path, roots: list[str], overrides: list[str], out: Path, save: Path | None,
          keep_memories: bool = False) -> None:
    trained, trained_cfg, data = load_trained_model(checkpoint)
    samples = scan_roots(roots)
    train = ImageCache.build(train_samples(samples), trained_cfg.input_shape, desc="decoding training images")
    test = ImageCache.build(test_samples(samples), trained_cfg.input_shape, desc="decoding test images")
    model, cfg = (kept(trained, trained_cfg, overrides) if keep_memories
                  else refilled(trained, trained_cfg, overrides, train))
    if save is not None:  # a model file as `mala train` writes it (for `mala cost --checkpoint`)
        save_checkpoint(save, {"kind": "model", "config": cfg.to_dict(), "data": data, "model": model.state_dict()})
    sections = known_sections(test, sorted(train.indices_by_category()))
    results = category_metrics(test, predict_cache(model, test, cfg, sections=sections))  # with its mean rows
    rows = {category: figures(row) for category, row in results.items()}
    memory_rows = {"memory": len(model.memory.tokens),
                   "score_memory": None if model.score_memory is None else len(model.score_memory.tokens)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": str(checkpoint), "data": roots, "overrides": overrides,
                               "memory_rows": memory_rows, "results": rows}, indent=1))
    print("| category | image / pixel AUROC / AUPRO |\n|---|---|")
    for category, row in rows.items():
        print(f"| {category} | " + " / ".join(f"{v:.1f}" for v in row) + " |")
    print(f"memory rows: {memory_rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    picking = commands.add_parser("pick", help="the protocol's pick of (map memory, score memory) settings")
    picking.add_argument("--map-run", type=Path, nargs="+", required=True,
                         help="bench/fusion.py's JSON (one or more) for the map's memory")
    picking.add_argument("--score-run", type=Path, nargs="+", required=True, help="the same for the score's memory")
    picking.add_argument("--shown", type=int, default=8)
    picking.add_argument("--most-distances", type=float,
                         help="only pairs of at most this many million distances an image (the speed budget)")
    picking.add_argument("--without-aupro", action="store_true",
                         help="validate on image and pixel AUROC only (the rule before 2026-12-04)")
    checking = commands.add_parser("check", help="a trained model with its memories refilled by --set, tested")
    checking.add_argument("--checkpoint", type=Path, required=True)
    checking.add_argument("--data", nargs="+", required=True)
    checking.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE")
    checking.add_argument("--out", type=Path, required=True)
    checking.add_argument("--save", type=Path, help="also write the refilled model here")
    checking.add_argument("--keep-memories", action="store_true",
                          help="do not refill: the trained memories as they are, --set only of inference keys")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.command == "pick":
        pick(args.map_run, args.score_run, args.shown, not args.without_aupro, args.most_distances)
    else:
        check(args.checkpoint, args.data, args.overrides, args.out, args.save, args.keep_memories)


if __name__ == "__main__":
    main()
