"""The library's entry points (what the CLI calls): train on data folders, test a trained model."""

from __future__ import annotations

import json
from pathlib import Path

from mala.checkpoint import load_trained_model
from mala.config import MalaConfig
from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots, test_samples, train_samples
from mala.eval.evaluate import category_metrics, predict
from mala.train.trainer import Trainer, TrainingData, decide_object_categories, make_fabric


def load_training_data(cfg: MalaConfig, roots: list[Path], categories: list[str] | None,
                       object_categories: list[str] | None = None) -> TrainingData:
    samples = train_samples(scan_roots(roots, categories))
    cache = ImageCache.build(samples, cfg.model.image_size, desc="decoding training images")
    objects = object_categories if object_categories is not None else cfg.synth.object_categories
    return TrainingData(cache, decide_object_categories(cache, objects))


def train(cfg: MalaConfig, roots: list[Path], run_dir: Path, categories: list[str] | None = None,
          resume: bool = False) -> Path:
    """Train both stages as one model over all categories; returns the final model file."""
    if resume:  # the run's own config and categories, whatever the command line says
        trainer = Trainer.resume(run_dir)
        data = load_training_data(trainer.cfg, roots, trainer.saved_data["categories"],
                                  trainer.saved_data["object_categories"])
    else:
        trainer = Trainer(cfg, run_dir, make_fabric(cfg))
        data = load_training_data(cfg, roots, categories)
    return trainer.fit(data)


def test(checkpoint: Path, roots: list[Path], categories: list[str] | None = None,
         out: Path | None = None, device: str = "cpu") -> dict[str, dict[str, float | None]]:
    """Per-category metrics of a trained model on the roots' test sets; written to `out/metrics.json`."""
    model, cfg, info = load_trained_model(checkpoint)
    samples = test_samples(scan_roots(roots, categories))
    cache = ImageCache.build(samples, cfg.model.image_size, desc="decoding test images")
    results = category_metrics(cache, predict(model, cache, cfg, device=device))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        trained_on = info.get("categories", [])
        (out / "metrics.json").write_text(json.dumps({"trained_on": trained_on, "metrics": results}, indent=2))
    return results


def synth_preview(roots: list[Path], out: Path, textures: Path | None, count: int, size: int, seed: int = 0) -> Path:
    """A picture grid of synthetic anomalies on normal training images, spread over the categories."""
    from mala.config import SynthConfig
    from mala.synth import AnomalySynthesizer, foreground_mask, write_preview_grid

    cfg = SynthConfig(texture_dir=str(textures) if textures else None)
    samples = train_samples(scan_roots(roots))
    by_category: dict[str, list] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample)
    chosen = [group[i] for i in range(count) for group in by_category.values() if i < len(group)][:count]
    cache = ImageCache.build(chosen, size, desc="decoding images")
    objects = set(decide_object_categories(cache, None))
    images = [cache.images[i].astype("float32") / 255.0 for i in range(len(chosen))]
    foregrounds = [foreground_mask(img) if s.category in objects else None for img, s in zip(images, chosen)]
    return write_preview_grid(images, AnomalySynthesizer(cfg, size), out, seed, foregrounds)
