"""The whole inference as one torch module: uint8 images in, scores and maps out; and its ONNX export.

The same module runs `mala predict` with torch and is what `mala export` writes, so both paths compute the same
thing. Input: RGB images already resized to the model's input size, uint8 (B, H, W, 3), as any image decoder gives
them (the only step left to the caller is the resize, bilinear as in training). Outputs: the raw image score (eq. 7),
the anomaly map (B, H, W) and each image's category (`contract.CATEGORY_OUTPUT`); the exported file adds score and map
normalised with the stored thresholds it was exported with (one category's, or for a routed file each image's
category's; threshold at 0.5, see calibration.py) for programs that run it without mala.
A tiled model's input size is its source size: cutting the tiles and stitching their maps are inside the graph.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from mala.checkpoint import load_checkpoint, model_file, read_metadata, save_checkpoint
from mala.config import MalaConfig
from mala.data.images import unit_range
from mala.deploy.calibration import Calibration, Thresholds, rescale
from mala.deploy.contract import INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, UNKNOWN_CATEGORY
from mala.errors import ConfigError
from mala.model import MALA
from mala.model.load import load_trained_model
from mala.model.maps import scores_and_maps
from mala.sizes import stored_size

UNCALIBRATED = (0.5, 1.0, 0.5, 1.0)  # thresholds 0.5, spreads 1: normalised values equal the raw ones, clipped


class InferenceGraph(nn.Module):
    """uint8 images (B, H, W, 3) to raw image scores (B,), anomaly maps (B, H, W) and categories (B,): what both
    backends run. The memory is read in one category's section (`section`), or each whole image is routed to its
    nearest category's (every tile of a tiled image then reads that one); the category is the section's index, or
    `UNKNOWN_CATEGORY` for a model with one section or none."""

    def __init__(self, model: MALA, cfg: MalaConfig, section: int | None = None):
        super().__init__()
        self.model, self.cfg, self.section = model.eval(), cfg, section

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = unit_range(images.permute(0, 3, 1, 2).float())
        scores, maps, sections = scores_and_maps(self.model, images, self.cfg, self.section)
        if isinstance(sections, torch.Tensor):
            return scores, maps, sections
        known = UNKNOWN_CATEGORY if self.section is None else self.section  # a model of one section resolves to 0
        return scores, maps, torch.full_like(scores, known, dtype=torch.long)


class ExportedGraph(InferenceGraph):
    """The inference graph with both outputs also normalised (`calibration.rescale`, the threshold at 0.5) for programs
    that run the ONNX file without mala, as `mala predict` normalises: with the one category's thresholds of a
    category's graph, or with each image's routed category's (all categories' where it has none, or where the model
    cannot tell); mala's own backends normalise after."""

    def __init__(self, model: MALA, cfg: MalaConfig, section: int | None, thresholds: list[Thresholds]):
        super().__init__(model, cfg, section)
        # one row per category place and a last one for UNKNOWN_CATEGORY, or one row for every image
        self.register_buffer("shifts", torch.tensor([t.shifts for t in thresholds] or [UNCALIBRATED]))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        scores, maps, categories = super().forward(images)
        rows = len(self.shifts)
        shifts = self.shifts[torch.where(categories < 0, rows - 1, categories)] if rows > 1 else self.shifts
        return (scores, maps, rescale(scores, shifts[:, 0], shifts[:, 1]),
                rescale(maps, shifts[:, 2].view(-1, 1, 1), shifts[:, 3].view(-1, 1, 1)), categories)


def exported_thresholds(calibration: Calibration | None, categories: list[str], category: str | None
                        ) -> list[Thresholds]:
    """`ExportedGraph`'s thresholds: none for a model without any; a category's own; else each category's (all
    categories' where it has none) and, last, all categories'."""
    if calibration is None:
        return []
    if category is not None:
        return [calibration.thresholds(category)]
    return [calibration.routed_thresholds(name) for name in [*categories, None]]


def read_calibration(checkpoint: Path) -> Calibration | None:
    """The thresholds stored in a mala checkpoint, None if it has none yet."""
    raw = read_metadata(model_file(checkpoint)).get("calibration")
    return None if raw is None else Calibration.from_dict(raw)


def store_calibration(checkpoint: Path, calibration: Calibration) -> Path:
    """Rewrite the checkpoint (atomically) with these thresholds; returns its path."""
    path = model_file(checkpoint)
    state = load_checkpoint(path)
    state["calibration"] = calibration.to_dict()
    save_checkpoint(path, state)
    return path


def memory_section(model: MALA, categories: list[str], category: str | None, checkpoint: Path) -> int | None:
    """The memory section of `category` (None: each image routed); a model of one section reads it for any."""
    if category is None or not model.hybrid or model.memory.section_count <= 1:
        return None
    if category not in categories:
        raise ConfigError(f"{checkpoint}: no memory section for category '{category}' (trained on: "
                          f"{', '.join(categories)}); name one of them, or none to route each image to the nearest")
    return categories.index(category)


def drop_unread_global_map(model: MALA, section: int | None) -> None:
    """A graph of one category whose fusion gives the global map no share leaves it out: the maps are the same, and an
    exported graph would otherwise compute it for every image (its shares are weights there, not branches)."""
    if section is not None and model.global_map is not None and float(model.fusion_of(section)[2]) == 0:
        model.global_map = None


def load_graph(checkpoint: Path, category: str | None = None, memory_search: str | None = None
               ) -> tuple[InferenceGraph, dict]:
    """The inference graph of a trained model and the description an export stores beside it (`category`: the
    memory section it reads and the thresholds it names by default; `memory_search`: as `load_trained_model`)."""
    graph, description, _ = _load(checkpoint, category, memory_search)
    return graph, description


def _load(checkpoint: Path, category: str | None, memory_search: str | None = None
          ) -> tuple[InferenceGraph, dict, Calibration | None]:
    """`load_graph` and the stored calibration, read once."""
    calibration = read_calibration(checkpoint)
    if calibration is not None and category is not None:
        calibration.thresholds(category)  # a category without thresholds stops before the model loads
    model, cfg, info = load_trained_model(checkpoint, memory_search)
    section = memory_section(model, info.get("categories", []), category, checkpoint)
    drop_unread_global_map(model, section)
    if section is not None and model.hybrid:  # a graph of one category holds only that category's memory rows
        for memory, _ in model.memories:
            memory.keep_only(section)
    description = {
        "image_size": stored_size(cfg.input_shape),  # what callers resize to: the source size of a tiled model
        "tiling": {"tile": cfg.model.image_size, "stride": cfg.tiling.stride} if cfg.tiling.enabled else None,
        "categories": info.get("categories", []),
        "category": category,
        "calibration": calibration.to_dict() if calibration else None,
        "source": str(checkpoint),
    }
    return InferenceGraph(model, cfg, section).eval(), description, calibration


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter prints its progress, warns about torchvision operators this graph does not use and about its
    own deprecated internals: none of it is the user's business."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        exporter_log.setLevel(level)


def int8_product_translation() -> dict:
    """The exporter's translation of torch's int8 product (`aten._int_mm`, the memory's int8 shortlist): onnxruntime's
    `MatMulInteger`, whose fast kernels take uint8 on the left, so the int8 queries move up by 128 and the product
    takes 128 off again as the left zero point; the result is the same int32 product."""
    import onnx
    from onnxscript import opset18 as op

    def int8_product(queries, rows):
        offset = op.Constant(value=onnx.helper.make_tensor("offset", onnx.TensorProto.INT16, [], [128]))
        shifted = op.Cast(op.Add(op.Cast(queries, to=onnx.TensorProto.INT16), offset), to=onnx.TensorProto.UINT8)
        zero_point = op.Constant(value=onnx.helper.make_tensor("zero_point", onnx.TensorProto.UINT8, [], [128]))
        return op.MatMulInteger(shifted, rows, zero_point)

    return {torch.ops.aten._int_mm.default: int8_product}


def export_onnx(checkpoint: Path, out: Path, category: str | None = None, opset: int = 18,
                memory_search: str | None = None) -> Path:
    """Write the inference graph as one ONNX file with a dynamic batch size and the description as metadata; the
    memory searched as the model's `model.memory_search` says (or `memory_search`: "exact" or "int8").

    Uses torch's torch.export-based exporter (the export extra: onnxscript); the file is written atomically."""
    if importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("ONNX export needs onnxscript: pip install 'mala[export]' (or onnxscript)")
    graph, description, calibration = _load(checkpoint, category, memory_search)
    thresholds = exported_thresholds(calibration, description["categories"], category)
    exported = ExportedGraph(graph.model, graph.cfg, graph.section, thresholds).eval()
    for memory, _ in graph.model.memories if graph.model.hybrid else []:
        memory.build_shortlists()
    example = torch.zeros(2, *graph.cfg.input_shape, 3, dtype=torch.uint8)
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(exported, (example,), None, input_names=[INPUT_NAME],
                                    output_names=list(OUTPUT_NAMES), opset_version=opset,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False,
                                    custom_translation_table=int8_product_translation())
    program.model.metadata_props[METADATA_KEY] = json.dumps(description)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    program.save(temporary, external_data=False)
    temporary.replace(out)
    return out
