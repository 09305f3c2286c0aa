"""`mala train --dry-run`: what a run would do (parameters, images, optimizer steps, learning rates) and an estimate
of how long it would take on this machine, from one timed training step per stage. Nothing is trained or written."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from lightning_fabric import Fabric

from mala.config import MalaConfig
from mala.data.dataset import ImageCache
from mala.eval.cost import describe_device, parameter_counts
from mala.model import MALA
from mala.model.mala import visible_patch_count
from mala.train.fit_global_map import optimiser_of, training_step
from mala.train.runner import batches_per_epoch, optimizer_steps
from mala.train.stage1 import Stage1
from mala.train.stage2 import Stage2
from mala.train.trainer import make_fabric

# A CPU step of `paper` at batch 128 takes minutes: on a CPU, time this many images and scale to the batch size.
CPU_TIMING_BATCH = 2


@dataclass(frozen=True)
class StagePlan:
    stage: int
    epochs: int
    images_per_epoch: int
    batch_size: int
    steps_per_epoch: int  # per device
    sampling: str  # how the epoch's images are drawn, in words
    learning_rate: str  # value and schedule, in words

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def _world_size(cfg: MalaConfig) -> int:
    return cfg.run.devices * cfg.run.num_nodes


def _visible_patches(cfg: MalaConfig) -> str:
    """"V of N", the patches stage 1's encoder sees per image, counted as `MALA.random_masking` counts them."""
    rows, columns = cfg.model.token_grid
    num_patches = rows * columns
    return f"{visible_patch_count(num_patches, cfg.stage1.mask_ratio)} of {num_patches}"


def steps_per_epoch(images: int, batch_size: int, world_size: int, accumulate: int = 1) -> int:
    """Optimizer steps, as the stages' loaders do it: the epoch split over the devices (padded to equal shares),
    batched, `accumulate` batches a step."""
    return optimizer_steps(batches_per_epoch(images, batch_size, world_size), accumulate)


def stage_plans(cfg: MalaConfig, num_categories: int) -> list[StagePlan]:
    """The stages the run would train, with the per-category sampling of `Stage1.loader` / `Stage2.loader`."""
    world_size, accumulate = _world_size(cfg), cfg.run.accumulate
    plans = []
    if cfg.stage1.enabled:
        s1 = cfg.stage1
        images = num_categories * s1.images_per_category
        global_batch = s1.batch_size * world_size * accumulate
        plans.append(StagePlan(
            1, s1.epochs, images, s1.batch_size, steps_per_epoch(images, s1.batch_size, world_size, accumulate),
            f"{s1.images_per_category} per category x {num_categories}, {s1.mask_ratio:.0%} of patches masked "
            f"({_visible_patches(cfg)} visible)",
            f"lr {s1.base_lr * global_batch / 256:.3g} (= {s1.base_lr:g} x global batch {global_batch} / 256), "
            f"{s1.warmup_epochs} warm-up epochs, then cosine decay to 0",
        ))
    if cfg.run.pipeline == "end_to_end":
        s2 = cfg.stage2
        images = num_categories * s2.images_per_category
        plans.append(StagePlan(
            2, s2.epochs, images, s2.batch_size, steps_per_epoch(images, s2.batch_size, world_size, accumulate),
            f"{s2.images_per_category} per category x {num_categories}, {s2.anomalous_per_category} of them anomalous",
            f"lr {s2.lr:.3g} fixed",
        ))
    return plans


def _timing_runner(stage: int, cfg: MalaConfig, model: MALA, fabric: Fabric) -> Stage1 | Stage2:
    """A stage set up as for training; its loader is never called, so it gets an empty image cache."""
    empty = ImageCache([], np.empty((0, *cfg.model.image_shape, 3), dtype=np.uint8), {})
    if stage == 1:
        return Stage1(cfg, model, fabric, empty)
    return Stage2(cfg, model, fabric, empty, synthesize=None, foregrounds={})


def _seconds_of_second_call(call: Callable[[], object], device: torch.device) -> float:
    """Seconds of `call` run after one warm-up call (first-call allocations and kernel choice), the device waited for."""
    call()
    started = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def seconds_per_step(stage: int, cfg: MalaConfig, model: MALA, fabric: Fabric, batch_size: int) -> tuple[float, int]:
    """Seconds of one optimizer step of `stage` at `batch_size` (random images; data loading not included), and
    the batch actually timed: on a CPU at most CPU_TIMING_BATCH images, the time scaled linearly to `batch_size`."""
    runner = _timing_runner(stage, cfg, model, fabric)
    timed = min(batch_size, CPU_TIMING_BATCH) if fabric.device.type == "cpu" else batch_size
    shape = cfg.model.image_shape
    images = fabric.to_device(torch.rand(timed, 3, *shape))
    batch = images if stage == 1 else (images, fabric.to_device((torch.rand(timed, *shape) > 0.9).float()))
    seconds = _seconds_of_second_call(lambda: runner.step(batch, 1.0), fabric.device)
    return seconds * batch_size / timed, timed


@torch.no_grad()
def seconds_per_memory_image(cfg: MalaConfig, model: MALA, fabric: Fabric) -> float:
    """Seconds of the backbone pass that puts one training image into the normal-feature memory (timed as
    `seconds_per_step`, at most CPU_TIMING_BATCH images)."""
    model = fabric.to_device(model).eval()
    images = fabric.to_device(torch.rand(CPU_TIMING_BATCH, 3, *cfg.model.image_shape))
    return _seconds_of_second_call(lambda: model.backbone_tokens(images), fabric.device) / CPU_TIMING_BATCH


def seconds_per_global_map_step(cfg: MalaConfig, model: MALA, fabric: Fabric) -> float:
    """Seconds of one training step of the global map's autoencoder (a copy: the model is not changed)."""
    net = copy.deepcopy(model.global_map).to(fabric.device)
    channels = net.token_mean.shape[0]
    batch = torch.randn(cfg.global_map.batch_size, model.num_memory_tokens, channels, device=fabric.device)
    optimiser = optimiser_of(net, cfg.global_map)
    return _seconds_of_second_call(lambda: training_step(net, batch, optimiser), fabric.device)


def _global_map_line(seconds_per_step: float, steps: int) -> str:
    return (f"global map: {steps} autoencoder steps after stage 2 at {seconds_per_step:.3f} s: "
            f"{_duration(seconds_per_step * steps)} (its own backbone pass over up to global_map.images_per_category "
            "images of each category comes on top)")


def _memory_line(seconds_per_pass: float, passes: int, fills: int) -> str:
    times = "twice (run.tune: once from the images stage 2 trains on, once from all)" if fills == 2 else "once"
    return (f"memory: filled {times} after stage 2, one backbone pass per image (or tile) at {seconds_per_pass:.3f} s: "
            f"{_duration(seconds_per_pass * passes * fills)} (its epsilon-net and, with run.tune, the held-out "
            "images' maps come on top)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M"


def _stage_lines(plan: StagePlan, seconds: float, timed: int, world_size: int) -> list[str]:
    per_device = f" per device x {world_size} devices" if world_size > 1 else ""
    scaled = f", timed at batch {timed} and scaled linearly to {plan.batch_size}" if timed != plan.batch_size else ""
    return [
        f"stage {plan.stage}: {plan.images_per_epoch} images per epoch ({plan.sampling}), batch {plan.batch_size}"
        f"{per_device}: {plan.steps_per_epoch} steps per epoch x {plan.epochs} epochs = {plan.steps} optimizer steps",
        f"  {plan.learning_rate}",
        f"  one step {seconds:.2f} s{scaled}: {_duration(seconds * plan.steps)}",
    ]


def describe_plan(cfg: MalaConfig, model: MALA, categories: list[str], num_images: int, memory_fills: int = 1
                  ) -> str:
    """The dry run's report; times one step per stage on this machine (a few seconds; longer for `paper` on a CPU)
    and, for a model with a memory, the backbone pass of its `memory_fills` fills."""
    counts = parameter_counts(model, cfg)
    lines = [
        "dry run: nothing is trained and no run folder is written",
        f"data: {len(categories)} categor{'y' if len(categories) == 1 else 'ies'} ({', '.join(categories)}), "
        f"{num_images} normal training images",
        f"parameters: {_millions(counts['total'])} in all; trainable in stage 1 "
        f"{_millions(counts['stage1_trainable'])} (+ PLPM discriminator {_millions(counts['plpm'])}), in stage 2 {_millions(counts['stage2_trainable'])}",
    ]
    # timed on one device: with several, each runs its share of the steps in parallel
    fabric = make_fabric(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, devices=1, num_nodes=1)))
    total_seconds = 0.0
    for plan in stage_plans(cfg, len(categories)):
        seconds, timed = seconds_per_step(plan.stage, cfg, model, fabric, plan.batch_size)
        total_seconds += seconds * plan.steps
        lines += _stage_lines(plan, seconds, timed, _world_size(cfg))
    if cfg.model.has_memory:
        seconds = seconds_per_memory_image(cfg, model, fabric)
        passes = num_images * (cfg.tile_grid.count if cfg.tile_grid is not None else 1)  # tiled: a pass per tile
        total_seconds += seconds * passes * memory_fills
        lines.append(_memory_line(seconds, passes, memory_fills))
        if model.global_map is not None:
            step_seconds = seconds_per_global_map_step(cfg, model, fabric)
            total_seconds += step_seconds * cfg.global_map.steps
            lines.append(_global_map_line(step_seconds, cfg.global_map.steps))
    lines.append(f"estimated training time on {describe_device(str(fabric.device))}: {_duration(total_seconds)} "
                 "(model steps and memory passes only: image loading and anomaly synthesis come on top, unless "
                 "workers hide them)")
    return "\n".join(lines)
