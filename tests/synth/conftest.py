"""Real images for the synthesis tests, read from ../shared/data beside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import shared_data as data_path

IMAGE_SIZE = 224

def load_rgb(path: Path, size: int | None = IMAGE_SIZE) -> np.ndarray:
    """float32 HxWx3 in [0, 1], grey repeated to 3 channels, resized to size x size unless None."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if size is not None:
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.float32) / 255


def load_first(folder: Path, count: int, size: int | None = IMAGE_SIZE) -> list[np.ndarray]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg"})[:count]
    assert len(paths) == count, f"{folder} holds fewer than {count} images"
    return [load_rgb(path, size) for path in paths]


@pytest.fixture(scope="session")
def metal_plate_images() -> list[np.ndarray]:
    """RGB objects (a blue plate on grey) at 224 px."""
    return load_first(data_path("metal_plate", "train", "good"), 4)


@pytest.fixture(scope="session")
def magnetic_tile_images() -> list[np.ndarray]:
    """Grey textures at 224 px."""
    return load_first(data_path("magnetic_tile", "train", "good"), 4)


@pytest.fixture(scope="session")
def magnetic_tile_full_size() -> np.ndarray:
    """One grey texture at its own size (not square)."""
    return load_first(data_path("magnetic_tile", "train", "good"), 1, size=None)[0]


@pytest.fixture(scope="session")
def texture_dir() -> Path:
    return data_path("dtd", "images")


@pytest.fixture(scope="session")
def texture_samples(texture_dir: Path) -> dict[str, list[np.ndarray]]:
    """Four images of each DTD class at 224 px."""
    return {folder.name: load_first(folder, 4) for folder in sorted(texture_dir.iterdir())}
