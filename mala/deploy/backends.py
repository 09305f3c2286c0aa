"""What runs the inference graph: torch on a mala checkpoint, or onnxruntime on an exported ONNX file.

Both take uint8 images (B, H, W, 3) and give the raw scores (B,), maps (B, H, W) and categories (B,) of
`graph.InferenceGraph`.
This module imports neither torch nor onnxruntime until a backend of that kind is opened, so the ONNX path runs on
a machine with only onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mala.deploy.calibration import Calibration
from mala.deploy.contract import (CATEGORY_OUTPUT, GRAPH_OUTPUTS, INPUT_NAME, METADATA_KEY, RAW_OUTPUTS,
                                 UNKNOWN_CATEGORY)
from mala.errors import CheckpointError, ConfigError
from mala.sizes import ImageShape, image_shape


class Backend(Protocol):
    kind: str
    image_shape: ImageShape  # (height, width) the images must have
    description: dict[str, Any]  # image_size, categories, calibration, source (graph.load_graph)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw image scores (B,), anomaly maps (B, H, W) and categories (B,: places in the description's
        `categories`, `UNKNOWN_CATEGORY` where the model cannot tell) for uint8 images (B, H, W, 3)."""
        ...


def described_shape(description: dict[str, Any], path: Path) -> ImageShape:
    """The model's (height, width) from its description: an int (square; every model saved before rectangles) or
    [height, width]."""
    return image_shape(description.get("image_size"), f"{path}: image_size")


def calibration(backend: Backend) -> Calibration | None:
    """The stored thresholds; None for a model without any."""
    raw = backend.description.get("calibration")
    return None if raw is None else Calibration.from_dict(raw)


def category_name(backend: Backend, place: int) -> str | None:
    """The name of a category the backend gave (its place in the description's categories): for `UNKNOWN_CATEGORY`
    the one the model was opened or exported for, or its only one; None where it cannot tell."""
    categories = backend.description.get("categories", [])
    if 0 <= place < len(categories):
        return categories[place]
    if backend.description.get("category"):
        return backend.description["category"]
    return categories[0] if len(categories) == 1 else None


class OnnxBackend:
    kind = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, category: str | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("onnxruntime is not installed: pip install 'mala[runtime]' (or onnxruntime)") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for missing or malformed files
            raise CheckpointError(f"{path}: cannot load as an ONNX model ({exc.__class__.__name__}: {exc})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path}: an ONNX model, but not one that `mala export` wrote (no '{METADATA_KEY}' "
                                  "metadata)")
        self.description = json.loads(raw)
        self.image_shape = described_shape(self.description, path)
        self.tells_category = CATEGORY_OUTPUT in {output.name for output in self.session.get_outputs()}
        exported_for = self.description.get("category")
        if category is not None and exported_for is not None and category != exported_for:
            raise ConfigError(f"{path}: exported for category '{exported_for}' (its memory section and thresholds); "
                              f"export one for '{category}' with `mala export --category {category}`")

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.tells_category:
            scores, maps = self.session.run(list(RAW_OUTPUTS), {INPUT_NAME: images})
            return scores, maps, np.full(len(images), UNKNOWN_CATEGORY)
        return tuple(self.session.run(list(GRAPH_OUTPUTS), {INPUT_NAME: images}))


class TorchBackend:
    kind = "torch"

    def __init__(self, path: Path, device: str = "cpu", category: str | None = None, memory_search: str | None = None):
        import torch

        from mala.deploy.graph import load_graph

        self.torch, self.device = torch, device
        graph, self.description = load_graph(path, category, memory_search)
        self.graph = graph.to(device)
        self.image_shape = described_shape(self.description, path)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            scores, maps, categories = self.graph(self.torch.from_numpy(images).to(self.device))
        return scores.float().cpu().numpy(), maps.float().cpu().numpy(), categories.cpu().numpy()


def open_backend(path: Path, device: str = "cpu", threads: int | None = None, category: str | None = None,
                 memory_search: str | None = None) -> Backend:
    """onnxruntime for an `.onnx` file, torch for a mala checkpoint (a run folder stands for its model file);
    `category`: the memory section read (None: each image routed to its nearest category; an ONNX file reads the
    one it was exported for); `memory_search`: a checkpoint's memory search, "exact" or "int8" (None: as its file
    says; an ONNX graph searches as it was exported)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model not found")
    if path.suffix.lower() == ".onnx":
        if memory_search is not None:
            raise ConfigError(f"{path}: an ONNX graph searches its memory as it was exported; --memory-search applies "
                              "to a mala checkpoint (export again with `mala export --memory-search ...`)")
        return OnnxBackend(path, threads, category)
    return TorchBackend(path, device, category, memory_search)
