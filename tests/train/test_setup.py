"""A run's config resolved from the training images (mala.train.setup): `--image-size aspect`, strips kept by default,
the tiling source size; and the warning when images are smaller than the model's size and get enlarged."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from mala import engine
from mala.cli import main
from mala.config import load_config
from mala.data.dataset import ImageCache, upscaled_note
from mala.train.setup import ConfigRequest, aspect_image_shape, keep_aspect, resolve_config
from tests.train.tiny_cli import TINY_MODEL

TALL, SQUARE = (40, 100), (100, 100)  # (width, height), as Pillow gives sizes: 1:2.5 strips and squares


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """Random RGB PNGs of the given (width, height), named 000.png, 001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{index:03}.png")
    return folder


def strips(tmp_path: Path) -> str:
    """A one-category dataset (`kind=folder`): three tall strips and two squares, so the median is the strips'."""
    normal = write_images(tmp_path / "strips" / "normal", [TALL, SQUARE, TALL, SQUARE, TALL])
    test = write_images(tmp_path / "strips" / "good", [TALL])
    return f"kind=folder,normal={normal},test={test}"


def test_aspect_keeps_the_median_ratio_at_the_preset_pixel_count(tmp_path):
    samples = engine.training_samples([strips(tmp_path)])
    resolved = resolve_config(ConfigRequest("tiny", image_size="aspect"), samples)  # 224 px, stride 16
    assert resolved.config.model.image_size == [352, 144]  # 2.44:1, 50,688 pixels for 50,176
    assert any("image size 352 x 144 px (height x width)" in note for note in resolved.notes)
    tiny = resolved.config
    small = dataclasses.replace(tiny.model, image_size=64, patch_size=8, backbone="none")
    assert aspect_image_shape(dataclasses.replace(tiny, model=small), 2.5) == (104, 40)


def test_square_images_keep_the_square_size(tmp_path):
    samples = engine.training_samples([f"kind=folder,normal={write_images(tmp_path / 'n', [SQUARE] * 3)}"])
    assert keep_aspect(load_config("tiny"), samples, []).model.image_size == 224


def test_train_with_aspect_stores_the_choice_in_the_run_config(tmp_path, capsys):
    settings = TINY_MODEL + ["stage1.epochs=1", "stage1.warmup_epochs=1", "stage1.images_per_category=4",
                             "stage1.batch_size=4", "stage2.epochs=1", "stage2.images_per_category=4",
                             "stage2.anomalous_per_category=2", "stage2.batch_size=4"]
    out = tmp_path / "run"
    overrides = [arg for item in settings for arg in ("--set", item)]
    assert main(["train", "--data", strips(tmp_path), "--image-size", "aspect", "--accelerator", "cpu",
                 "--out", str(out), *overrides]) == 0
    assert load_config(str(out / "config.yaml")).model.image_shape == (104, 40)
    assert "mala: image size 104 x 40 px (height x width)" in capsys.readouterr().err


def test_images_smaller_than_the_model_are_enlarged_with_a_warning(tmp_path, capsys):
    samples = engine.training_samples([strips(tmp_path)])
    cfg = load_config("tiny")
    cfg.model = dataclasses.replace(cfg.model, image_size=[96, 48])  # wider than the 40 px strips
    cache = engine.decode_images(samples, cfg, "decoding")
    assert cache.images.shape == (5, 96, 48, 3) and cache.upscaled == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mala: warning: 3 of 5 images are smaller than the model's 96 x 48 px (height x width) and were enlarged to "
        "it: their maps show no finer detail than the images hold")
    small = ImageCache.build(samples, 32)
    assert upscaled_note(small.upscaled, len(small.samples), small.images.shape[1:3]) is None


def test_a_run_given_no_size_keeps_the_aspect_of_strips_only(tmp_path):
    tiny = load_config("tiny")
    samples, notes = engine.training_samples([strips(tmp_path)]), []
    assert keep_aspect(tiny, samples, notes, strips_only=True).model.image_size == [352, 144]
    assert "the training images are strips (median height / width 2.50)" in notes[0]
    near_square = write_images(tmp_path / "near", [(100, 120)] * 3)  # 1.2 : 1, as magnetic_tile
    near_samples, near_notes = engine.training_samples([f"kind=folder,normal={near_square}"]), []
    assert keep_aspect(tiny, near_samples, near_notes, strips_only=True).model.image_size == 224
    assert near_notes == []


def test_strips_are_kept_only_when_no_size_is_given(tmp_path):
    samples = engine.training_samples([strips(tmp_path)])
    own_file = tmp_path / "mine.yaml"
    own_file.write_text("model:\n  image_size: 224\n")

    def size(**given) -> int | list[int]:
        return resolve_config(ConfigRequest(**{"config": "tiny", **given}), samples).config.model.image_size

    assert size() == [352, 144]
    assert size(image_size=224) == 224
    assert size(overrides=["model.image_size=224"]) == 224
    assert size(config=str(own_file)) == 224
    assert size(tile=32) == 32  # the tile is the model's input


def test_tiling_takes_the_median_source_size_when_not_given(tmp_path):
    samples = engine.training_samples([strips(tmp_path)])
    resolved = resolve_config(ConfigRequest("tiny", tile=32), samples)
    assert resolved.config.tiling.source_size == [100, 40] and resolved.config.model.image_size == 32
    assert resolved.notes == ["tiling source size 100 x 40 px (height x width), the training images' median height "
                              "and width (--tile-source sets it)"]
