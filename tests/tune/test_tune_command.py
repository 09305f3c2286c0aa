"""`mala tune`: a model trained on 80 % of the training images chooses each category's fusion on the rest (with
small synthetic defects), and the model file keeps the choice; bad input gets a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mala.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from mala.cli import main
from mala.model.load import load_trained_model
from mala.tune.protocol import GLOBAL_SHARES, MEMORY_WEIGHTS, SCORE_MAP_SHARES
from tests.conftest import shared_data

QUICK_HYBRID = ["model.image_size=64", "model.decoder_embed_dim=32", "model.decoder_depth=1",
                "model.decoder_num_heads=2", "model.backbone=efficientnet_lite0", "stage2.epochs=1",
                "stage2.images_per_category=4", "stage2.anomalous_per_category=2", "stage2.batch_size=4",
                "model.global_map=true", "global_map.steps=100"]
CALIBRATION = {"chosen_by": "a test", "entries": {}}


def train_quick(run: Path, *settings: str) -> Path:
    """`tiny` as a quick hybrid (lite0, 64 px, one short stage-2 epoch) trained on metal_plate's training images."""
    overrides = [arg for item in [*QUICK_HYBRID, *settings] for arg in ("--set", item)]
    assert main(["train", "--config", "tiny", "--data", str(shared_data("metal_plate")), "--accelerator", "cpu",
                 "--out", str(run), *overrides]) == 0
    return run


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    """A quick run with thresholds stored, then tuned (its protocol model trained in the run's `tune/`)."""
    run = train_quick(tmp_path_factory.mktemp("tuned") / "run")
    state = load_checkpoint(run / "model.safetensors")
    state["calibration"] = CALIBRATION
    save_checkpoint(run / "model.safetensors", state)
    assert main(["tune", "--checkpoint", str(run), "--data", str(shared_data("metal_plate"))]) == 0
    return run


def test_tune_stores_the_fusion_with_the_best_validation_figures_and_that_fusion_makes_the_maps(tuned):
    figures = json.loads((tuned / "tune" / "tuning.json").read_text())["metal_plate"]
    grid = {(w, s, g) for w in MEMORY_WEIGHTS for s in SCORE_MAP_SHARES for g in GLOBAL_SHARES}
    assert {(c["memory_weight"], c["score_map_share"], c["global_share"]) for c in figures["candidates"]} == grid
    assert {c["mirrors"] for c in figures["candidates"]} == {0, 1, 2}  # a 64 px view costs far under tiny's budget
    best = max(figures["candidates"], key=lambda c: c["pixel_auroc"] + c["pixel_aupro"])
    chosen = figures["chosen"]
    assert chosen == {key: best[key] for key in chosen}
    assert best["pixel_auroc"] > 70  # the held-out cracks and specks are found: the protocol can tell candidates apart
    model, cfg, _ = load_trained_model(tuned)
    torch.testing.assert_close(model.section_fusion, torch.tensor([[chosen["memory_weight"], chosen["score_map_share"],
                                                                    chosen["global_share"]]]))
    assert model.section_map_levels.shape == (1,) and 0 < float(model.section_map_levels[0]) < 1  # the map's level
    assert model.mirror_counts == (chosen["mirrors"],)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        parts = model.mirrored(images, model.map_parts(images, 0))
        expected = model.fused_maps(parts, chosen["memory_weight"], chosen["score_map_share"], chosen["global_share"])
        torch.testing.assert_close(model.maps(images, 0), expected)
        assert cfg.model.memory_weight == 0.5  # the config still says what the preset said; the file says what holds


def test_tune_draws_the_maps_of_the_configs_fusion_and_of_the_pick(tuned):
    import numpy as np
    from PIL import Image

    with Image.open(tuned / "tune" / "tuning.png") as picture:
        width, height = picture.size
        colours = len(np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0))
    assert width > 2 * height  # one category: a row of six panels (a crack and a speck, each with two maps)
    assert colours > 1000  # images and jet overlays, not an empty canvas


def test_mala_test_says_which_fusion_each_category_was_tested_with(tuned, tmp_path, capsys):
    chosen = json.loads((tuned / "tune" / "tuning.json").read_text())["metal_plate"]["chosen"]
    assert main(["test", "--checkpoint", str(tuned), "--data", str(shared_data("metal_plate")), "--figures", "0",
                 "--out", str(tmp_path / "report")]) == 0
    expected = f"map fusion tuned on training images: metal_plate w {chosen['memory_weight']:g}, share " \
               f"{chosen['score_map_share']:g}"
    assert expected in capsys.readouterr().err


def test_tune_moves_thresholds_chosen_on_the_old_maps_out_of_the_model(tuned):
    assert "calibration" not in read_metadata(tuned / "model.safetensors")
    assert json.loads((tuned / "tune" / "previous_thresholds.json").read_text()) == CALIBRATION


def test_a_second_tune_reuses_the_protocol_model_and_chooses_the_same(tuned, capsys):
    before = (tuned / "tune" / "tuning.json").read_text()
    assert main(["tune", "--checkpoint", str(tuned), "--data", str(shared_data("metal_plate"))]) == 0
    captured = capsys.readouterr()
    assert "the protocol's model" not in captured.err  # neither trained nor resumed
    assert "| metal_plate | memory weight" in captured.out
    assert (tuned / "tune" / "tuning.json").read_text() == before


def test_a_tune_killed_before_its_protocol_model_was_saved_resumes_from_its_checkpoint(tuned, capsys):
    before = (tuned / "tune" / "tuning.json").read_text()
    (tuned / "tune" / "protocol" / "model.safetensors").unlink()  # as if killed after the last checkpoint
    assert main(["tune", "--checkpoint", str(tuned), "--data", str(shared_data("metal_plate"))]) == 0
    assert "resuming the protocol's model" in capsys.readouterr().err
    assert (tuned / "tune" / "tuning.json").read_text() == before


def test_a_model_without_a_memory_or_without_the_categories_data_is_refused(tuned, tmp_path, capsys):
    pixel_vit = train_quick(tmp_path / "vit", "model.backbone=none", "model.patch_size=8", "model.embed_dim=64",
                            "model.depth=1", "model.num_heads=2", "model.memory_weight=0")
    capsys.readouterr()
    assert main(["tune", "--checkpoint", str(pixel_vit), "--data", str(shared_data("metal_plate"))]) != 0
    assert "only a model with a normal-feature memory has a map fusion to tune" in capsys.readouterr().err
    assert main(["tune", "--checkpoint", str(tuned), "--data", str(shared_data("magnetic_tile"))]) != 0
    assert "categories not found: metal_plate (found: magnetic_tile)" in capsys.readouterr().err


def test_a_protocol_model_of_another_config_is_not_reused(tuned, tmp_path, capsys):
    other = train_quick(tmp_path / "other", "model.decoder_depth=2")
    capsys.readouterr()
    assert main(["tune", "--checkpoint", str(other), "--data", str(shared_data("metal_plate")),
                 "--out", str(tuned / "tune")]) != 0
    assert "a protocol model of another model config or other categories" in capsys.readouterr().err


def test_a_tiled_model_is_tuned_too(tmp_path):
    run = tmp_path / "run"
    overrides = [arg for item in [*QUICK_HYBRID, "run.tune=false"] for arg in ("--set", item)]
    assert main(["train", "--config", "tiny", "--data", str(shared_data("metal_plate")), "--accelerator", "cpu",
                 "--out", str(run), "--tile", "64", "--tile-source", "96", *overrides]) == 0
    assert load_trained_model(run)[0].section_fusion.numel() == 0  # trained untuned
    assert main(["tune", "--checkpoint", str(run), "--data", str(shared_data("metal_plate"))]) == 0
    model, cfg, _ = load_trained_model(run)
    assert cfg.tile_grid.count == 4 and model.section_fusion.shape == (1, 3)
    assert 0 < float(model.section_map_levels[0]) < 1
