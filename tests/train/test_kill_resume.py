"""A `mala train` process killed with SIGKILL in the middle of stage 1 (the pixel ViT) or stage 2 (the hybrid of
the `tiny` preset, with its memory) resumes from its last step checkpoint and ends with the weights of an
uninterrupted run; the run folder holds CSV and TensorBoard logs and loss.png."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from mala.checkpoint import read_metadata
from mala.train import logs
from mala.train.trainer import LAST_CHECKPOINT
from tests.train.tiny_cli import resume_command, run, train_command, weights

SETTINGS = ["stage1.epochs=4", "stage1.warmup_epochs=1", "stage1.images_per_category=16", "stage1.batch_size=4",
            "stage2.epochs=1", "stage2.images_per_category=8", "stage2.anomalous_per_category=6",
            "stage2.batch_size=4"]
FLAGS = ["--checkpoint-every-steps", "1", "--keep-checkpoints", "2"]
STEPS = 4 * 4 + 2  # stage 1: 4 epochs x 16 images / 4; stage 2: 8 / 4
HYBRID = ["model.backbone=efficientnet_lite0", "model.patch_size=16", "model.tbm_tokens=backbone",
          "model.memory_weight=0.5", "stage1.enabled=false", "stage2.epochs=3", "stage2.images_per_category=8",
          "stage2.anomalous_per_category=6", "stage2.batch_size=4"]


def _progress(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "state.json").read_text())["progress"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kill_after(command: list[str], run_dir: Path, after_steps: int = 3, timeout: float = 240) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while (progress := _progress(run_dir)) is None or progress["run_step"] < after_steps:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "straight"
    run(train_command(out, SETTINGS, *FLAGS))
    return out


def test_sigkill_in_stage1_then_resume_reaches_the_uninterrupted_weights(tmp_path, straight):
    killed = tmp_path / "killed"
    command = train_command(killed, SETTINGS, *FLAGS)
    _kill_after(command, killed)
    progress = read_metadata(killed / LAST_CHECKPOINT)["progress"]
    assert progress["stage"] == 1 and progress["epoch"] < 4, progress  # killed inside stage 1
    named = sorted(p.name for p in (killed / "checkpoints").glob("stage*.safetensors"))
    assert len(named) <= 2  # keep-last-K

    run(resume_command(killed))
    reference, resumed = weights(straight), weights(killed)
    for key in reference:  # deterministic CPU steps in the same order: bit for bit
        assert torch.equal(reference[key], resumed[key]), key
    with (killed / "steps.csv").open() as handle:
        steps = [int(row["run_step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(1, STEPS + 1))  # rows written after the checkpoint were dropped, none repeated


def test_sigkill_in_stage2_of_the_hybrid_then_resume_reaches_the_uninterrupted_weights_and_memory(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(train_command(straight, HYBRID, *FLAGS))
    _kill_after(train_command(killed, HYBRID, *FLAGS), killed)
    progress = read_metadata(killed / LAST_CHECKPOINT)["progress"]
    assert progress["stage"] == 2 and progress["epoch"] < 3, progress
    run(resume_command(killed))
    reference, resumed = weights(straight), weights(killed)
    assert reference["s.model.memory.tokens"].shape[0] > 0 and reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_run_folder_has_csv_and_tensorboard_logs_and_the_loss_plot(straight):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with (straight / "steps.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == STEPS and all(float(row["img_per_s"]) > 0 and row["lr"] for row in rows)
    with (straight / "log.csv").open() as handle:
        assert [(row["stage"], row["epoch"]) for row in csv.DictReader(handle)] == \
            [("1", "1"), ("1", "2"), ("1", "3"), ("1", "4"), ("2", "1")]
    events = EventAccumulator(str(straight / logs.TENSORBOARD_DIR))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"stage1/loss", "stage1/lr", "stage1/img_per_s", "stage2/loss", "stage2/focal"} <= set(scalars)
    assert [e.step for e in events.Scalars("stage1/loss")] == list(range(1, 17))
    assert (straight / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_tensorboard_it_says_so_once_and_logs_csv(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torch.utils.tensorboard", None)  # import fails
    logger = logs.RunLogger(tmp_path, enabled=True)
    for step in (1, 2):
        logger.step({"stage": 1, "epoch": 1, "step": step, "run_step": step, "img_per_s": 1.0, "loss": 0.5})
    logger.stage_done()
    assert capsys.readouterr().err.count("tensorboard is not installed") == 1
    assert (tmp_path / "steps.csv").read_text().count("\n") == 3 and (tmp_path / "loss.png").exists()
    assert not (tmp_path / logs.TENSORBOARD_DIR).exists()
