"""How well does a trained model route test images to their category's memory section, by the shipped rule and by
others? (issue 22, item 1: "report the routing accuracy on every test set".)

    python bench/routing_rules.py runs/s14_seed0 --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        ../shared/data/deeppcb ../shared/data/pv_el_cells

Rules, each an image feature compared with every training image's by cosine similarity (the category of the nearest
wins, as `FeatureMemory.route`), or the memory's own distances:
- `mean token` (shipped): the unit-length mean of the map memory's tokens;
- `median token`, `trimmed mean 25-75 %`: the same pooled robustly, so that a large defect moves the feature less;
- `mean of stage S channels`: the mean token of one backbone stage's channels only;
- `mean score token`: the mean of the score memory's layer-normed tokens;
- `median distance`: the section whose memory explains the image best: the median, over 49 of the image's map tokens
  (every 4th row and column), of their nearest distance in the section divided by its scale.

Prints, per category, the share routed right, of all test images and of the anomalous ones. The training images'
features are computed here (the checkpoint stores only the mean tokens'). Outcome figures: choose no rule by them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mala.data.dataset import ImageCache, to_tensor  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.train.trainer import MODEL_FILE  # noqa: E402

Pool = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (map tokens, score tokens) (B, N, C) -> features (B, D)


def trimmed_mean(tokens: torch.Tensor, low: float = 0.25, high: float = 0.75) -> torch.Tensor:
    """Per channel, the mean of the tokens between two quantiles (B, N, C) -> (B, C)."""
    ordered, count = tokens.sort(dim=1).values, tokens.shape[1]
    return ordered[:, int(low * count):int(high * count)].mean(dim=1)


def pools(model: MALA) -> dict[str, Pool]:
    """Every feature rule, by name."""
    stages, widths = model.cfg.backbone_stages, [model.feature_tokens.backbone.stage_channels(s)
                                                 for s in model.cfg.backbone_stages]
    ends = np.cumsum([0] + widths)
    rules: dict[str, Pool] = {"mean token (shipped)": lambda t, _: t.mean(dim=1),
                              "median token": lambda t, _: t.median(dim=1).values,
                              "trimmed mean 25-75 %": lambda t, _: trimmed_mean(t)}
    for stage, start, end in zip(stages, ends[:-1], ends[1:]):
        rules[f"mean of stage {stage} channels"] = lambda t, _, a=int(start), b=int(end): t[..., a:b].mean(dim=1)
    if model.score_memory is not None:
        rules["mean score token"] = lambda _, s: s.mean(dim=1)
    return rules


@torch.no_grad()
def features(model: MALA, cache: ImageCache, rules: dict[str, Pool], batch: int = 16
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each rule's unit-length feature of every cached image, and each image's `median distance` per section."""
    found: dict[str, list[torch.Tensor]] = {name: [] for name in rules}
    distances = []
    rows, columns = model.memory_grid
    for start in range(0, len(cache.images), batch):
        images = torch.stack([to_tensor(image) for image in cache.images[start:start + batch]])
        _, tokens, score_tokens = model.logits_and_features(images)
        for name, pool in rules.items():
            found[name].append(F.normalize(pool(tokens.float(), score_tokens), dim=-1))
        sample = tokens.reshape(len(images), rows, columns, -1)[:, 2::4, 2::4].flatten(1, 2)
        memory = model.memory
        distances.append(torch.stack([memory.nearest_distance(sample, k).median(dim=1).values / memory.scales[k]
                                      for k in range(memory.section_count)], dim=1))
    return {name: torch.cat(parts) for name, parts in found.items()}, torch.cat(distances)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a trained run folder (or its model file)")
    parser.add_argument("--data", nargs="+", required=True, help="the data it trained on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, data = load_trained_model(args.run / MODEL_FILE if args.run.is_dir() else args.run)
    model.eval()
    categories = data["categories"]
    samples = scan_roots(args.data)
    train, test = (ImageCache.build(pick(samples), cfg.input_shape, desc=desc)
                   for pick, desc in ((train_samples, "decoding training images"), (test_samples, "decoding test images")))
    rules = pools(model)
    train_features, _ = features(model, train, rules)
    test_features, test_distances = features(model, test, rules)
    train_places = torch.tensor([categories.index(s.category) for s in train.samples])
    truth = torch.tensor([categories.index(s.category) for s in test.samples])
    anomalous = torch.tensor([bool(s.label) for s in test.samples])
    routed = {name: train_places[(test_features[name] @ train_features[name].T).argmax(dim=1)] for name in rules}
    routed["median distance"] = test_distances.argmin(dim=1)
    print("| rule | " + " | ".join(categories) + " | all |")
    print("|---|" + "---|" * (len(categories) + 1))
    for name, places in routed.items():
        right = places == truth
        cells = [f"{100 * right[truth == k].float().mean():.1f} ({100 * right[(truth == k) & anomalous].float().mean():.1f})"
                 for k in range(len(categories))]
        print(f"| {name} | " + " | ".join(cells) + f" | {100 * right.float().mean():.2f} |")


if __name__ == "__main__":
    main()
