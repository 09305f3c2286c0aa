"""A run's configuration and data, resolved in one place from what the user asked for and the training images: the
image size (the aspect of strips), the tiling source size, the texture folder, and which categories are objects.

The command line fills a `ConfigRequest`; the engine scans the data once and passes the same samples here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mala.config import PRESET_DIR, MalaConfig, apply_overrides, load_config
from mala.data.dataset import ImageCache
from mala.data.images import header_shape, unit_range
from mala.data.samples import Sample
from mala.errors import ConfigError
from mala.sizes import ASPECT, ImageShape, aspect_shape, describe_shape, median_aspect_ratio, stored_size
from mala.synth import foreground_mask, object_categories
from mala.tiling import median_shape

ASPECT_SAMPLE = 1000  # image headers read for a median (aspect ratio, tiling source), spread over a larger dataset
STRIP_ASPECT = 1.5  # the median height / width (or width / height) from which a run keeps the aspect by default


@dataclass
class ConfigRequest:
    """What the command line asks for; what it leaves open comes from the training images (`resolve_config`)."""

    config: str = "tiny"  # preset name or YAML file
    overrides: list[str] = field(default_factory=list)  # SECTION.KEY=VALUE, as `--set`
    image_size: int | list[int] | str | None = None  # --image-size: SIZE, [height, width] or `aspect`
    tile: int | list[int] | None = None  # --tile: the model's input, cut from each image
    tile_stride: int | None = None
    tile_source: int | list[int] | None = None  # None with a tile: the training images' median size
    textures: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)  # run.KEY values of flags such as --devices

    def given_settings(self) -> list[str]:
        """The flags that set what a resumed run keeps from its own config."""
        sizes = {"image_size": self.image_size, "tile": self.tile, "tile_stride": self.tile_stride,
                 "tile_source": self.tile_source}
        return [*self.run, *(key for key, value in sizes.items() if value is not None)]

    def check_resumable(self) -> None:
        """A resumed run continues with its own settings: refuse flags that would change them."""
        given = self.given_settings()
        if given:
            flags = ", ".join("--" + flag.replace("_", "-") for flag in given)
            raise ConfigError(f"--resume continues with the run's own settings (its config.yaml); {flags} "
                              "cannot change them")

    def base_config(self) -> MalaConfig:
        """The preset or file with every setting that needs no data: a bad value or flag stops here, before any
        image is read."""
        if self.tile is None and (self.tile_stride is not None or self.tile_source is not None):
            raise ConfigError("--tile-stride and --tile-source go with --tile SIZE (README.md, Tiling)")
        if self.tile is not None and self.image_size is not None:
            raise ConfigError("--tile sets the model's input (the tile), as --image-size does without tiling: give "
                              "one of them")
        sizes = [f"model.image_size={self.image_size}"] if self.image_size not in (None, ASPECT) else []
        sizes += [f"model.image_size={self.tile}"] if self.tile is not None else []
        run = [f"run.{key}={value}" for key, value in self.run.items()]
        cfg = apply_overrides(load_config(self.config), self.overrides + sizes + run)
        if self.textures:
            cfg.synth.texture_dir = str(self.textures)
        return cfg

    def size_given_by_config(self) -> bool:
        """True when the user's own YAML file or a `model.image_size` override names the size (not a preset)."""
        path = Path(self.config)
        own_file = path.is_file() and path.resolve().parent != PRESET_DIR.resolve()
        return own_file or any(item.split("=", 1)[0].strip() == "model.image_size" for item in self.overrides)


@dataclass
class ResolvedConfig:
    config: MalaConfig
    notes: list[str]  # what was chosen from the data, one line each, for stderr and the dry run


def resolve_config(request: ConfigRequest, samples: list[Sample]) -> ResolvedConfig:
    """The run's config: the request's preset or file with its overrides, sizes chosen from `samples` (the training
    images, read from their headers) where the request leaves them open."""
    notes: list[str] = []
    cfg = request.base_config()
    if request.tile is not None:
        cfg = apply_overrides(cfg, _tiling_overrides(request, samples, notes))
    if request.image_size == ASPECT:
        cfg = keep_aspect(cfg, samples, notes)
    elif request.image_size is None and request.tile is None and not request.size_given_by_config():
        cfg = keep_aspect(cfg, samples, notes, strips_only=True)
    return ResolvedConfig(cfg, notes)


def _tiling_overrides(request: ConfigRequest, samples: list[Sample], notes: list[str]) -> list[str]:
    """The tiling of `--tile 224 --tile-stride 160 --tile-source 512x1280`; without a source size, the training
    images' median height and width."""
    source = request.tile_source
    if source is None:
        shape = median_shape(sampled_shapes(samples))
        notes.append(f"tiling source size {describe_shape(shape)}, the training images' median height and width "
                     "(--tile-source sets it)")
        source = stored_size(shape)
    return [f"tiling.source_size={source}"] + ([f"tiling.stride={request.tile_stride}"] if request.tile_stride is not None else [])


def sampled_shapes(samples: list[Sample]) -> Iterator[ImageShape]:
    """(height, width) from the headers of at most about `ASPECT_SAMPLE` images spread evenly over `samples`."""
    step = max(1, len(samples) // ASPECT_SAMPLE)
    return (header_shape(sample.path) for sample in samples[::step])


def aspect_image_shape(cfg: MalaConfig, ratio: float) -> ImageShape:
    """Height / width `ratio` at about the config's pixel count (so about its token count), each side a multiple of
    what the model needs (patch size, backbone stride)."""
    height, width = cfg.model.image_shape
    return aspect_shape(ratio, height * width, cfg.model.size_multiple)


def keep_aspect(cfg: MalaConfig, samples: list[Sample], notes: list[str], strips_only: bool = False) -> MalaConfig:
    """The config with `model.image_size` at the images' median aspect ratio (`aspect_image_shape`), said in `notes`.
    `strips_only` (a run given no size): only for a ratio of `STRIP_ASPECT` or more either way; nearer squares keep
    the config's size, since on magnetic_tile (1.2 : 1) keeping the aspect measured the same as squashing."""
    ratio = median_aspect_ratio(sampled_shapes(samples))
    if strips_only and max(ratio, 1 / ratio) < STRIP_ASPECT:
        return cfg
    shape = aspect_image_shape(cfg, ratio)
    why = f"the training images are strips (median height / width {ratio:.2f}); --image-size SIZE squashes them" \
        if strips_only else "for the training images' median aspect ratio"
    notes.append(f"image size {describe_shape(shape)}, {why}, at about the pixel count of "
                 f"{describe_shape(cfg.model.image_shape)}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=stored_size(shape)))


def anomaly_source_line(cfg: MalaConfig) -> str | None:
    """Where stage 2's anomalies come from, one line; plainly a warning without textures (the paper's come from DTD).
    None for a run without stage 2."""
    if cfg.run.pipeline != "end_to_end":
        return None
    if cfg.synth.texture_dir:
        return f"synthetic anomalies: {cfg.synth.describe_source()}"
    return ("warning: no texture folder (--textures, synth.texture_dir): synthetic anomalies are self-texture only, "
            "their content taken from the images themselves, not from DTD as in the paper")


def tiling_line(cfg: MalaConfig) -> str | None:
    """How training cuts its images into tiles, one line; None without tiling."""
    if cfg.tile_grid is None:
        return None
    return f"tiling: {cfg.tile_grid.describe()}; each training image is one tile at a random position"


def start_lines(cfg: MalaConfig, data: TrainingData) -> list[str]:
    """What a run says as its training starts (`Trainer.fit`, and the dry run): where stage 2's anomalies come from,
    the tiling, and object or texture per category."""
    lines = [anomaly_source_line(cfg), tiling_line(cfg)]
    if cfg.run.pipeline == "end_to_end":
        lines += data.synthesis_lines()
    return [line for line in lines if line is not None]


def pretraining_config(cfg: MalaConfig) -> MalaConfig:
    """Stage 1 alone: the reconstruction pipeline has no stage 2, so training ends after stage 1."""
    return dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, enabled=True),
                               run=dataclasses.replace(cfg.run, pipeline="reconstruction"))


@dataclass
class TrainingData:
    """Normal training images of all categories, and which categories are objects (local anomalies)."""

    cache: ImageCache
    object_categories: list[str] = field(default_factory=list)
    set_by_hand: list[str] = field(default_factory=list)  # categories whose kind synth.objects gives

    @property
    def categories(self) -> list[str]:
        return sorted(self.cache.indices_by_category())

    def synthesis_lines(self) -> list[str]:
        """Per category, where stage 2 draws its synthetic anomalies and who decided it."""
        objects = set(self.object_categories)
        kinds = {True: "object (anomalies on the foreground)", False: "texture (anomalies anywhere)"}
        by_hand = set(self.set_by_hand)
        return [f"{category}: {kinds[category in objects]}{', set in synth.objects' if category in by_hand else ''}"
                for category in self.categories]

    def foregrounds(self) -> dict[int, np.ndarray]:
        """The foreground mask of every image of an object category, by cache index (where its anomalies go)."""
        objects, by_hand = set(self.object_categories), set(self.set_by_hand)
        return {i: foreground_mask(unit_range(self.cache.images[i]), known_object=sample.category in by_hand)
                for i, sample in enumerate(self.cache.samples) if sample.category in objects}


def training_data(cache: ImageCache, configured: list[str] | None = None,
                  by_hand: dict[str, bool] | None = None) -> TrainingData:
    """The cache with its object categories (`synth.object_categories` decides them)."""
    by_hand = by_hand or {}
    return TrainingData(cache, object_categories(cache, configured, by_hand), sorted(by_hand))
