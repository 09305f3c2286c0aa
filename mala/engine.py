"""The library's entry points (what the CLI calls): train on data folders, test a trained model."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from mala.checkpoint import load_trained_model
from mala.config import MalaConfig
from mala.data import check
from mala.data.dataset import ImageCache
from mala.data.images import header_size
from mala.data.samples import Sample, categories_of
from mala.data.sources import scan_roots, test_samples, train_samples
from mala.data.specs import DataSource
from mala.data.unlabeled import unlabeled_samples
from mala.deploy.calibration import Calibration
from mala.deploy.graph import read_calibration, store_calibration
from mala.errors import ConfigError
from mala.eval.evaluate import category_metrics, predict
from mala.eval.report import write_report
from mala.eval.thresholds import DEFAULT_QUANTILE, calibrate as choose_calibration
from mala.model import MALA
from mala.model.init import initialise
from mala.model.mala import size_multiple
from mala.sizes import ImageShape, aspect_shape, describe_shape, median_aspect_ratio, stored_size
from mala.tiling import median_shape
from mala.train.plan import describe_plan
from mala.train.trainer import Trainer, TrainingData, make_fabric, training_data


def decode(samples: list[Sample], cfg: MalaConfig, desc: str, cache_dir: Path | None = None) -> ImageCache:
    """`ImageCache.build` at the model's input size (with tiling: the source size), with a warning on stderr when
    images had to be enlarged to it."""
    cache = ImageCache.build(samples, cfg.input_shape, desc=desc, cache_dir=cache_dir)
    note = cache.upscaled_note()
    if note:
        print(f"mala: warning: {note}", file=sys.stderr)
    return cache


def load_training_data(cfg: MalaConfig, roots: list[Path], categories: list[str] | None,
                       object_categories: list[str] | None = None, cache_dir: Path | None = None) -> TrainingData:
    cache = decode(training_samples(roots, categories), cfg, "decoding training images", cache_dir)
    objects = object_categories if object_categories is not None else cfg.synth.object_categories
    return training_data(cache, objects, cfg.synth.objects)


def _trainer(cfg: MalaConfig | None, run_dir: Path, resume: bool, init: Path | None) -> Trainer:
    """A fresh run, from `init` weights if given, or the run in `run_dir` continued from its last checkpoint."""
    if resume and init is not None:
        raise ConfigError("--init gives the weights a run starts from; a resumed run continues from its checkpoint")
    return Trainer.resume(run_dir) if resume else Trainer(cfg, run_dir, make_fabric(cfg), init=init)


def train(cfg: MalaConfig, roots: list[Path], run_dir: Path, categories: list[str] | None = None,
          resume: bool = False, cache_dir: Path | None = None, init: Path | None = None) -> Path:
    """Train both stages as one model over all categories; returns the final model file.

    `roots`: data paths, `--data` values or DataSources (mala.data.sources); `cache_dir`: keeps decoded images;
    `init`: starting weights for a fresh run (official MAE checkpoints, `pretrain` output; see mala.model.init)."""
    trainer = _trainer(cfg, run_dir, resume, init)
    if resume:  # the run's own config and categories, whatever the command line says
        data = load_training_data(trainer.cfg, roots, trainer.saved_data["categories"],
                                  trainer.saved_data["object_categories"], cache_dir)
    else:
        data = load_training_data(cfg, roots, categories, cache_dir=cache_dir)
    return trainer.fit(data)


def training_samples(roots: list, categories: list[str] | None = None) -> list[Sample]:
    """The normal training images of the roots (`--data` values or DataSources)."""
    return train_samples(scan_roots(roots, categories))


ASPECT_SAMPLE = 1000  # image headers read for a median (aspect ratio, tiling source), spread over a larger dataset


STRIP_ASPECT = 1.5  # the median height / width (or width / height) from which a run keeps the aspect by default


def aspect_image_shape(cfg: MalaConfig, ratio: float) -> ImageShape:
    """`--image-size aspect`: height / width `ratio` (the images' median, `median_image_aspect`) at about the
    config's pixel count (so about its token count), each side a multiple of what the model needs (patch size,
    backbone stride)."""
    height, width = cfg.model.image_shape
    return aspect_shape(ratio, height * width, size_multiple(cfg.model))


def median_image_aspect(samples: list[Sample]) -> float:
    """The median height / width of these images, from headers (`sampled_sizes`)."""
    return median_aspect_ratio(sampled_sizes(samples))


def sampled_sizes(samples: list[Sample]) -> Iterator[tuple[int, int]]:
    """(width, height) from the headers of at most about `ASPECT_SAMPLE` images spread evenly over `samples`."""
    step = max(1, len(samples) // ASPECT_SAMPLE)
    return (header_size(sample.path) for sample in samples[::step])


def tile_source_shape(samples: list[Sample]) -> ImageShape:
    """Tiling's default source size: the median height and width of these (training) images, their own
    resolution (headers only, as `aspect_image_shape`)."""
    return median_shape(sampled_sizes(samples))


def keep_aspect(cfg: MalaConfig, samples: list[Sample], strips_only: bool = False) -> MalaConfig:
    """The config with `model.image_size` chosen by `aspect_image_shape` from these (training) images, said on
    stderr; `training_samples(roots)` or `unlabeled_samples(folders)` give them. `strips_only` (a run given no size):
    only for a median aspect ratio of `STRIP_ASPECT` or more either way; nearer squares keep the config's size,
    since on magnetic_tile (1.2 : 1) keeping the aspect measured the same as squashing (BENCHMARKS.md)."""
    ratio = median_image_aspect(samples)
    if strips_only and max(ratio, 1 / ratio) < STRIP_ASPECT:
        return cfg
    shape = aspect_image_shape(cfg, ratio)
    why = f"the training images are strips (median height / width {ratio:.2f}); --image-size SIZE squashes them" \
        if strips_only else "for the training images' median aspect ratio"
    print(f"mala: image size {describe_shape(shape)}, {why}, at about the pixel count of "
          f"{describe_shape(cfg.model.image_shape)}", file=sys.stderr)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=stored_size(shape)))


def pretraining_config(cfg: MalaConfig) -> MalaConfig:
    """Stage 1 alone: the reconstruction pipeline has no stage 2, so `Trainer.fit` ends after stage 1."""
    return dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, enabled=True),
                               run=dataclasses.replace(cfg.run, pipeline="reconstruction"))


def pretrain(cfg: MalaConfig | None, folders: list[Path], run_dir: Path, resume: bool = False,
             init: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Stage-1 masked-autoencoder training on unlabeled images (mala.data.unlabeled); returns the model file, a
    starting point for `train(init=...)`. The run folder is a normal run (log, resumable checkpoint, config)."""
    trainer = _trainer(None if resume else pretraining_config(cfg), run_dir, resume, init)
    samples = unlabeled_samples(folders)
    cache = decode(samples, trainer.cfg, "decoding images", cache_dir)
    return trainer.fit(TrainingData(cache))


def plan_training(cfg: MalaConfig, roots: list[Path], categories: list[str] | None = None,
                  init: Path | None = None) -> str:
    """The dry run of `train`: parameters, steps, learning rates and a time estimate; reads no image, writes nothing."""
    samples = training_samples(roots, categories)
    model = MALA(cfg.model)
    notes = [initialise(model, init).summary()] if init is not None else []
    if cfg.tile_grid is not None:
        notes.append(f"tiling: {cfg.tile_grid.describe()}; each training image is one tile at a random position")
    return "\n".join([describe_plan(cfg, model, categories_of(samples), len(samples)), *notes])


def test(checkpoint: Path, roots: list[Path], categories: list[str] | None = None,
         out: Path | None = None, device: str = "cpu", figures_per_category: int = 4,
         full_resolution: bool = False, cache_dir: Path | None = None,
         store_test_thresholds: bool = False) -> dict[str, dict[str, float | None]]:
    """Per-category metrics of a trained model on the roots' test sets; with `out`, a report folder there
    (metrics.json/.csv, table.md, ROC curves, example maps, index.html, the test set's F1-max thresholds in
    thresholds.json). `full_resolution`: pixel metrics at each image's original size. The model file is left as it
    is unless `store_test_thresholds` (thresholds chosen with the test labels: optimistic decisions)."""
    model, cfg, info = load_trained_model(checkpoint)
    samples = test_samples(scan_roots(roots, categories))
    cache = decode(samples, cfg, "decoding test images", cache_dir)
    predictions = predict(model, cache, cfg, device=device)
    results = category_metrics(cache, predictions, full_resolution)
    calibration = choose_calibration(cache, predictions, "mala test", _describe(roots))
    if out is not None:
        write_report(Path(out), cache, predictions, results, figures_per_category, info.get("categories", []))
        (Path(out) / "thresholds.json").write_text(json.dumps(calibration.to_dict(), indent=1))
    if store_test_thresholds:
        _store_test_thresholds(checkpoint, calibration)
    elif read_calibration(checkpoint) is None:
        print(f"{checkpoint} has no decision thresholds: choose them with `mala calibrate` on validation or normal "
              "images (this test's F1-max is a metric, not a decision rule)", file=sys.stderr)
    return results


def _store_test_thresholds(checkpoint: Path, calibration: Calibration) -> None:
    """`mala test --store-test-thresholds`: the test set's F1-max thresholds go with the model, with the warning."""
    stored = read_calibration(checkpoint)
    try:
        path = store_calibration(checkpoint, calibration)
    except OSError as exc:  # a model on read-only storage still gets tested
        print(f"thresholds not stored with the model ({exc.strerror or exc}); they are in the report's "
              "thresholds.json", file=sys.stderr)
        return
    replaced = f", replacing those of `{stored.chosen_by}`" if stored is not None else ""
    print(f"warning: thresholds chosen on this test set stored in {path}{replaced}. The test labels chose them, so "
          "accuracy and F1 of their decisions on this test set are optimistic; for decisions you can trust, choose "
          "them on other data with `mala calibrate`", file=sys.stderr)


def _describe(roots: list) -> list[str]:
    """Paths of `--data` values or DataSources, for the record of where thresholds were chosen."""
    return [str(root.root if isinstance(root, DataSource) and root.root is not None else root) for root in roots]


def normal_samples(folders: list[Path]) -> list:
    """Every image under each folder (recursively) as a normal sample of a category named like the folder."""
    return [dataclasses.replace(sample, category=Path(folder).resolve().name)
            for folder in folders for sample in unlabeled_samples([Path(folder)])]


def calibrate(checkpoint: Path, roots: list | None = None, normal_folders: list[Path] | None = None,
              categories: list[str] | None = None, quantile: float = DEFAULT_QUANTILE,
              pixel_quantile: float = DEFAULT_QUANTILE, device: str = "cpu",
              cache_dir: Path | None = None) -> Calibration:
    """Choose thresholds on labelled test data (`roots`: F1-max where a category has anomalies) or on folders of
    normal images (quantiles), and store them with the model."""
    if bool(roots) == bool(normal_folders):
        raise ConfigError("calibrate on labelled data (--data) or on folders of normal images (--normal), one of them")
    model, cfg, _ = load_trained_model(checkpoint)
    samples = test_samples(scan_roots(roots, categories)) if roots else normal_samples(normal_folders)
    cache = decode(samples, cfg, "decoding calibration images", cache_dir)
    predictions = predict(model, cache, cfg, device=device)
    sources = _describe(roots or normal_folders)
    calibration = choose_calibration(cache, predictions, "mala calibrate", sources, quantile, pixel_quantile)
    store_calibration(checkpoint, calibration)
    return calibration


def export(checkpoint: Path, out: Path, category: str | None = None, opset: int = 18) -> Path:
    """The model as one ONNX graph (uint8 images to scores and maps, thresholds of `category` inside)."""
    from mala.deploy.graph import export_onnx

    return export_onnx(checkpoint, out, category, opset)


def synth_preview(roots: list[Path], out: Path, textures: Path | None, count: int, size: int | list[int],
                  seed: int = 0) -> Path:
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
    objects = set(training_data(cache).object_categories)
    images = [cache.images[i].astype("float32") / 255.0 for i in range(len(chosen))]
    foregrounds = [foreground_mask(img) if s.category in objects else None for img, s in zip(images, chosen)]
    return write_preview_grid(images, AnomalySynthesizer(cfg, size), out, seed, foregrounds)


def check_data(roots: list[Path], categories: list[str] | None = None, workers: int = 2) -> check.DataReport:
    """What the data holds and every problem in it (unreadable files included), without stopping at the first."""
    return check.check_data(roots, categories, workers)
