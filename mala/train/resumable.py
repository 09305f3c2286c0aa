"""Resumable checkpoints of a run: one file per save, named by its place in training, the newest K kept, and
`last.safetensors` always the newest (what `--resume` reads)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mala.checkpoint import save_checkpoint

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.safetensors"


def checkpoint_name(stage: int, epoch: int, step: int) -> str:
    """Sorts in training order: stage, epochs completed, optimizer steps done in the running epoch."""
    return f"stage{stage}-epoch{epoch:05d}-step{step:06d}.safetensors"


def save_rotating(run_dir: Path, name: str, state: dict[str, Any], keep: int) -> Path:
    """Write `state` to checkpoints/`name` (atomically), point last.safetensors at it and delete all but the
    newest `keep` named files. A kill at any moment leaves a complete last.safetensors (old or new)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    path = directory / name
    save_checkpoint(path, state)
    _replace_with_link(path, directory / LAST_NAME)
    for old in sorted(directory.glob("stage*-epoch*-step*.safetensors"))[:-max(keep, 1)]:
        old.unlink()
    return path


def _replace_with_link(source: Path, target: Path) -> None:
    """`target` becomes the same file as `source`: a hard link (no copy of the bytes) where the file system has
    them, a copy otherwise; made under a temporary name and renamed, so `target` is never half written."""
    temporary = target.with_name(target.name + ".tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)
