"""Does a memory that knows WHERE a normal token lies map better? (issue 22, targets.) Each memory token is joined by
its place on the grid, weighted: distance^2 = |feature - feature'|^2 + (lam x s)^2 |place - place'|^2, with `s` the
category's normal scale and places in [0, 1] across the image (lam 0: today's memory). A dark patch in the middle of
a solar cell is then far from the dark border it resembles; a piece of board pasted where it does not belong is far
from where it does.

On the protocol's model (trained on 80 % of each category's training images, `mala tune`'s split), per category and
lam: the stride-8 memory refilled from those 80 % (scale and epsilon-net of the joined tokens, as `fill_memory`), its
distances put into the map parts, and every fusion of `mala tune` scored on the protocol's validation images (small
synthetic defects on the held-out 20 %) and on the test set (outcome only). The image score does not read this
memory, so only the pixel figures move. `--radius` refills with another epsilon-net radius (in units of the normal
scale) than the model's.

    python bench/position_memory.py --checkpoint runs/tune_seed0/tune/protocol \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --out runs/position_seed0.json
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
from mala.data.samples import category_seed  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.memory import FeatureMemory  # noqa: E402
from mala.train.fill_memory import category_section, held_out_scale, normal_feature_tokens, random_rows  # noqa: E402
from mala.tune.protocol import VALIDATION_ANOMALIES, candidates, choose_fusion, validation_parts  # noqa: E402
from mala.tune.split import validation_split  # noqa: E402

LAMS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)


def grid_places(grid: tuple[int, int]) -> torch.Tensor:
    """(rows x columns, 2) each token's centre, row and column in [0, 1]."""
    rows, columns = grid
    r = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows
    c = (torch.arange(columns, dtype=torch.float32) + 0.5) / columns
    return torch.stack(torch.meshgrid(r, c, indexing="ij"), dim=-1).reshape(-1, 2)


def joined(tokens: torch.Tensor, places: torch.Tensor, weight: float) -> torch.Tensor:
    """Tokens (images, N, C) with their places x `weight` as two more channels."""
    return torch.cat([tokens, (weight * places).expand(len(tokens), -1, -1)], dim=-1)


def category_distances(fit_tokens, queries: dict[str, torch.Tensor], places, lam: float, base_scale: float,
                       radius: float, section_size: int, seed: int, category: str
                       ) -> tuple[dict[str, torch.Tensor], int]:
    """Scaled nearest distances (images, N) of each query set to a memory section of the joined fit tokens, built
    as `fill_memory` builds one (`category_section`, cut to `section_size` rows by `random_rows`), and its rows."""
    rng = np.random.default_rng([seed, category_seed(category)])
    fit = joined(fit_tokens, places, lam * base_scale)
    section = category_section(fit, fit.shape[1], radius, rng, seed)
    if section_size and len(section.tokens) > section_size:
        section = random_rows(section, section_size, rng)
    memory = FeatureMemory(fit.shape[-1])
    memory.fill(section.tokens, section.scale)
    return ({name: memory.scaled_distance(joined(q, places, lam * base_scale), 0) for name, q in queries.items()},
            len(section.tokens))


def protocol_splits(checkpoint: Path, data: list[str]):
    """The protocol's model with its config and categories, the images it was trained on (80 % of each category's),
    and the caches it is scored on: "validation" (the held-out 20 %, each also with a small synthetic defect) and
    "test"."""
    model, cfg, info = load_trained_model(checkpoint)
    train = ImageCache.build(train_samples(samples := scan_roots(data)), cfg.input_shape,
                             desc="decoding training images")
    fit, validation = validation_split(train, cfg.input_shape, VALIDATION_ANOMALIES)
    test = ImageCache.build(test_samples(samples), cfg.input_shape, desc="decoding test images")
    return model, cfg, info["categories"], fit, {"validation": validation, "test": test}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the protocol's model (TUNE_DIR/protocol)")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--lams", type=float, nargs="+", default=list(LAMS))
    parser.add_argument("--radius", type=float, help="the epsilon-net's radius in units of the normal scale "
                        "(default: the model's `memory_radius`)")
    parser.add_argument("--section-size", type=int, default=40_000, help="rows kept a section at most (`tiny`'s "
                        "memory_section_size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, categories, fit, splits = protocol_splits(args.checkpoint, args.data)
    parts = {name: validation_parts(model, cache, known_sections(cache, categories)) for name, cache in splits.items()}
    grid, places = model.memory_grid, grid_places(model.memory_grid)
    distances = {lam: {name: p.distance.clone() for name, p in parts.items()} for lam in args.lams}
    radius = cfg.model.memory_radius if args.radius is None else args.radius
    by_category = {name: cache.indices_by_category() for name, cache in splits.items()}
    sizes: dict[str, dict[float, int]] = {}
    for category, indices in fit.indices_by_category().items():
        fit_tokens = normal_feature_tokens(model, fit, indices, desc=f"fit: {category}")[0]
        in_splits = {name: rows[category] for name, rows in by_category.items()}
        queries = {name: normal_feature_tokens(model, splits[name], rows, desc=f"{name}: {category}")[0]
                   for name, rows in in_splits.items()}
        base_scale = held_out_scale(fit_tokens, np.random.default_rng(0))
        sizes[category] = {}
        for lam in args.lams:
            found, sizes[category][lam] = category_distances(
                fit_tokens, queries, places, lam, base_scale, radius, args.section_size, cfg.run.seed, category)
            for name, rows in in_splits.items():
                distances[lam][name][torch.from_numpy(rows)] = found[name].reshape(len(rows), 1, *grid)
            print(f"{category} lam {lam:g}: {sizes[category][lam]} tokens", flush=True)
    fusions = candidates(model)
    figures = {}
    for lam in args.lams:
        for name, cache in splits.items():
            parts[name].distance = distances[lam][name]
            choices = choose_fusion(model, cache, parts[name], fusions)
            for category, choice in choices.items():
                for fusion, (auroc, aupro) in choice.validation.items():
                    figures.setdefault(category, []).append(
                        {"lam": lam, "split": name, "weight": fusion.memory_weight, "share": fusion.score_map_share,
                         "pixel_auroc": auroc, "aupro": aupro})
    report = summarise(figures)
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "sizes": sizes, "figures": figures,
                                    "report": report}, indent=1))


def summarise(figures: dict[str, list[dict]]) -> dict:
    """Per category: the protocol's pick among (lam, fusion) and among fusions at lam 0, their test figures, the
    test-best, and rho of validation and test over all candidates."""
    report, lines = {}, ["| category | pick at lam 0: test | pick over lam: which, test | test-best | rho |",
                         "|---|---|---|---|---|"]
    for category, rows in figures.items():
        keyed = {(r["lam"], r["weight"], r["share"], r["split"]): (r["pixel_auroc"], r["aupro"]) for r in rows}
        keys = sorted({k[:3] for k in keyed})

        def score(key, split):
            return sum(keyed[(*key, split)]) / 2

        pick0 = max((k for k in keys if k[0] == 0), key=lambda k: score(k, "validation"))
        pick = max(keys, key=lambda k: score(k, "validation"))
        best = max(keys, key=lambda k: score(k, "test"))
        rho = float(spearmanr([score(k, "validation") for k in keys], [score(k, "test") for k in keys])[0])
        report[category] = {"pick0": [*pick0, *keyed[(*pick0, "test")]], "pick": [*pick, *keyed[(*pick, "test")]],
                            "best": [*best, *keyed[(*best, "test")]], "rho": round(rho, 2)}
        lines.append(f"| {category} | {keyed[(*pick0, 'test')][0]:.1f} / {keyed[(*pick0, 'test')][1]:.1f} | "
                     f"lam {pick[0]:g} w {pick[1]:g} s {pick[2]:g}: {keyed[(*pick, 'test')][0]:.1f} / "
                     f"{keyed[(*pick, 'test')][1]:.1f} | lam {best[0]:g}: {keyed[(*best, 'test')][0]:.1f} / "
                     f"{keyed[(*best, 'test')][1]:.1f} | {rho:.2f} |")
    for name in ("pick0", "pick", "best"):
        report.setdefault("mean", {})[name] = [round(float(np.mean([report[c][name][k] for c in figures])), 2)
                                               for k in (3, 4)]
    lines.append("| mean | {:.1f} / {:.1f} | {:.1f} / {:.1f} | {:.1f} / {:.1f} | |".format(
        *report["mean"]["pick0"], *report["mean"]["pick"], *report["mean"]["best"]))
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
