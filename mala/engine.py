"""The library's entry points (what the CLI calls): train on data folders, test a trained model."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

from mala.checkpoint import load_checkpoint, model_file, save_checkpoint
from mala.config import MalaConfig
from mala.data import check
from mala.data.dataset import ImageCache, enlarged_count, upscaled_note
from mala.data.images import unit_range
from mala.data.samples import Sample, categories_of
from mala.data.sources import scan_roots, test_samples, train_samples
from mala.data.specs import DataSource
from mala.data.unlabeled import unlabeled_samples
from mala.deploy.calibration import Calibration
from mala.deploy.graph import read_calibration, store_calibration
from mala.errors import ConfigError
from mala.eval.evaluate import (CategoryCollector, MetricsCollector, Predictions, add_categories, known_sections,
                                predict_cache, routed_right)
from mala.eval.metrics import MetricsTable
from mala.eval.report import ReportCollector
from mala.eval.thresholds import DEFAULT_QUANTILE, ThresholdsCollector
from mala.model import MALA
from mala.model.load import load_trained_model
from mala.model.starting_weights import initialise
from mala.synth import probe_samples
from mala.train.plan import describe_plan
from mala.train.logs import tensorboard_note
from mala.train.setup import (ConfigRequest, ResolvedConfig, TrainingData, pretraining_config, resolve_config,
                              start_lines, training_data)
from mala.train.trainer import LAST_CHECKPOINT, MODEL_FILE, HeldOut, Trainer, make_fabric
from mala.tune.figure import draw_choices
from mala.tune.protocol import (VALIDATION_ANOMALIES, CategoryChoice, SectionTuning, choice_table, choose_fusion,
                                memory_growth, mirror_allowance, tuned_fusion_line, validation_views)
from mala.tune.split import MIN_IMAGES, held_out_count, validation_split


def decode_images(samples: list[Sample], cfg: MalaConfig, desc: str, cache_dir: Path | None = None) -> ImageCache:
    """`ImageCache.build` at the model's input size (with tiling: the source size), with a warning on stderr when
    images had to be enlarged to it."""
    cache = ImageCache.build(samples, cfg.input_shape, desc=desc, cache_dir=cache_dir)
    _warn_enlarged(cache.upscaled, len(samples), cfg)
    return cache


def _warn_enlarged(upscaled: int, total: int, cfg: MalaConfig) -> None:
    note = upscaled_note(upscaled, total, cfg.input_shape)
    if note:
        print(f"mala: {note}", file=sys.stderr)


def training_samples(roots: list, categories: list[str] | None = None) -> list[Sample]:
    """The normal training images of the roots (`--data` values or DataSources)."""
    return train_samples(scan_roots(roots, categories))


def check_config(config: MalaConfig | ConfigRequest) -> None:
    """A request's bad value or flag stops here, before any data is read."""
    if isinstance(config, ConfigRequest):
        config.base_config()


def resolved_config(config: MalaConfig | ConfigRequest, samples: list[Sample]) -> ResolvedConfig:
    """A config as given, or the command line's request resolved from the training images."""
    return resolve_config(config, samples) if isinstance(config, ConfigRequest) else ResolvedConfig(config, [])


def run_config(config: MalaConfig | ConfigRequest, samples: list[Sample]) -> MalaConfig:
    """`resolved_config`, with what was chosen from the images said on stderr."""
    resolved = resolved_config(config, samples)
    for note in resolved.notes:
        print(f"mala: {note}", file=sys.stderr)
    return resolved.config


def _resumed_trainer(config: MalaConfig | ConfigRequest | None, run_dir: Path, init: Path | None) -> Trainer:
    """The run in `run_dir` continued from its last checkpoint, with its own settings: a request may not change
    them, and there are no starting weights to take."""
    if init is not None:
        raise ConfigError("--init gives the weights a run starts from; a resumed run continues from its checkpoint")
    if isinstance(config, ConfigRequest):
        config.check_resumable()
    return Trainer.resume(run_dir)


def train(config: MalaConfig | ConfigRequest | None, roots: list, run_dir: Path, categories: list[str] | None = None,
          resume: bool = False, cache_dir: Path | None = None, init: Path | None = None) -> Path:
    """Train both stages as one model over all categories; returns the final model file.

    `config`: a config, or the command line's request (sizes chosen from the data); None to resume. `roots`: data
    paths, `--data` values or DataSources (mala.data.sources); `cache_dir`: keeps decoded images; `init`: starting
    weights for a fresh run (official MAE checkpoints, `pretrain` output; see mala.model.starting_weights)."""
    if resume:  # the run's own config and categories, whatever the command line says
        trainer = _resumed_trainer(config, run_dir, init)
        samples = training_samples(roots, trainer.saved_data["categories"])
        objects = trainer.saved_data["object_categories"]
    else:
        check_config(config)
        samples = training_samples(roots, categories)
        cfg = run_config(config, samples)
        trainer = Trainer(cfg, run_dir, make_fabric(cfg), init=init)
        objects = cfg.synth.object_categories
    cache = decode_images(samples, trainer.cfg, "decoding training images", cache_dir)
    fit, held_out = _tuning_split(trainer.cfg, cache, Path(run_dir) / "tune", trainer.fabric.is_global_zero)
    return trainer.fit(training_data(fit, objects, trainer.cfg.synth.objects), held_out)


def _tuning_split(cfg: MalaConfig, cache: ImageCache, out: Path, announce: bool
                  ) -> tuple[ImageCache, HeldOut | None]:
    """With `run.tune` on a model with a memory: the images the stages train on (80 % of each category's) and the
    tuning on the rest (`validation_split`, the split of `mala tune`: the same for a resumed run); otherwise all
    images and none. `announce`: say which (one rank of several says it)."""
    counts = {category: len(indices) for category, indices in cache.indices_by_category().items()}
    holds_out, line = _tuning_decision(cfg, counts)
    if announce and line is not None:
        print(f"mala: {line}", file=sys.stderr)
    if not holds_out:
        return cache, None
    fit, validation = validation_split(cache, cfg.input_shape, VALIDATION_ANOMALIES)
    categories = sorted(counts)

    def tune_model(model: MALA, report: bool) -> None:
        choices, tuning = tune_sections(model, validation, categories, cfg, out if report else None)
        if report:
            print(f"mala: map fusion per category, chosen on held-out training images ({out / 'tuning.md'}):\n"
                  f"{choice_table(choices)}", file=sys.stderr)
        tuning.apply(model)

    return fit, HeldOut(cache, tune_model)


def _tunes(cfg: MalaConfig) -> bool:
    """Whether a run of `cfg` tunes its fusion in training (`run.tune`, on a model with a normal-feature memory)."""
    return cfg.run.tune and cfg.model.has_memory


def _tuning_decision(cfg: MalaConfig, counts: dict[str, int]) -> tuple[bool, str | None]:
    """Whether a run of `cfg` holds images out to tune its fusion (training images per category in `counts`), and
    what it says about it (None where `run.tune` does not apply)."""
    if not _tunes(cfg):
        return False, None
    refusal = _tuning_refusal(cfg, counts)
    return refusal is None, refusal or _tuning_line(counts)


def _tuning_line(counts: dict[str, int]) -> str:
    """What a tuning run says it trains on and holds out (training images per category in `counts`)."""
    held, total = sum(held_out_count(n) for n in counts.values()), sum(counts.values())
    return (f"training on {total - held} of the {total} training images; each category's map fusion is chosen on the "
            f"other {held} (run.tune), then the memory holds all")


def _tuning_refusal(cfg: MalaConfig, counts: dict[str, int]) -> str | None:
    """Why a tuning run cannot hold images out (training images per category in `counts`); None when it can."""
    few = {category: n for category, n in counts.items() if n < MIN_IMAGES}
    if not few:
        return None
    why = (f"{', '.join(f'{c} has {n}' for c, n in few.items())} training image(s), fewer than the {MIN_IMAGES} a "
           "category needs to hold some out")
    return f"the map fusion is not tuned ({why}): training on all images with the config's fusion"


def pretrain(config: MalaConfig | ConfigRequest | None, folders: list[Path], run_dir: Path, resume: bool = False,
             init: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Stage-1 masked-autoencoder training on unlabeled images (mala.data.unlabeled); returns the model file, a
    starting point for `train(init=...)`. The run folder is a normal run (log, resumable checkpoint, config)."""
    if resume:
        trainer = _resumed_trainer(config, run_dir, init)
        samples = unlabeled_samples(folders)
    else:
        check_config(config)
        samples = unlabeled_samples(folders)
        cfg = pretraining_config(run_config(config, samples))
        trainer = Trainer(cfg, run_dir, make_fabric(cfg), init=init)
    return trainer.fit(TrainingData(decode_images(samples, trainer.cfg, "decoding images", cache_dir)))


def plan_training(config: MalaConfig | ConfigRequest, roots: list, categories: list[str] | None = None,
                  init: Path | None = None) -> str:
    """The dry run of `train`: every line the run would say as it starts (what it chooses from the data, its
    warnings), then parameters, steps, learning rates and a time estimate; reads the images' headers and decodes
    only each category's probe images (`probe_samples`), writes nothing."""
    check_config(config)
    samples = training_samples(roots, categories)
    resolved = resolved_config(config, samples)
    cfg = resolved.config
    model = MALA(cfg.model)
    initialised = [initialise(model, init).summary()] if init is not None else []
    holds_out, tuning_line = _tuning_decision(cfg, dict(Counter(sample.category for sample in samples)))
    start = [*resolved.notes, *initialised, *_planned_start_lines(cfg, samples, tuning_line)]
    fills = 2 if holds_out else 1
    return "\n".join([*start, describe_plan(cfg, model, categories_of(samples), len(samples), fills)])


def _planned_start_lines(cfg: MalaConfig, samples: list[Sample], tuning_line: str | None) -> list[str]:
    """What `train` says from decoding its images to its first epoch, in its order, without decoding them all:
    the enlarged images counted from their headers, what `run.tune` does (`tuning_line`), object or texture decided
    on each category's probe images."""
    shape = cfg.input_shape
    probes = training_data(ImageCache.build(probe_samples(samples), shape, desc="decoding probe images"),
                           cfg.synth.object_categories, cfg.synth.objects)
    lines = [upscaled_note(enlarged_count(samples, shape), len(samples), shape), tuning_line,
             *start_lines(cfg, probes), tensorboard_note()]
    return [line for line in lines if line is not None]


def test(checkpoint: Path, roots: list[Path], categories: list[str] | None = None,
         out: Path | None = None, device: str = "cpu", figures_per_category: int = 4,
         full_resolution: bool = False, cache_dir: Path | None = None,
         store_test_thresholds: bool = False, route: bool = False, memory_search: str | None = None) -> MetricsTable:
    """Per-category metrics of a trained model on the roots' test sets; with `out`, a report folder there
    (metrics.json/.csv, table.md, ROC curves, example maps, index.html, the test set's F1-max thresholds in
    thresholds.json). `full_resolution`: pixel metrics at each image's original size. The model file is left as it
    is unless `store_test_thresholds` (thresholds chosen with the test labels: optimistic decisions). Each image is
    read in its category's memory section, or with `route` in the one the model routes it to (and the metrics get
    the share routed to its own category). One category's images and maps are held at a time (`_by_category`).
    `memory_search`: as `load_trained_model`."""
    model, cfg, info = load_trained_model(checkpoint, memory_search)
    tuned = tuned_fusion_line(model, info.get("categories", []))
    if tuned is not None:
        print(f"mala: {tuned}", file=sys.stderr)
    if route and not (model.hybrid and not model.memory.empty):
        raise ConfigError(f"{checkpoint}: --route needs a normal-feature memory to route in; this model has none")
    samples = test_samples(scan_roots(roots, categories))
    metrics, thresholds = MetricsCollector(full_resolution), ThresholdsCollector()
    report = ReportCollector(Path(out), figures_per_category) if out is not None else None
    tested = _TestedModel(model, cfg, info.get("categories", []), device, route)
    collectors = [collector for collector in (metrics, thresholds, report) if collector is not None]
    _by_category(tested, samples, "decoding test images", cache_dir, *collectors)
    results = metrics.table()
    calibration = thresholds.calibration("mala test", _describe(roots))
    if report is not None:
        report.write(results, info.get("categories", []))
        (Path(out) / "thresholds.json").write_text(json.dumps(calibration.to_dict(), indent=1))
    if store_test_thresholds:
        _store_test_thresholds(checkpoint, calibration)
    elif read_calibration(checkpoint) is None:
        print(f"{checkpoint} has no decision thresholds: choose them with `mala calibrate` on validation or normal "
              "images (this test's F1-max is a metric, not a decision rule)", file=sys.stderr)
    return results


@dataclasses.dataclass
class _TestedModel:
    """A model to predict with, each image in its category's memory section or (`route`) the one it routes to."""

    model: MALA
    cfg: MalaConfig
    categories: list[str]  # the model's, in the order of its memory sections
    device: str
    route: bool = False

    def predict(self, cache: ImageCache) -> Predictions:
        known = known_sections(cache, self.categories)
        predictions = predict_cache(self.model, cache, self.cfg, device=self.device,
                                    sections=None if self.route else known)
        if self.route:
            predictions.routed_right = routed_right(known, predictions.sections)
        return predictions


def _by_category(tested: _TestedModel, samples: list[Sample], desc: str, cache_dir: Path | None,
                 *collectors: CategoryCollector) -> None:
    """Each category's images (in `categories_of` order) decoded, predicted and given to the collectors, one category
    at a time, so that the test set's images and maps are never held at once; the warning about enlarged images comes
    once, at the end."""
    upscaled = sum(_one_category(tested, [sample for sample in samples if sample.category == category],
                                 f"{desc} ({category})", cache_dir, collectors)
                   for category in categories_of(samples))
    _warn_enlarged(upscaled, len(samples), tested.cfg)


def _one_category(tested: _TestedModel, samples: list[Sample], desc: str, cache_dir: Path | None,
                  collectors: tuple[CategoryCollector, ...]) -> int:
    """`_by_category` for one category; returns how many of its images were enlarged. Its images and maps are
    dropped on return, before the next category is decoded."""
    cache = ImageCache.build(samples, tested.cfg.input_shape, desc=desc, cache_dir=cache_dir)
    add_categories(cache, tested.predict(cache), *collectors)
    return cache.upscaled


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
    model, cfg, info = load_trained_model(checkpoint)
    samples = test_samples(scan_roots(roots, categories)) if roots else normal_samples(normal_folders)
    thresholds = ThresholdsCollector(quantile, pixel_quantile)
    tested = _TestedModel(model, cfg, info.get("categories", []), device)
    _by_category(tested, samples, "decoding calibration images", cache_dir, thresholds)
    calibration = thresholds.calibration("mala calibrate", _describe(roots or normal_folders))
    store_calibration(checkpoint, calibration)
    return calibration


@dataclasses.dataclass
class Tuning:
    """What `tune` chose, per category, and where it wrote it."""

    choices: dict[str, CategoryChoice]
    model: Path
    report: Path


def tune(checkpoint: Path, roots: list, out: Path, device: str = "cpu", cache_dir: Path | None = None) -> Tuning:
    """Choose each category's map fusion on its training images (`mala.tune.protocol`) and store it with the model.

    The protocol's model is trained under `out/protocol` with the model's own config on 80 % of each category's normal
    training images (a killed run resumes there; a finished one is reused). Thresholds stored with the model were
    chosen on the old maps: they move to `out/previous_thresholds.json` and must be chosen again (`mala calibrate`)."""
    model, cfg, info = load_trained_model(checkpoint)
    if not (cfg.model.has_memory and not model.memory.empty):
        raise ConfigError(f"{checkpoint}: only a model with a normal-feature memory has a map fusion to tune")
    categories = info.get("categories", [])
    samples = training_samples(roots, categories)  # a category of the model missing there is named
    fit, validation = validation_split(decode_images(samples, cfg, "decoding training images", cache_dir),
                                       cfg.input_shape, VALIDATION_ANOMALIES)
    out = Path(out)
    protocol = _protocol_model(cfg, fit, out / "protocol", info.get("object_categories")).to(device)
    choices, tuning = tune_sections(protocol, validation, categories, cfg, out)
    return Tuning(choices, _store_tuning(checkpoint, tuning, out), out / "tuning.md")


def tune_sections(model: MALA, validation: ImageCache, categories: list[str], cfg: MalaConfig,
                   out: Path | None) -> tuple[dict[str, CategoryChoice], SectionTuning]:
    """Each category's fusion and mirror views (within `run.mirror_gflops`) chosen on the `validation` images (maps on
    the model's device; of the tiles of `cfg.tile_grid`, stitched, for a tiled model), and what the model stores of it
    (fusion, mirror views and the chosen map's normal level per section), with the report and picture written to
    `out` (None: not written); the model stays on its device."""
    device = next(model.parameters()).device
    allowance = mirror_allowance(model, categories, cfg.run.mirror_gflops, memory_growth(model, validation, categories))
    views = validation_views(model, validation, known_sections(validation, categories), allowance,
                             device=str(device), grid=cfg.tile_grid)
    choices = choose_fusion(model, validation, views, allowance=allowance)
    tuning = SectionTuning.of(model, validation, views, choices, categories)
    if out is not None:
        _write_tuning_report(choices, out)
        draw_choices(out / "tuning.png", model, validation, views, choices)
    model.to(device)
    return choices, tuning


def _protocol_model(cfg: MalaConfig, fit: ImageCache, run_dir: Path, objects: list[str] | None) -> MALA:
    """The model of `cfg` trained on `fit`, in `run_dir`: reused when finished there, resumed when begun."""
    if not (run_dir / MODEL_FILE).exists():
        resuming = (run_dir / LAST_CHECKPOINT).exists()
        trainer = Trainer.resume(run_dir) if resuming else Trainer(cfg, run_dir, make_fabric(cfg))
        print(f"mala: {'resuming' if resuming else 'training'} the protocol's model on {len(fit.samples)} training "
              f"images in {run_dir}", file=sys.stderr)
        trainer.fit(training_data(fit, objects, trainer.cfg.synth.objects))
    model, protocol_cfg, info = load_trained_model(run_dir / MODEL_FILE)
    tuned = {"memory_weight": 0.0, "score_map_share": 0.0, "global_share": 0.0}  # the protocol chooses them
    if (dataclasses.replace(protocol_cfg.model, **tuned) != dataclasses.replace(cfg.model, **tuned)
            or info.get("categories") != categories_of(fit.samples)):
        raise ConfigError(f"{run_dir}: a protocol model of another model config or other categories; remove it or "
                          "tune into another --out")
    return model


def _store_tuning(checkpoint: Path, tuning: SectionTuning, out: Path) -> Path:
    """Rewrite the model file (atomically) with its per-section fusion and map levels; stale thresholds move to
    `out`."""
    path = model_file(checkpoint)
    state = load_checkpoint(path)
    tuning.store(state["model"])
    calibration = state.pop("calibration", None)
    if calibration is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "previous_thresholds.json").write_text(json.dumps(calibration, indent=1))
        print(f"mala: the thresholds stored with the model were chosen on its old maps: moved to "
              f"{out / 'previous_thresholds.json'}; choose them again with `mala calibrate`", file=sys.stderr)
    save_checkpoint(path, state)
    return path


def _write_tuning_report(choices: dict[str, CategoryChoice], out: Path) -> None:
    """`out/tuning.md` (the choice table) and `out/tuning.json` (every candidate's validation figures); the picture
    `tuning.png` is drawn beside them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuning.md").write_text(choice_table(choices) + "\n")
    figures = {category: {"chosen": dataclasses.asdict(choice.chosen),
                          "candidates": [{**dataclasses.asdict(fusion), "pixel_auroc": auroc, "pixel_aupro": aupro}
                                         for fusion, (auroc, aupro) in choice.validation.items()]}
               for category, choice in choices.items()}
    (out / "tuning.json").write_text(json.dumps(figures, indent=1))


def export(checkpoint: Path, out: Path, category: str | None = None, opset: int = 18,
           memory_search: str | None = None) -> Path:
    """The model as one ONNX graph (uint8 images to scores and maps, thresholds of `category` inside; the memory
    searched as `memory_search` says, None: as the model file says)."""
    from mala.deploy.graph import export_onnx

    return export_onnx(checkpoint, out, category, opset, memory_search)


def synth_preview(roots: list[Path], out: Path, textures: Path | None, count: int, size: int | list[int],
                  seed: int = 0) -> Path:
    """A picture grid of synthetic anomalies on normal training images, spread over the categories."""
    from mala.config import SynthConfig
    from mala.synth import AnomalySynthesizer, write_preview_grid

    cfg = SynthConfig(texture_dir=str(textures) if textures else None)
    samples = train_samples(scan_roots(roots))
    by_category: dict[str, list] = {}
    for sample in samples:
        by_category.setdefault(sample.category, []).append(sample)
    chosen = [group[i] for i in range(count) for group in by_category.values() if i < len(group)][:count]
    cache = ImageCache.build(chosen, size, desc="decoding images")
    foregrounds = training_data(cache).foregrounds()
    images = [unit_range(cache.images[i]) for i in range(len(chosen))]
    return write_preview_grid(images, AnomalySynthesizer(cfg, size), out, seed,
                              [foregrounds.get(i) for i in range(len(chosen))])


def check_data(roots: list[Path], categories: list[str] | None = None, workers: int = 2) -> check.DataReport:
    """What the data holds and every problem in it (unreadable files included), without stopping at the first."""
    return check.check_data(roots, categories, workers)
