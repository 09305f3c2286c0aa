"""`mala pretrain`: stage 1 alone on unlabeled folders writes weights that `mala train --init` takes."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from mala.checkpoint import load_checkpoint
from mala.cli import main
from mala.config import load_config
from mala.data.unlabeled import unlabeled_samples
from mala.errors import DataError
from mala.train.trainer import Trainer
from tests.conftest import shared_data


@pytest.fixture
def config_file(small_config, tmp_path) -> Path:
    """The unit-test model at 32 px (4 x 4 patches of 8 px); on `textures`: 3 categories x 4 images, 2 steps/epoch."""
    cfg = small_config
    cfg.model.image_size = 32
    cfg.stage1.images_per_category, cfg.stage1.batch_size = 4, 6
    cfg.stage1.base_lr, cfg.stage1.warmup_epochs = 0.1, 0
    cfg.run.num_workers = 0
    cfg.save(tmp_path / "config.yaml")
    return tmp_path / "config.yaml"


@pytest.fixture
def textures(tmp_path) -> Path:
    """Three DTD images in each of two subfolders, and one lying directly in the folder."""
    root = tmp_path / "textures"
    for texture in ("banded", "bubbly"):
        (root / texture).mkdir(parents=True)
        for image in sorted(shared_data("dtd", "images", texture).iterdir())[:3]:
            shutil.copy(image, root / texture / image.name)
    shutil.copy(image, root / image.name)
    return root


def test_one_category_per_top_level_folder(textures, tmp_path):
    samples = unlabeled_samples([textures])
    counts = {c: sum(s.category == c for s in samples) for c in {s.category for s in samples}}
    assert counts == {"textures/banded": 3, "textures/bubbly": 3, "textures": 1}
    assert all(s.split == "train" and s.label == 0 for s in samples)
    (tmp_path / "other" / "textures").mkdir(parents=True)
    with pytest.raises(DataError, match="two data folders are named textures"):
        unlabeled_samples([textures, tmp_path / "other" / "textures"])


def test_pretraining_lowers_the_loss_and_its_file_initialises_a_run(textures, config_file, tmp_path, capsys):
    torch.manual_seed(0)
    out = tmp_path / "pretrained"
    assert main(["pretrain", "--data", str(textures), "--out", str(out), "--config", str(config_file),
                 "--epochs", "2"]) == 0
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["stage"], row["epoch"]) for row in rows] == [("1", "1"), ("1", "2")]  # and no stage 2
    assert float(rows[1]["loss"]) < float(rows[0]["loss"]), rows

    torch.manual_seed(1)  # another random start than the pretraining run's
    trainer = Trainer(load_config(str(config_file)), tmp_path / "run", init=out / "model.safetensors")
    assert "initialised encoder and decoder from" in capsys.readouterr().out
    pretrained, started = load_checkpoint(out / "model.safetensors")["model"], trainer.model.state_dict()
    assert all(torch.equal(started[k], v) for k, v in pretrained.items() if not k.startswith("tbm."))


def test_pretraining_on_tiles_writes_a_tiled_config(textures, config_file, tmp_path):
    out = tmp_path / "tiled"
    assert main(["pretrain", "--data", str(textures), "--out", str(out), "--config", str(config_file),
                 "--epochs", "1", "--tile", "32", "--tile-source", "48x64", "--tile-stride", "16"]) == 0
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.model.image_size == 32 and cfg.tiling.source_size == [48, 64] and cfg.tiling.stride == 16
    assert main(["pretrain", "--data", str(textures), "--out", str(out), "--resume", "--tile", "32"]) == 2
    assert main(["pretrain", "--data", str(textures), "--out", str(tmp_path / "median"), "--config",
                 str(config_file), "--epochs", "1", "--tile", "32"]) == 0  # the source: the images' median size
    assert load_config(str(tmp_path / "median" / "config.yaml")).tiling.source_size is not None
