"""The trainer: resume after an interruption reaches the same weights; a non-finite loss stops with a clear error."""

import dataclasses

import pytest
import torch
from lightning_fabric import Fabric

from mala.checkpoint import read_metadata
from mala.config import TilingConfig, load_config
from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots
from mala.errors import MalaError
from mala.train import stage1 as stage1_module
from mala.train.setup import TrainingData
from mala.train.trainer import LAST_CHECKPOINT, Trainer
from tests.conftest import shared_data


@pytest.fixture
def quick(small_config):
    cfg = small_config
    cfg.stage1.epochs, cfg.stage1.warmup_epochs, cfg.stage1.images_per_category, cfg.stage1.batch_size = 3, 1, 8, 4
    cfg.stage2.epochs, cfg.stage2.images_per_category, cfg.stage2.anomalous_per_category = 2, 8, 6
    cfg.stage2.batch_size = 4
    samples = [s for s in scan_roots([shared_data("metal_plate")]) if s.split == "train"][:6]
    return cfg, TrainingData(ImageCache.build(samples, 64, workers=1), object_categories=["metal_plate"])


def _fabric() -> Fabric:
    return Fabric(accelerator="cpu", devices=1)


def _tiled(cfg, data: TrainingData) -> tuple:
    """The quick run on 64 px tiles of the same images at 80 x 96 px (random tile positions must resume too)."""
    cfg = dataclasses.replace(cfg, tiling=TilingConfig(source_size=[80, 96], stride=16))
    cache = ImageCache.build(data.cache.samples, cfg.input_shape, workers=1)
    return cfg, TrainingData(cache, object_categories=data.object_categories)


@pytest.mark.parametrize("every_steps, stop_at_call, resumed_at, tiled", [
    (0, 5, (1, 2, 0), False),  # 2 steps per epoch: stopped in epoch 3, resumed from the epoch-2 checkpoint
    (1, 4, (1, 1, 1), False),  # step checkpoints: stopped at epoch 2 step 2, resumed after its first step
    (0, 5, (1, 2, 0), True),
])
def test_resume_after_interruption_reaches_the_same_weights(tmp_path, quick, monkeypatch, every_steps, stop_at_call,
                                                             resumed_at, tiled):
    cfg, data = _tiled(*quick) if tiled else quick
    cfg.run.checkpoint_every_steps = every_steps
    torch.manual_seed(0)
    reference = Trainer(cfg, tmp_path / "straight", _fabric())
    reference.fit(data)

    calls = {"n": 0}
    original_step = stage1_module.Stage1.accumulated_step

    def interrupted_step(self, *args):
        calls["n"] += 1
        if calls["n"] == stop_at_call:
            raise KeyboardInterrupt
        return original_step(self, *args)

    monkeypatch.setattr(stage1_module.Stage1, "accumulated_step", interrupted_step)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "killed", _fabric()).fit(data)
    monkeypatch.setattr(stage1_module.Stage1, "accumulated_step", original_step)

    resumed = Trainer.resume(tmp_path / "killed", _fabric())
    assert (resumed.position.stage, resumed.position.epoch, resumed.position.step) == resumed_at
    resumed.fit(data)
    for key, value in reference.model.state_dict().items():  # same order of operations: bit for bit
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert (tmp_path / "killed" / "model.safetensors").exists()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, quick, monkeypatch):
    cfg, data = quick
    original_step = stage1_module.Stage1.accumulated_step

    def exploding_step(self, batches, progress):
        parts = original_step(self, batches, progress)
        return {**parts, "loss": float("nan")} if progress >= 1 else parts

    monkeypatch.setattr(stage1_module.Stage1, "accumulated_step", exploding_step)
    with pytest.raises(MalaError, match=r"stage 1, epoch 2, step 1: loss is nan.*last good checkpoint"):
        Trainer(cfg, tmp_path / "run", _fabric()).fit(data)
    last = tmp_path / "run" / LAST_CHECKPOINT
    assert read_metadata(last)["progress"] == {"stage": 1, "epoch": 1, "step": 0, "run_step": 2}  # the good one


@pytest.mark.parametrize("textures", [False, True])
def test_a_run_states_where_its_anomalies_come_from(tmp_path, quick, capsys, textures):
    cfg, data = quick
    cfg.stage1.enabled, cfg.stage2.epochs = False, 1
    if textures:
        cfg.synth.texture_dir = str(shared_data("metal_plate", "train", "good"))  # any images serve as textures
    Trainer(cfg, tmp_path / "run", _fabric()).fit(data)
    err = capsys.readouterr().err
    recorded = load_config(str(tmp_path / "run" / "config.yaml")).synth.anomaly_source
    if textures:
        assert "synthetic anomalies: 50% textures from" in err and "warning" not in err
        assert recorded == f"50% textures from {cfg.synth.texture_dir}, 50% the image itself"
    else:
        assert "warning: no texture folder" in err and "not from DTD as in the paper" in err
        assert recorded.startswith("self-texture only (no DTD)")
