"""Could each category's image score be chosen on training images too? (issue 22, items 2 and 3.) The image score is
the maximum of the stage-2 map fused with the score memory's map (`score_memory_weight` of it, stride 16); here the
memory part may also take a share of the stride-8 memory's distances. On the protocol's model (`mala tune`'s, trained
on 80 % of each category's images), every candidate's image AUROC per category on the protocol's validation images
(the held-out 20 %, each also with a small synthetic defect) and on the test set (outcome only), with the rank
correlation of the two and the test AUROC of the config's score, of the protocol's pick and of the test-best.

    python bench/score_check.py --checkpoint runs/tune_seed0/tune/protocol \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --out runs/score_check_seed0.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench.position_memory import protocol_splits  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.eval.metrics import auroc  # noqa: E402
from mala.model.maps import fuse_maps, image_score, mixed_distance_map  # noqa: E402
from mala.tune.protocol import part_of, validation_parts  # noqa: E402

WEIGHTS = (0.5, 0.75, 0.9, 1.0)  # of the memory part in the score's map
FINE_SHARES = (0.0, 0.5)  # of the stride-8 distances in the memory part


def score_auroc(model, cache: ImageCache, parts, weight: float, fine_share: float, kernel: int) -> dict[str, float]:
    """Per category: the image AUROC (%) of the score max((1 - weight) x stage-2 map + weight x memory map)."""
    size, sigma, figures = model.image_shape, model.cfg.memory_sigma, {}
    for category, indices in cache.indices_by_category().items():
        part = part_of(parts, indices)
        remembered = mixed_distance_map([(part.distance, fine_share), (part.score_distance, 1 - fine_share)], size,
                                        sigma)
        scores = image_score(fuse_maps(part.learned, remembered, weight), kernel)
        labels = np.array([cache.samples[i].label for i in indices])
        figures[category] = 100 * auroc(labels, scores.numpy())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the protocol's model (TUNE_DIR/protocol)")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, categories, _, splits = protocol_splits(args.checkpoint, args.data)
    config_score = (cfg.model.score_memory_weight, 0.0)
    grid = [config_score] + [c for c in itertools.product(WEIGHTS, FINE_SHARES) if c != config_score]
    figures = {}
    for name, cache in splits.items():
        parts = validation_parts(model, cache, known_sections(cache, categories))
        figures[name] = {f"{w:g}/{s:g}": score_auroc(model, cache, parts, w, s, cfg.run.score_kernel) for w, s in grid}
    report = {}
    print("| category | rho | config's: test | pick: which, test | test-best: which, test |\n|---|---|---|---|---|")
    for category in figures["test"][next(iter(figures["test"]))]:
        keys = list(figures["test"])
        validation = [figures["validation"][k][category] for k in keys]
        test = [figures["test"][k][category] for k in keys]
        pick, best = keys[int(np.argmax(validation))], keys[int(np.argmax(test))]
        rho = float(spearmanr(validation, test)[0])
        report[category] = {"rho": round(rho, 2), "config": test[0], "pick": pick,
                            "pick_test": figures["test"][pick][category], "best": best, "best_test": max(test)}
        print(f"| {category} | {rho:.2f} | {test[0]:.1f} | {pick}: {report[category]['pick_test']:.1f} | "
              f"{best}: {max(test):.1f} |")
    means = {k: float(np.mean([report[c][k] for c in report])) for k in ("config", "pick_test", "best_test")}
    print("| mean | | {config:.1f} | {pick_test:.1f} | {best_test:.1f} |".format(**means))
    args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "grid": [list(g) for g in grid],
                                    "figures": figures, "report": report, "mean": means}, indent=1))


if __name__ == "__main__":
    main()
