"""Runs stage 1 then stage 2 through Lightning Fabric, with progress, logs, resumable checkpoints and the final model."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from lightning_fabric import Fabric

from mala.checkpoint import load_checkpoint, save_checkpoint
from mala.config import MalaConfig, config_from_dict
from mala.data.dataset import ImageCache
from mala.errors import CheckpointError, ConfigError, MalaError
from mala.model import MALA
from mala.model.load import load_model_state
from mala.model.starting_weights import initialise
from mala.progress import ProgressBar, progress
from mala.synth import AnomalySynthesizer
from mala.train.fill_memory import fill_memory
from mala.train.fit_global_map import train_global_map
from mala.train.logs import RunLogger
from mala.train.resumable import CHECKPOINT_DIR, LAST_NAME, checkpoint_name, save_rotating
from mala.train.setup import TrainingData, start_lines
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2

LAST_CHECKPOINT = f"{CHECKPOINT_DIR}/{LAST_NAME}"
MODEL_FILE = "model.safetensors"


@dataclass
class TrainingPosition:
    """Where training is: what a checkpoint stores as "progress" and a resumed run starts from."""

    stage: int = 1
    epoch: int = 0  # epochs completed in `stage`
    step: int = 0  # optimizer steps done in epoch `epoch` (0-based) of `stage`: > 0 after a mid-epoch checkpoint
    run_step: int = 0  # optimizer steps done in the whole run (the x axis of the logs)


def make_fabric(cfg: MalaConfig) -> Fabric:
    """Fabric for the run's devices; with several on one machine, `launch` starts the other ranks' processes
    (under torchrun, which started them already, it starts none)."""
    run = cfg.run
    try:
        fabric = Fabric(accelerator=run.accelerator, devices=run.devices, num_nodes=run.num_nodes,
                        strategy=run.strategy, precision=run.precision)
    except (ValueError, RuntimeError) as exc:  # e.g. an unknown precision, more devices than there are
        raise ConfigError(f"run settings: {' '.join(str(exc).split())}") from None
    fabric.launch()
    return fabric


def step_seed(seed: int, stage: int, epoch: int, step: int) -> int:
    """The torch seed of one optimizer step, alike on all ranks: resume at any step repeats the random draws
    (masking noise) of an uninterrupted run, and the ranks draw the global batch's noise together."""
    return int(np.random.SeedSequence([seed, stage, epoch, step]).generate_state(1)[0])


def grouped(batches: Iterable, size: int) -> Iterator[list]:
    """Consecutive groups of `size` batches (the last may be shorter): one optimizer step each."""
    iterator = iter(batches)
    while group := list(islice(iterator, size)):
        yield group


@dataclass
class HeldOut:
    """Tuning in training (`run.tune`): the stages train on part of the images; `tune` picks each memory section's
    fusion and its map's normal level on images they never saw, with the memory of the images they did, and sets them
    in the model (it writes its report where the flag says); then the memory is filled from `every_image`."""

    every_image: ImageCache
    tune: Callable[[MALA, bool], None]


class Trainer:
    def __init__(self, cfg: MalaConfig, run_dir: Path, fabric: Fabric | None = None, init: Path | None = None):
        """`init`: a file to take the starting encoder (and decoder) from (`mala.model.starting_weights`); `resume` passes none."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.fabric = fabric or make_fabric(cfg)
        torch.manual_seed(cfg.run.seed)  # the initial weights (and the PLPM's), alike for every launch of a seed
        self.model = MALA(cfg.model)
        if init is not None:
            self.fabric.print(initialise(self.model, init).summary())
        if cfg.run.compile:
            for block in [*self.model.blocks, *self.model.decoder_blocks]:
                block.compile()  # in place: weight names, and so checkpoints, stay those of the plain model
        self.position = TrainingPosition()
        self._resume_state: dict | None = None
        self._resumed_from: TrainingPosition | None = None
        self.saved_data: dict = {}
        self.logger: RunLogger | None = None

    # ----- resume ----------------------------------------------------------------------------------------

    @classmethod
    def resume(cls, run_dir: Path, fabric: Fabric | None = None) -> "Trainer":
        """Continue a run from its last checkpoint, with the configuration it was started with."""
        path = Path(run_dir) / LAST_CHECKPOINT
        if not path.exists():
            raise CheckpointError(f"{run_dir}: nothing to resume (no {LAST_CHECKPOINT})")
        state = load_checkpoint(path)
        trainer = cls(config_from_dict(state["config"], str(path)), run_dir, fabric)
        load_model_state(trainer.model, state["model"], path)
        trainer.position = trainer._resumed_from = TrainingPosition(**state["progress"])
        trainer._resume_state = state
        trainer.saved_data = state["data"]
        return trainer

    # ----- the two stages ----------------------------------------------------------------------------------

    def fit(self, data: TrainingData, held_out: HeldOut | None = None) -> Path:
        """Train what is left of both stages (then tune the fusion on the `held_out` images); returns the path of the
        final model."""
        if self.fabric.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.run_dir / "config.yaml")
            for line in start_lines(self.cfg, data):
                print(f"mala: {line}", file=sys.stderr)
        self.logger = RunLogger(self.run_dir, self.fabric.is_global_zero, self._resumed_from)
        try:
            self._train_stages(data)
        finally:
            self.logger.close()
        if self.cfg.model.has_memory:
            if self.model.global_map is not None:
                self._train_global_map(data.cache)
            fill_memory(self.model, data.cache, self.cfg.run.seed, self.cfg.tile_grid, self.fabric)
            if held_out is not None:
                held_out.tune(self.model, self.fabric.is_global_zero)
                fill_memory(self.model, held_out.every_image, self.cfg.run.seed, self.cfg.tile_grid, self.fabric)
        return self._save_model(data)

    def _train_global_map(self, cache: ImageCache) -> None:
        """The global map's autoencoder on `cache`'s normal images (retrained in full by a resumed run)."""
        started = time.perf_counter()
        losses = train_global_map(self.model, cache, self.cfg.global_map, self.cfg.run.seed, self.cfg.tile_grid,
                                  self.fabric)
        self.fabric.print(f"mala: global map trained, loss {losses[0]:.4f} -> {losses[-1]:.4f} in "
                          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)

    def _train_stages(self, data: TrainingData) -> None:
        if self.position.stage == 1:
            if self.cfg.stage1.enabled and self.position.epoch < self.cfg.stage1.epochs:
                self._run(Stage1(self.cfg, self.model, self.fabric, data.cache), data, self.cfg.stage1.epochs)
            self.position = TrainingPosition(stage=2, run_step=self.position.run_step)
            self._resume_state = None
        if self.cfg.run.pipeline == "end_to_end" and self.position.epoch < self.cfg.stage2.epochs:
            runner = Stage2(self.cfg, self.model, self.fabric, data.cache, self._synthesizer(), data.foregrounds())
            self._run(runner, data, self.cfg.stage2.epochs)

    def _synthesizer(self) -> AnomalySynthesizer:
        synthesizer = AnomalySynthesizer(self.cfg.synth, self.cfg.model.image_shape)
        if self.cfg.run.num_workers > 0:
            synthesizer.preload()  # before the loaders fork, so every epoch's workers share decoded textures
        return synthesizer

    def _run(self, runner: Stage1 | Stage2, data: TrainingData, epochs: int) -> None:
        if self._resume_state is not None:
            runner.load_state_dict(self._resume_state["stage_state"])
            self._resume_state = None
        per_epoch = len(data.categories) * runner.settings.images_per_category
        bar = progress(
            total=epochs * per_epoch, unit="img", desc=f"stage {runner.stage}",
            initial=min(self.position.epoch * per_epoch + self.position.step * runner.global_batch_size, per_epoch * epochs),
            disable=not self.fabric.is_global_zero,
        )
        for epoch in range(self.position.epoch, epochs):
            self._run_epoch(runner, data, epoch, bar)
            self.position = TrainingPosition(runner.stage, epoch + 1, 0, self.position.run_step)
            if (epoch + 1) % self.cfg.run.checkpoint_every == 0 or epoch + 1 == epochs:
                self._save_last(runner, data)
        bar.close()
        self.logger.stage_done()

    def _run_epoch(self, runner: Stage1 | Stage2, data: TrainingData, epoch: int, bar: ProgressBar) -> None:
        """The epoch's optimizer steps from `progress.step` on (0 unless resumed mid-epoch), with step checkpoints."""
        stage, run = runner.stage, self.cfg.run
        first = self.position.step
        loader = runner.loader(epoch, skip_steps=first)
        started, sums, images = time.perf_counter(), {}, 0
        for step, batches in enumerate(grouped(loader, run.accumulate), start=first):
            torch.manual_seed(step_seed(run.seed, stage, epoch, step))
            step_started = time.perf_counter()
            parts = self._mean_over_ranks(runner.accumulated_step(batches, epoch + step / runner.steps_per_epoch))
            self._check_finite(parts["loss"], stage, epoch, step)
            self.position = TrainingPosition(stage, epoch, step + 1, self.position.run_step + 1)
            step_images = sum(_batch_len(batch) for batch in batches) * self.fabric.world_size
            images += step_images
            sums = {k: sums.get(k, 0.0) + v for k, v in parts.items()}
            self.logger.step({"stage": stage, "epoch": epoch + 1, "step": step + 1, "run_step": self.position.run_step,
                              "img_per_s": step_images / (time.perf_counter() - step_started), **parts})
            bar.update(step_images)
            bar.set_postfix(epoch=epoch + 1, loss=f"{parts['loss']:.4f}")
            if run.checkpoint_every_steps and (step + 1) % run.checkpoint_every_steps == 0 \
                    and step + 1 < runner.steps_per_epoch:  # the epoch's end has its own checkpoint rule
                self._save_last(runner, data)
        steps = max(self.position.step - first, 1)
        self.logger.epoch({"stage": stage, "epoch": epoch + 1, "img_per_s": images / (time.perf_counter() - started),
                           **{k: v / steps for k, v in sums.items()}})

    def _mean_over_ranks(self, parts: dict[str, float]) -> dict[str, float]:
        """The loss parts averaged over the ranks: what one process with the global batch would report, and
        a non-finite loss on any rank stops all of them at the same step."""
        if self.fabric.world_size == 1:
            return parts
        keys = sorted(parts)
        means = self.fabric.all_reduce(torch.tensor([parts[k] for k in keys], dtype=torch.float64), reduce_op="mean")
        return dict(zip(keys, means.tolist()))

    def _check_finite(self, loss: float, stage: int, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            last = self.run_dir / LAST_CHECKPOINT
            kept = (f"The last good checkpoint is {last} (resume with --resume after lowering the learning rate)"
                    if last.exists() else "No checkpoint was written before it")
            raise MalaError(f"stage {stage}, epoch {epoch + 1}, step {step + 1}: loss is {loss}; "
                            f"training stopped. {kept}")

    # ----- files ---------------------------------------------------------------------------------------------

    def _data_info(self, data: TrainingData) -> dict:
        return {"categories": data.categories, "object_categories": data.object_categories}

    def _save_last(self, runner: Stage1 | Stage2, data: TrainingData) -> None:
        if not self.fabric.is_global_zero:
            return
        state = {
            "kind": "training",
            "config": self.cfg.to_dict(),
            "progress": vars(self.position),
            "data": self._data_info(data),
            "model": self.model.state_dict(),
            "stage_state": runner.state_dict(),
        }
        name = checkpoint_name(self.position.stage, self.position.epoch, self.position.step)
        save_rotating(self.run_dir, name, state, self.cfg.run.keep_checkpoints)
        summary = self.run_dir / "state.json.tmp"
        summary.write_text(json.dumps({"progress": vars(self.position), **self._data_info(data)}))
        os.replace(summary, self.run_dir / "state.json")

    def _save_model(self, data: TrainingData) -> Path:
        path = self.run_dir / MODEL_FILE
        if self.fabric.is_global_zero:
            state = {"kind": "model", "config": self.cfg.to_dict(), "data": self._data_info(data),
                     "model": self.model.state_dict()}
            save_checkpoint(path, state)
        self.fabric.barrier()
        return path


def _batch_len(batch) -> int:
    return len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
