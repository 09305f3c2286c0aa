"""Model cost as in the paper's Table 6: trainable and total parameters, GFLOPs per image, images per second."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mala.deploy.graph import memory_section
from mala.model.load import load_trained_model
from mala.config import MalaConfig, load_config
from mala.model.maps import scores_and_maps
from mala.model import MALA, PseudoLabelPredictor
from mala.model.mala import check_image_size
from mala.model.search import int8_search_available
from mala.sizes import ImageShape

WARMUP_RUNS = 1


@dataclass(frozen=True)
class ModelCost:
    name: str
    stage1_trainable: int  # MALA parameters stage 1 trains
    plpm: int  # the stage-1 discriminator, trained alongside, not part of the model (0 without PLPM)
    stage2_trainable: int
    total: int  # every parameter of MALA, frozen position embeddings included
    gflops: float  # per image, one inference forward (anomaly map), 2 FLOPs per multiply-add
    images_per_second: float
    input: str  # what one image is: its size, and a trained model's tiles and memory


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch counts the CUDA attention kernels but not the CPU one; same formula (QK^T and AV products)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _int8_product_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """An (m, k) x (k, n) int8 product: a multiply-add counts as two operations, as a float one does."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


# torch counts neither the CPU attention kernel nor the int8 product of the memory's shortlist (`mala.model.search`)
UNCOUNTED_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
                   torch.ops.aten._int_mm: _int8_product_flops}


def config_at_size(name: str, image_size: int | list[int]) -> MalaConfig:
    """A preset or YAML config with the image size (square, or [height, width]) replaced; the position embeddings
    follow it. Sides off the patch grid (or the backbone's stride) are a ConfigError."""
    cfg = load_config(name)
    cfg.model = dataclasses.replace(cfg.model, image_size=image_size)
    check_image_size(cfg.model)
    return cfg


def trainable_parameters(model: MALA, stage: int) -> int:
    model.set_stage(stage)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_counts(model: MALA, cfg: MalaConfig) -> dict[str, int]:
    plpm = PseudoLabelPredictor(cfg.model.plpm_width) if cfg.stage1.use_plpm else None
    return {
        "stage1_trainable": trainable_parameters(model, 1),
        "plpm": 0 if plpm is None else sum(p.numel() for p in plpm.parameters()),
        "stage2_trainable": trainable_parameters(model, 2),
        "total": sum(p.numel() for p in model.parameters()),
    }


@torch.no_grad()
def inference_flops(model: MALA, cfg: MalaConfig | None = None, section: int | None = None) -> int:
    """FLOPs of one forward (image to anomaly map) on one image of the model's size; with `cfg`, of the whole map
    pipeline at `cfg.input_shape` (a tiled model's tiles all counted), in memory `section` (None: routed)."""
    device = next(model.parameters()).device
    images = torch.rand(1, 3, *(cfg.input_shape if cfg else model.image_shape), device=device)
    with FlopCounterMode(display=False, custom_mapping=UNCOUNTED_FLOPS) as counter:
        scores_and_maps(model, images, cfg, section) if cfg else model(images)
    return counter.get_total_flops()


@torch.no_grad()
def view_flops(model: MALA, section: int) -> int:
    """FLOPs of mapping one model input once in memory `section`, every part of the map computed (`MALA.map_parts`
    with `every_part`: what any fusion costs at most); a mirror view costs the same again."""
    images = torch.rand(1, 3, *model.image_shape, device=next(model.parameters()).device)
    with FlopCounterMode(display=False, custom_mapping=UNCOUNTED_FLOPS) as counter:
        model.map_parts(images, section, every_part=True)
    return counter.get_total_flops()


def search_flops(model: MALA, section: int) -> int:
    """FLOPs of the memories' nearest-neighbour search for one model input in memory `section`: each memory's
    queries times the section's rows times its channels, a multiply-add each (the part of `view_flops` that grows
    with the section; the int8 shortlist multiplies a few more columns, 200 for 192 channels, which this leaves out)."""
    return sum(2 * queries * len(memory.section_rows(section)) * memory.tokens.shape[1]
               for memory, queries in model.memories if not memory.empty)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(model: MALA, batch: int, repeats: int, cfg: MalaConfig | None = None,
                      section: int | None = None) -> float:
    """Batch size over the median time of `repeats` forwards at the model's size, after a warm-up forward; with
    `cfg`, of the whole map pipeline at `cfg.input_shape` (a tiled model's tiles cut, run and stitched), in memory
    `section` (None: routed)."""
    device = next(model.parameters()).device
    images = torch.rand(batch, 3, *(cfg.input_shape if cfg else model.image_shape), device=device)
    times = []
    for run in range(WARMUP_RUNS + repeats):
        _synchronize(device)
        start = time.perf_counter()
        scores_and_maps(model, images, cfg, section) if cfg else model(images)
        _synchronize(device)
        if run >= WARMUP_RUNS:
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def measure_cost(name: str, image_size: int | list[int] = 256, batch: int = 1, repeats: int = 5,
                 device: str = "cpu") -> ModelCost:
    """A preset's (or YAML config's) cost, built with random weights at `image_size` (an empty memory)."""
    cfg = config_at_size(name, image_size)
    return _measure(name, MALA(cfg.model), cfg, batch, repeats, device)


def measure_trained_cost(checkpoint: Path, batch: int = 1, repeats: int = 5, device: str = "cpu",
                         category: str | None = None, memory_search: str | None = None) -> ModelCost:
    """A trained model's cost as it runs: its input size, tiles and normal-feature memory included; with `category`,
    its images read that category's memory section (as `predict --category`), else each is routed; `memory_search`:
    as `load_trained_model`."""
    model, cfg, data = load_trained_model(checkpoint, memory_search)
    section = memory_section(model, data.get("categories", []), category, checkpoint)
    return _measure(str(checkpoint), model, cfg, batch, repeats, device, section)


def _measure(name: str, model: MALA, cfg: MalaConfig, batch: int, repeats: int, device: str,
             section: int | None = None) -> ModelCost:
    counts = parameter_counts(model, cfg)
    model = model.to(device).eval()
    return ModelCost(
        name=name,
        **counts,
        gflops=inference_flops(model, cfg, section) / 1e9,
        images_per_second=images_per_second(model, batch, repeats, cfg, section),
        input=describe_input(model, cfg, section),
    )


def describe_input(model: MALA, cfg: MalaConfig, section: int | None = None) -> str:
    """`32 x 32 (height x width)`, with a trained model's tiles and memory named (and the section read)."""
    parts = [_height_by_width(cfg.input_shape)]
    if cfg.tile_grid:
        parts.append(f"as {cfg.tile_grid.count} tiles of {_height_by_width(model.image_shape)}")
    if model.hybrid and not model.memory.empty:
        sections = model.memory.section_count
        parts.append(f"with a memory of {len(model.memory.tokens):,} tokens"
                     + (f" in {sections} category sections" if sections > 1 else ""))
        if model.score_memory is not None and not model.score_memory.empty:
            parts.append(f"a score memory of {len(model.score_memory.tokens):,}")
        if section is not None:
            parts.append(f"each image read in section {section} ({len(model.memory.section_rows(section)):,} tokens)"
                         + _mirror_note(model, section))
        if model.memory.int8_search and int8_search_available(model.memory.tokens):
            parts.append("searched through int8 shortlists")
    return ", ".join(parts)


def _mirror_note(model: MALA, section: int) -> str:
    """` and in its N mirror view(s)` where the section's images are also mapped mirrored (`MALA.section_mirrors`)."""
    views = model.mirror_views_of(section)
    return f" and in {views} mirror view{'s' if views > 1 else ''} of it" if views else ""


def _height_by_width(shape: ImageShape) -> str:
    return f"{shape[0]} x {shape[1]} (height x width)"


def describe_device(device: str) -> str:
    where = torch.device(device)
    if where.type == "cuda":
        return f"{torch.cuda.get_device_name(where)} ({device})"
    return f"{device}, {torch.get_num_threads()} threads"


def format_cost_table(costs: list[ModelCost], batch: int, repeats: int, device: str) -> str:
    """The paper's Table 6 layout: parameters in millions, GFLOPs per image, images per second."""
    header = ("config", "stage-1 trainable (M)", "PLPM (M)", "stage-2 trainable (M)", "total (M)", "GFLOPs/image",
              "images/s")
    rows = [(c.name, f"{c.stage1_trainable / 1e6:.2f}", f"{c.plpm / 1e6:.2f}", f"{c.stage2_trainable / 1e6:.2f}",
             f"{c.total / 1e6:.2f}", f"{c.gflops:.2f}", f"{c.images_per_second:.2f}") for c in costs]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in (header, *rows)]
    inputs = {c.input for c in costs}
    where = f"at {inputs.pop()}" if len(inputs) == 1 else "; ".join(f"{c.name} at {c.input}" for c in costs)
    notes = (f"{where}; FLOPs of one inference forward counted by torch's FlopCounterMode (2 per multiply-add); "
             f"speed on {describe_device(device)}, batch {batch}, torch.no_grad, median of {repeats} runs after "
             f"{WARMUP_RUNS} warm-up")
    return "\n".join([*lines, notes])
