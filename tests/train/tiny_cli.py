"""`mala train` as a subprocess on a tiny model (64 px, 2+1 blocks) and a few metal_plate images, for the tests
that need real processes: DDP launches and SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from tests.conftest import shared_data

TINY_MODEL = ["model.image_size=64", "model.patch_size=8", "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
              "model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2", "model.plpm_width=8",
              "synth.object_categories=[]", "model.backbone=none", "stage1.enabled=true",
              "global_map.steps=20"]  # the hybrids' global map: a few steps


def train_command(out: Path, settings: list[str], *flags: str) -> list[str]:
    overrides = [arg for item in TINY_MODEL + settings for arg in ("--set", item)]
    return [sys.executable, "-m", "mala.cli", "train", "--data", str(shared_data("metal_plate")), "--config", "tiny",
            "--accelerator", "cpu", "--out", str(out), *overrides, *flags]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "model.safetensors"))


def resume_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mala.cli", "train", "--resume", "--data", str(shared_data("metal_plate")),
            "--out", str(out)]
