"""Does a feature-reconstruction map earn a place beside the memory? (issue 22, item 4.) Two networks: Dinomaly's
kind (local: a noisy bottleneck per token, then linear attention) and EfficientAD's autoencoder (global: the whole
token grid through a 1 x 1 latent, so what is normal only in another arrangement, a missing or misplaced part, cannot
come back).

On `mala tune`'s protocol model (`TUNE_DIR/protocol`: stage 2 and both memories of 80 % of each category's normal
training images), the network, trained on those same 80 % only (no synthetic anomalies), reconstructs the memory's
raw backbone tokens (stride 8), with a cosine loss (one network for all categories; Dinomaly's: no loose grouping, no
hard mining; EfficientAD's: no student, the autoencoder's own error is the map). Its map is 1 - cos per token, in
units of its category's 99 % quantile on those images. Every candidate map is then scored on the protocol's
validation images (held-out normals with small synthetic defects, and with `--anomalies large small` also a
self-texture or another image's pasted rectangle: `mala tune`'s score, mean of pixel AUROC and AUPRO) and on the
real test sets (outcome only), per category:

    python bench/feature_reconstruction.py --checkpoint runs/tune_seed0/tune/protocol \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --out runs/reconstruction_seed0.json
    python bench/feature_reconstruction.py ... --network autoencoder --anomalies large small \
        --out runs/autoencoder_seed0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from torch import nn  # noqa: E402

from mala.data.dataset import ImageCache, to_tensor  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.eval.metrics import compute_metrics  # noqa: E402
from mala.model.global_map import GlobalAutoencoder  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.maps import distance_map, fuse_maps, image_score  # noqa: E402
from mala.model.vit import Mlp, sincos_pos_embed  # noqa: E402
from mala.progress import progress  # noqa: E402
from mala.tune.protocol import VALIDATION_ANOMALIES, candidates, validation_parts  # noqa: E402
from mala.tune.split import VALIDATION_KINDS, validation_split  # noqa: E402

QUANTILE = 0.99


class LinearAttention(nn.Module):
    """Attention with the elu + 1 kernel (Dinomaly's "unfocused" attention: it cannot copy one token through)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        context = k.transpose(-2, -1) @ v  # (B, heads, d, d)
        normaliser = q @ k.sum(dim=2, keepdim=True).transpose(-2, -1)  # (B, heads, N, 1)
        out = (q @ context) / normaliser.clamp_min(1e-6)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class LinearBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.mlp = LinearAttention(dim, num_heads), Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FeatureReconstructor(nn.Module):
    """Standardised tokens (B, N, C) -> their reconstruction, through a dropout bottleneck and linear attention."""

    def __init__(self, channels: int, grid: tuple[int, int], dim: int, depth: int, dropout: float):
        super().__init__()
        self.bottleneck = nn.Sequential(nn.Linear(channels, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                        nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.register_buffer("pos_embed", sincos_pos_embed(dim, grid, with_cls_token=False))
        self.blocks = nn.ModuleList(LinearBlock(dim, 4) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(tokens) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def token_errors(net: nn.Module, tokens: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """1 - cos of each token (B, N) and its reconstruction."""
    net.eval()
    with torch.no_grad():
        return torch.cat([1 - F.cosine_similarity(net(chunk), chunk, dim=-1) for chunk in tokens.split(batch_size)])


def train(net: nn.Module, tokens: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int
          ) -> list[float]:
    """AdamW with a cosine schedule on random batches of standardised tokens; the loss per 100 steps."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    losses, running = [], []
    net.train()
    for step in progress(range(steps), desc="reconstruction training", unit="step"):
        batch = tokens[torch.randint(len(tokens), (batch_size,), generator=generator)]
        loss = (1 - F.cosine_similarity(net(batch), batch, dim=-1)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0:
            losses.append(float(np.mean(running)))
            running = []
    return losses


@torch.no_grad()
def memory_tokens(model, cache: ImageCache, batch_size: int = 16) -> torch.Tensor:
    """The memory's raw tokens (B, N, C) of every image of `cache`."""
    out = []
    for start in progress(range(0, len(cache.samples), batch_size), desc="backbone tokens", unit="batch"):
        images = torch.stack([to_tensor(image) for image in cache.images[start:start + batch_size]])
        out.append(model.memory_features(images))
    return torch.cat(out)


GLOBAL_SHARES = (0.5,)  # of the reconstruction map in the stage-2 map's place: (1 - g) x stage 2 + g x it


def candidate_maps(model, parts, reconstructed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every candidate anomaly map (B, H, W) from the protocol model's parts and the reconstruction map: `mala tune`'s
    grid as it is ("tune: ..."), the same grid with the stage-2 map shared with the reconstruction ("tune + global
    g: ..."), and the maps alone or in pairs."""
    size, cfg = model.image_shape, model.cfg
    memory = distance_map(parts.distance, size, cfg.memory_sigma)
    recon = reconstructed
    maps = {}
    for fusion in candidates(model):
        maps[f"tune: {fusion}"] = model.fused_maps(parts, fusion.memory_weight, fusion.score_map_share)[:, 0]
    for g, fusion in itertools.product(GLOBAL_SHARES, candidates(model)):
        shared = dataclasses.replace(parts, learned=(1 - g) * parts.learned + g * recon)
        maps[f"tune + global {g:g}: {fusion}"] = model.fused_maps(shared, fusion.memory_weight,
                                                                  fusion.score_map_share)[:, 0]
    maps |= {"memory alone": memory, "stage-2 map alone": parts.learned, "reconstruction alone": recon}
    for w in (0.5, 0.75):
        maps[f"reconstruction + memory, w {w}"] = fuse_maps(recon, memory, w)
    return maps


def figures(cache: ImageCache, maps: dict[str, torch.Tensor]) -> dict[str, dict[str, list[float]]]:
    """Per category and candidate: image AUROC (the map's maximum), pixel AUROC, AUPRO."""
    out = {}
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        masks = np.stack([cache.mask(i) for i in indices])
        out[category] = {}
        for name, anomaly in maps.items():
            chosen = anomaly[torch.from_numpy(indices)]
            row = compute_metrics(labels, image_score(chosen, 1).numpy(), masks, chosen.numpy())
            out[category][name] = [round(100 * row[k], 2) for k in ("image_auroc", "pixel_auroc", "pixel_aupro")]
    return out


def kind_groups(cache: ImageCache) -> dict[str, np.ndarray | None]:
    """The validation as a whole ("validation": None, all of it) and, where it holds both sizes of synthetic
    anomalies, each size with the normals ("validation small", "validation large")."""
    kinds = [sample.path.stem.split("_", 1)[1] for sample in cache.samples]
    groups: dict[str, np.ndarray | None] = {"validation": None}
    for size, names in (("small", VALIDATION_KINDS[2:]), ("large", VALIDATION_KINDS[:2])):
        if any(kind in names for kind in kinds) and len(set(kinds) - {"normal"}) > len(names):
            groups[f"validation {size}"] = np.array([i for i, kind in enumerate(kinds) if kind in ("normal", *names)])
    return groups


def reconstruction_map(net, tokens: torch.Tensor, sections: np.ndarray, scales: torch.Tensor, grid, size
                       ) -> torch.Tensor:
    """The reconstruction map (B, H, W) in [0, 1): errors in units of the section's scale, squashed as the memory's."""
    errors = token_errors(net, tokens) / scales[torch.from_numpy(sections)].unsqueeze(1)
    return distance_map(errors.reshape(-1, 1, *grid), size, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the protocol's model (TUNE_DIR/protocol)")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--network", choices=("dinomaly", "autoencoder"), default="dinomaly")
    parser.add_argument("--latent", type=int, default=64, help="the autoencoder's latent size")
    parser.add_argument("--anomalies", nargs="+", choices=("small", "large"), default=list(VALIDATION_ANOMALIES),
                        help="the validation's synthetic anomalies (mala tune's: small)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, cfg, info = load_trained_model(args.checkpoint)
    model.eval()
    categories, samples = info["categories"], scan_roots(args.data, info["categories"])
    train_cache = ImageCache.build(train_samples(samples), cfg.input_shape, desc="decoding training images")
    fit, validation = validation_split(train_cache, cfg.input_shape, tuple(args.anomalies))
    test = ImageCache.build(test_samples(samples), cfg.input_shape, desc="decoding test images")

    fit_tokens = memory_tokens(model, fit)
    mean, std = fit_tokens.mean(dim=(0, 1)), fit_tokens.std(dim=(0, 1)).clamp_min(1e-6)
    fit_tokens = (fit_tokens - mean) / std
    channels = fit_tokens.shape[-1]
    net = (FeatureReconstructor(channels, model.memory_grid, args.dim, args.depth, args.dropout)
           if args.network == "dinomaly" else
           GlobalAutoencoder(channels, model.memory_grid, args.dim, args.latent, args.dropout))
    started = time.perf_counter()
    losses = train(net, fit_tokens, args.steps, args.batch_size, args.lr, args.seed)
    train_seconds = time.perf_counter() - started
    fit_sections = known_sections(fit, categories)
    fit_errors = token_errors(net, fit_tokens)
    scales = torch.tensor([float(torch.quantile(fit_errors[torch.from_numpy(fit_sections == k)].flatten()[:2_000_000],
                                                QUANTILE)) for k in range(len(categories))])
    del fit_tokens

    report = {"args": {k: str(v) for k, v in vars(args).items()}, "losses": losses,
              "train_seconds": round(train_seconds), "scales": scales.tolist()}
    for name, cache in (("validation", validation), ("test", test)):
        sections = known_sections(cache, categories)
        parts = validation_parts(model, cache, sections)
        recon = reconstruction_map(net, (memory_tokens(model, cache) - mean) / std, sections, scales,
                                   model.memory_grid, model.image_shape)
        maps = candidate_maps(model, parts, recon)
        for group, chosen in (kind_groups(cache) if name == "validation" else {name: None}).items():
            report[group] = figures(cache, maps) if chosen is None else figures(
                cache.subset(chosen), {key: value[torch.from_numpy(chosen)] for key, value in maps.items()})
    summarise(report)
    args.out.write_text(json.dumps(report, indent=1))


def tune_picks(validation: dict, prefix: str) -> dict[str, str]:
    """Per category, the candidate named with `prefix` of the best validation score (mean of pixel AUROC and AUPRO),
    the first of equals (the config's fusion comes first): what `mala tune` would choose among them."""
    picks = {}
    for category, rows in validation.items():
        names = [name for name in rows if name.startswith(prefix)]
        picks[category] = max(names, key=lambda name: rows[name][1] + rows[name][2])
    return picks


def summarise(report: dict) -> None:
    """Per candidate: validation score (mean of pixel AUROC and AUPRO) and test figures, means over categories; per
    category the rank correlation of validation and test scores."""
    validation, test = report["validation"], report["test"]
    groups = [group for group in report if group.startswith("validation")]
    names = list(next(iter(validation.values())))
    print(f"loss per 100 steps: {report['losses'][0]:.4f} -> {report['losses'][-1]:.4f} ({report['train_seconds']} s)\n"
          f"| candidate | {' | '.join(groups)} | test image / pixel AUROC / AUPRO |\n|---|{'---|' * len(groups)}---|")
    for name in names:
        scores = [np.mean([(report[g][c][name][1] + report[g][c][name][2]) / 2 for c in report[g]]) for g in groups]
        outcome = np.mean([test[c][name] for c in test], axis=0)
        print(f"| {name} | {' | '.join(f'{v:.1f}' for v in scores)} | {' / '.join(f'{v:.1f}' for v in outcome)} |")
    for label, prefix in (("`mala tune` as it is", "tune: "), ("`mala tune` with the global map too", "tune")):
        picks = tune_picks(report["validation small" if "validation small" in report else "validation"], prefix)
        outcome = np.mean([test[c][name] for c, name in picks.items()], axis=0)
        print(f"{label}: {'; '.join(f'{c}: {n}' for c, n in picks.items())} -> test "
              f"{' / '.join(f'{v:.1f}' for v in outcome)}")
    for category in test:
        rho = spearmanr([sum(validation[category][n][1:]) for n in names], [sum(test[category][n][1:]) for n in names])[0]
        cells = "; ".join(f"{n}: {' / '.join(f'{v:.1f}' for v in test[category][n])}" for n in names)
        print(f"{category}: rho {rho:.2f}; {cells}")


if __name__ == "__main__":
    main()
