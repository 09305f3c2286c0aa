"""Tuning in training (`run.tune`, on in `tiny`): the stages train on 80 % of each category's images, each category's
fusion is chosen on the rest with the memory of the 80 %, then the memory is filled from all; a killed run resumes
to the same choice; too few images or `--no-tune` train on all with the config's fusion."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from mala.cli import main
from mala.data.dataset import ImageCache, to_tensor
from mala.data.sources import scan_roots, train_samples
from mala.eval.evaluate import known_sections
from mala.model.load import load_trained_model
from mala.train.fill_memory import fill_memory
from mala.model.maps import map_pairs
from mala.tune.protocol import (MAP_LEVEL_QUANTILE, VALIDATION_ANOMALIES, CategoryChoice, choose_fusion, map_levels,
                                memory_growth, mirror_allowance, validation_views)
from mala.tune.split import validation_split
from tests.conftest import shared_data
from tests.tune.test_tune_command import QUICK_HYBRID


def train(run: Path, data: Path | None = None, *flags: str) -> int:
    """A quick hybrid (tests/tune's) trained on `data` [metal_plate's training images]."""
    overrides = [arg for item in QUICK_HYBRID for arg in ("--set", item)]
    data = data or shared_data("metal_plate")
    return main(["train", "--config", "tiny", "--data", str(data), "--accelerator", "cpu", "--out", str(run),
                 *overrides, *flags])


def assert_same_tuning(redone: CategoryChoice, stored: dict) -> None:
    """Every candidate's validation figures and the pick as training's tuning stored them (`tune/tuning.json`)."""
    for candidate in stored["candidates"]:
        figures = redone.validation[next(f for f in redone.validation if dataclasses.asdict(f) == {
            k: candidate[k] for k in ("memory_weight", "score_map_share", "global_share", "mirrors")})]
        assert figures == pytest.approx((candidate["pixel_auroc"], candidate["pixel_aupro"]), abs=1e-6)
    assert dataclasses.asdict(redone.chosen) == stored["chosen"]


def redone_tuning(model, cfg, validation: ImageCache) -> tuple[dict[str, CategoryChoice], list]:
    """Training's tuning of metal_plate done again: its choices and the `validation_views` they were chosen on."""
    allowance = mirror_allowance(model, ["metal_plate"], cfg.run.mirror_gflops,
                                 memory_growth(model, validation, ["metal_plate"]))
    views = validation_views(model, validation, known_sections(validation, ["metal_plate"]), allowance,
                             grid=cfg.tile_grid)
    return choose_fusion(model, validation, views, allowance=allowance), views


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("held_out") / "run"
    assert train(run) == 0
    return run


def test_the_fusion_is_chosen_with_the_memory_of_the_training_split_and_the_memory_then_holds_every_image(run):
    model, cfg, _ = load_trained_model(run)
    cache = ImageCache.build(train_samples(scan_roots([shared_data("metal_plate")])), cfg.input_shape)
    assert model.memory.image_sections.numel() == len(cache.samples)  # all 54, not the 43 stage 2 trained on
    stored = json.loads((run / "tune" / "tuning.json").read_text())["metal_plate"]
    chosen = stored["chosen"]
    torch.testing.assert_close(model.section_fusion, torch.tensor([[chosen["memory_weight"], chosen["score_map_share"],
                                                                    chosen["global_share"]]]))
    fit, validation = validation_split(cache, cfg.input_shape, VALIDATION_ANOMALIES)
    assert len(fit.samples) < len(cache.samples)
    fill_memory(model, fit, cfg.run.seed)  # the memory at choosing time: the validation images are not in it
    levels = model.section_map_levels  # kept in the model: the tuning reads the maps without them
    choices, views = redone_tuning(model, cfg, validation)
    assert_same_tuning(choices["metal_plate"], stored)
    # a 64 px view costs far under tiny's budget: every candidate also with one and with two mirror views
    assert {candidate["mirrors"] for candidate in stored["candidates"]} == {0, 1, 2}
    assert model.mirror_counts == (chosen["mirrors"],)
    # the stored level: the chosen map's 99 % quantile over the normal held-out images, where maps are then 0.5
    torch.testing.assert_close(levels, map_levels(model, validation, views, choices, ["metal_plate"]))
    normal = [i for i, sample in enumerate(validation.samples) if not sample.label]
    with torch.no_grad():
        levelled = model.maps(torch.stack([to_tensor(validation.images[i]) for i in normal]), 0)[:, 0]
    assert float(torch.quantile(levelled.flatten(), MAP_LEVEL_QUANTILE)) == pytest.approx(0.5, abs=0.01)
    assert max(c["pixel_auroc"] for c in stored["candidates"]) > 70  # the held-out defects are found
    assert (run / "tune" / "tuning.png").stat().st_size > 10_000


def test_a_run_killed_after_its_last_epoch_resumes_to_the_same_choice(run, capsys):
    before = (run / "tune" / "tuning.json").read_text()
    fusion = load_trained_model(run)[0].section_fusion
    (run / "model.safetensors").unlink()  # as if killed while tuning
    assert main(["train", "--resume", "--data", str(shared_data("metal_plate")), "--out", str(run)]) == 0
    assert "training on 43 of the 54 training images" in capsys.readouterr().err
    assert (run / "tune" / "tuning.json").read_text() == before
    torch.testing.assert_close(load_trained_model(run)[0].section_fusion, fusion)


def test_no_tune_trains_on_every_image_with_the_configs_fusion(tmp_path, capsys):
    assert train(tmp_path / "run", None, "--no-tune") == 0
    assert "training on" not in capsys.readouterr().err
    model, cfg, _ = load_trained_model(tmp_path / "run")
    assert model.section_fusion.shape == (0, 3) and not cfg.run.tune
    assert model.memory.image_sections.numel() == 54
    assert not (tmp_path / "run" / "tune").exists()


def test_a_category_too_small_to_hold_images_out_trains_on_all_and_says_why(tmp_path, capsys):
    small = tmp_path / "small" / "plate" / "train" / "good"
    small.mkdir(parents=True)
    for picture in sorted((shared_data("metal_plate", "train", "good")).iterdir())[:3]:
        shutil.copy(picture, small)
    assert train(tmp_path / "run", tmp_path / "small") == 0
    assert ("the map fusion is not tuned (plate has 3 training image(s), fewer than the 4 a category needs to hold "
            "some out)") in capsys.readouterr().err
    assert load_trained_model(tmp_path / "run")[0].section_fusion.shape == (0, 3)


def test_a_tiled_model_is_tuned_on_its_stitched_maps(tmp_path):
    run = tmp_path / "run"
    assert train(run, None, "--tile", "64", "--tile-source", "128") == 0
    model, cfg, _ = load_trained_model(run)
    assert cfg.tile_grid.count == 9  # rows and columns at 0, 48 and 64
    stored = json.loads((run / "tune" / "tuning.json").read_text())["metal_plate"]
    cache = ImageCache.build(train_samples(scan_roots([shared_data("metal_plate")])), cfg.input_shape)
    fit, validation = validation_split(cache, cfg.input_shape, VALIDATION_ANOMALIES)
    fill_memory(model, fit, cfg.run.seed, cfg.tile_grid)
    choices, views = redone_tuning(model, cfg, validation)
    assert_same_tuning(choices["metal_plate"], stored)
    torch.testing.assert_close(model.section_map_levels, map_levels(model, validation, views, choices, ["metal_plate"]))
    normal = [i for i, sample in enumerate(validation.samples) if not sample.label]
    with torch.no_grad():  # the whole pipeline: each tile's map levelled, then stitched
        maps = map_pairs(model, torch.stack([to_tensor(validation.images[i]) for i in normal]), cfg, 0)[0][:, 0]
    assert maps.shape[-2:] == (128, 128)
    assert float(torch.quantile(maps.flatten(), MAP_LEVEL_QUANTILE)) == pytest.approx(0.5, abs=0.03)
