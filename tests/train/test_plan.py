"""`mala train --dry-run`: the plan's step counts follow the config and the data, and nothing is trained."""

from __future__ import annotations

import math

from mala.cli import main
from mala.config import load_config
from tests.conftest import shared_data


def test_dry_run_prints_steps_per_epoch_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    # 64 px only makes the timed steps quicker: the plan's counts do not depend on the image size
    assert main(["train", "--config", "tiny", "--dry-run", "--data", str(shared_data("metal_plate")),
                 "--set", "model.image_size=64", "--set", "stage1.enabled=true", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    cfg = load_config("tiny")
    for stage, settings in ((1, cfg.stage1), (2, cfg.stage2)):
        images = settings.images_per_category  # metal_plate is one category
        steps = math.ceil(images / settings.batch_size)
        assert f"stage {stage}: {images} images per epoch" in printed, printed
        total = steps * settings.epochs
        assert f"{steps} steps per epoch x {settings.epochs} epochs = {total} optimizer steps" in printed
    assert f"lr {cfg.stage1.base_lr * cfg.stage1.batch_size / 256:.3g}" in printed
    assert "estimated training time on cpu" in printed
    assert not out.exists()


def test_dry_run_does_not_combine_with_resume(tmp_path, capsys):
    assert main(["train", "--dry-run", "--resume", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--dry-run plans a fresh run" in capsys.readouterr().err


def test_dry_run_at_a_rectangular_size_counts_its_tokens(tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--dry-run", "--data", str(shared_data("metal_plate")),
                 "--image-size", "32x64", "--set", "stage1.enabled=true", "--out", str(tmp_path / "run")]) == 0
    assert "75% of patches masked (2 of 8 visible)" in capsys.readouterr().out


def test_dry_run_counts_one_memory_fill_or_two_when_it_tunes(tmp_path, capsys):
    base = ["train", "--config", "tiny", "--dry-run", "--data", str(shared_data("metal_plate")),
            "--set", "model.image_size=64", "--out", str(tmp_path / "run")]
    said = {}
    for tune in ("true", "false"):
        assert main([*base, "--set", f"run.tune={tune}"]) == 0
        said[tune] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("memory: ")]
    assert len(said["true"]) == 1 and said["true"][0].startswith("memory: filled twice (run.tune")
    assert len(said["false"]) == 1 and said["false"][0].startswith("memory: filled once after stage 2")
    assert main([*base, "--set", "model.backbone=none"]) == 0  # a pixel ViT has no memory to fill
    assert "memory: " not in capsys.readouterr().out


def test_dry_run_counts_the_global_maps_steps_when_the_model_has_one(tmp_path, capsys):
    base = ["train", "--config", "tiny", "--dry-run", "--data", str(shared_data("metal_plate")),
            "--set", "model.image_size=64", "--out", str(tmp_path / "run")]
    said = {}
    for on in ("true", "false"):
        assert main([*base, "--set", f"model.global_map={on}", "--set", "global_map.steps=1234"]) == 0
        said[on] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("global map: ")]
    assert len(said["true"]) == 1 and said["true"][0].startswith("global map: 1234 autoencoder steps after stage 2")
    assert said["false"] == []
