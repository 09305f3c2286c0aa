"""An optional on-disk copy of the decoded images and masks of an ImageCache, so that a later run skips decoding.

Per (file list, image size) one KEY.npy holds the images and KEY.masks.npz the masks. KEY hashes every image and
mask file's path, byte size and modification time, and the image size: a changed, added or removed file gives a
new key, and the stale files stay until the folder is cleared.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mala.data.images import mask_files
from mala.data.samples import Sample
from mala.errors import DataError
from mala.sizes import ImageShape, stored_size

FORMAT = 1  # raise it when decoding changes, so that files written before are not reused
Arrays = tuple[np.ndarray, dict[int, np.ndarray]]  # images (N, H, W, 3) uint8; masks by sample index, (H, W) bool


def _files(sample: Sample) -> list[Path]:
    return [sample.path, *(mask_files(sample.mask_path) if sample.mask_path is not None else [])]


def cache_key(samples: list[Sample], shape: ImageShape) -> str:
    # a square's key is that of the files written before rectangles: its size is written as one number
    digest = hashlib.sha256(f"mala image cache {FORMAT} {stored_size(shape)}\n".encode())
    for sample in samples:
        for path in _files(sample):
            try:
                stat = path.stat()
            except OSError:
                raise DataError(f"{path}: file not found") from None
            digest.update(f"{path.absolute()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        digest.update(b"\0")  # ends each sample, so that a mask cannot pass for the next sample's image
    return digest.hexdigest()[:32]


def load_arrays(folder: Path, key: str, count: int, shape: ImageShape) -> Arrays | None:
    """The stored arrays, or None when they are missing, damaged or of another shape."""
    try:
        images = np.load(folder / f"{key}.npy")
        with np.load(folder / f"{key}.masks.npz") as stored:
            masks = dict(zip(stored["indices"].tolist(), stored["masks"]))
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return (images, masks) if images.shape == (count, *shape, 3) else None


def save_arrays(folder: Path, key: str, images: np.ndarray, masks: dict[int, np.ndarray]) -> None:
    """Write both files, each atomically; the images last, as loading needs both."""
    indices = np.array(sorted(masks), dtype=np.int64)
    stacked = np.stack([masks[i] for i in indices.tolist()]) if masks else np.zeros((0, *images.shape[1:3]), bool)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / f"{key}.masks.npz", lambda handle: np.savez(handle, indices=indices, masks=stacked))
        _write_atomically(folder / f"{key}.npy", lambda handle: np.save(handle, images))
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the image cache ({exc.strerror or exc})") from None


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """A reader never sees half a file: write a temporary file beside it, then rename it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
