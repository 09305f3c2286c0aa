"""Runs stage 1 then stage 2 through Lightning Fabric, with progress, logs, resumable checkpoints and the final model."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning_fabric import Fabric
from tqdm import tqdm

from mala.config import MalaConfig, config_from_dict
from mala.data.dataset import ImageCache
from mala.errors import CheckpointError, MalaError
from mala.model import MALA
from mala.model.init import initialise
from mala.synth import AnomalySynthesizer, foreground_mask, looks_like_object
from mala.checkpoint import load_checkpoint, load_module_state, save_checkpoint
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2

LAST_CHECKPOINT = "checkpoints/last.safetensors"
MODEL_FILE = "model.safetensors"


@dataclass
class Progress:
    stage: int = 1
    epoch: int = 0  # epochs completed in `stage`

    def finished(self, cfg: MalaConfig) -> bool:
        return self.stage > 2 or (self.stage == 2 and self.epoch >= cfg.stage2.epochs)


@dataclass
class TrainingData:
    """Normal training images of all categories, and which categories are objects (local anomalies)."""

    cache: ImageCache
    object_categories: list[str] = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return sorted(self.cache.indices_by_category())


def decide_object_categories(cache: ImageCache, configured: list[str] | None, probe: int = 8) -> list[str]:
    """Configured list, or the automatic rule of `looks_like_object` on a few normal images per category."""
    if configured is not None:
        return sorted(configured)
    chosen = []
    for category, indices in cache.indices_by_category().items():
        images = [cache.images[i].astype(np.float32) / 255.0 for i in indices[:probe]]
        if looks_like_object(images):
            chosen.append(category)
    return chosen


def make_fabric(cfg: MalaConfig) -> Fabric:
    fabric = Fabric(
        accelerator=cfg.run.accelerator, devices=cfg.run.devices, num_nodes=cfg.run.num_nodes, precision=cfg.run.precision
    )
    fabric.launch()
    return fabric


class Trainer:
    def __init__(self, cfg: MalaConfig, run_dir: Path, fabric: Fabric | None = None, init: Path | None = None):
        """`init`: a file to take the starting encoder (and decoder) from (`mala.model.init`); `resume` passes none."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.fabric = fabric or make_fabric(cfg)
        self.model = MALA(cfg.model)
        if init is not None:
            self.fabric.print(initialise(self.model, init).summary())
        self.progress = Progress()
        self._resume_state: dict | None = None
        self.saved_data: dict = {}

    # ----- resume ----------------------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: Path, fabric: Fabric | None = None) -> "Trainer":
        """Continue a run from its last checkpoint, with the configuration it was started with."""
        path = Path(run_dir) / LAST_CHECKPOINT
        if not path.exists():
            raise CheckpointError(f"{run_dir}: nothing to resume (no {LAST_CHECKPOINT})")
        state = load_checkpoint(path)
        trainer = cls(config_from_dict(state["config"], str(path)), run_dir, fabric)
        load_module_state(trainer.model, state["model"], path)
        trainer.progress = Progress(**state["progress"])
        trainer._resume_state = state
        trainer.saved_data = state["data"]
        return trainer

    # ----- the two stages ----------------------------------------------------------------------------------

    def fit(self, data: TrainingData) -> Path:
        """Train what is left of both stages; returns the path of the final model."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.run_dir / "config.yaml")
        if self.progress.stage == 1:
            if self.cfg.stage1.enabled and self.progress.epoch < self.cfg.stage1.epochs:
                self._run(Stage1(self.cfg, self.model, self.fabric, data.cache), data, self.cfg.stage1.epochs)
            self.progress = Progress(stage=2, epoch=0)
            self._resume_state = None
        if self.cfg.run.pipeline == "end_to_end" and self.progress.epoch < self.cfg.stage2.epochs:
            runner = Stage2(self.cfg, self.model, self.fabric, data.cache, self._synthesizer(), self._foregrounds(data))
            self._run(runner, data, self.cfg.stage2.epochs)
        return self._save_model(data)

    def _synthesizer(self) -> AnomalySynthesizer:
        synthesizer = AnomalySynthesizer(self.cfg.synth, self.cfg.model.image_size)
        if self.cfg.run.num_workers > 0:
            synthesizer.preload()  # before the loaders fork, so every epoch's workers share decoded textures
        return synthesizer

    @staticmethod
    def _foregrounds(data: TrainingData) -> dict[int, np.ndarray]:
        objects = set(data.object_categories)
        return {
            i: foreground_mask(data.cache.images[i].astype(np.float32) / 255.0)
            for i, sample in enumerate(data.cache.samples)
            if sample.category in objects
        }

    def _run(self, runner: Stage1 | Stage2, data: TrainingData, epochs: int) -> None:
        if self._resume_state is not None:
            runner.load_state_dict(self._resume_state["stage_state"])
            self._resume_state = None
        stage = runner.stage
        per_epoch = len(data.categories) * runner.settings.images_per_category
        bar = tqdm(
            total=epochs * per_epoch, initial=self.progress.epoch * per_epoch, unit="img",
            desc=f"stage {stage}", disable=not self.fabric.is_global_zero, dynamic_ncols=True,
        )
        for epoch in range(self.progress.epoch, epochs):
            torch.manual_seed(hash((self.cfg.run.seed, stage, epoch, self.fabric.global_rank)) % 2**31)
            started, sums, steps = time.perf_counter(), {}, 0
            for step, batch in enumerate(runner.loader(epoch)):
                parts = runner.step(batch, epoch + step / runner.steps_per_epoch)
                self._check_finite(parts["loss"], stage, epoch, step)
                sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
                steps += 1
                bar.update(_batch_len(batch) * self.fabric.world_size)
                bar.set_postfix(epoch=epoch + 1, loss=f"{parts['loss']:.4f}")
            self.progress = Progress(stage, epoch + 1)
            rate = per_epoch / (time.perf_counter() - started)
            self._log({"stage": stage, "epoch": epoch + 1, "img_per_s": round(rate, 2),
                       **{k: v / steps for k, v in sums.items()}})
            if (epoch + 1) % self.cfg.run.checkpoint_every == 0 or epoch + 1 == epochs:
                self._save_last(runner, data)
        bar.close()

    def _check_finite(self, loss: float, stage: int, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            raise MalaError(
                f"stage {stage}, epoch {epoch + 1}, step {step + 1}: loss is {loss}; training stopped. "
                f"The last good checkpoint is {self.run_dir / LAST_CHECKPOINT} (resume with --resume after "
                "lowering the learning rate)"
            )

    # ----- files ---------------------------------------------------------------------------------------------

    def _data_info(self, data: TrainingData) -> dict:
        return {"categories": data.categories, "object_categories": data.object_categories}

    def _save_last(self, runner: Stage1 | Stage2, data: TrainingData) -> None:
        if not self.fabric.is_global_zero:
            return
        state = {
            "kind": "training",
            "config": self.cfg.to_dict(),
            "progress": vars(self.progress),
            "data": self._data_info(data),
            "model": self.model.state_dict(),
            "stage_state": runner.state_dict(),
        }
        save_checkpoint(self.run_dir / LAST_CHECKPOINT, state)
        (self.run_dir / "state.json").write_text(json.dumps({"progress": vars(self.progress), **self._data_info(data)}))

    def _save_model(self, data: TrainingData) -> Path:
        path = self.run_dir / MODEL_FILE
        if self.fabric.is_global_zero:
            state = {"kind": "model", "config": self.cfg.to_dict(), "data": self._data_info(data),
                     "model": self.model.state_dict()}
            save_checkpoint(path, state)
        self.fabric.barrier()
        return path

    def _log(self, row: dict) -> None:
        if not self.fabric.is_global_zero:
            return
        path = self.run_dir / "log.csv"
        fields = ["stage", "epoch", "img_per_s", "loss", "l1", "ssim", "adv", "disc", "focal", "lr"]
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def _batch_len(batch) -> int:
    return len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
