"""`mala train --dry-run` says every line the run itself says as it starts (mala.engine.plan_training): what it
chooses from the data, images enlarged to the model's size, where anomalies come from, the tiling, object or texture
per category, a missing TensorBoard; the same lines, from the same functions, in the same order."""

from __future__ import annotations

import sys

from mala.cli import main
from tests.conftest import shared_data
from tests.train.test_setup import strips
from tests.train.tiny_cli import TINY_MODEL

PLAN_START = "dry run: nothing is trained and no run folder is written"  # the plan's first line, after the start's
# the tiny model without its image size (a run given no size keeps the aspect of strips) and without its empty
# object list (the rule decides)
SMALL_MODEL = [item for item in TINY_MODEL if item.split("=")[0] not in ("model.image_size", "synth.object_categories")]
SMALL_MODEL += ["stage1.enabled=false"]
ONE_QUICK_EPOCH = ["stage2.epochs=1", "stage2.images_per_category=4", "stage2.anomalous_per_category=2",
                   "stage2.batch_size=4"]


def _overrides(settings: list[str]) -> list[str]:
    return [arg for item in settings for arg in ("--set", item)]


def dry_run_start(capsys, flags: list[str]) -> list[str]:
    """The lines the dry run prints before its plan."""
    assert main(["train", "--dry-run", *flags]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()
    return printed[:printed.index(PLAN_START)]


def run_start(capsys, flags: list[str], out) -> list[str]:
    """The `mala: ` lines a real run prints on stderr (its notes and warnings; progress lines have no prefix)."""
    assert main(["train", "--accelerator", "cpu", "--out", str(out), *flags]) == 0, capsys.readouterr().err
    return [line.removeprefix("mala: ") for line in capsys.readouterr().err.splitlines() if line.startswith("mala: ")]


def test_strips_smaller_than_the_model_get_every_warning_as_the_run_gives_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were missing
    flags = ["--data", strips(tmp_path), *_overrides(SMALL_MODEL + ONE_QUICK_EPOCH)]
    planned = dry_run_start(capsys, flags)
    assert planned == run_start(capsys, flags, tmp_path / "run")
    expected = [
        "image size 352 x 144 px (height x width), the training images are strips (median height / width 2.50)",
        "warning: 5 of 5 images are smaller than the model's 352 x 144 px (height x width) and were enlarged",
        "warning: no texture folder (--textures, synth.texture_dir)",
        "strips: texture (anomalies anywhere)",
        "tensorboard is not installed",
    ]
    assert len(planned) == len(expected) and all(line.startswith(start) for line, start in zip(planned, expected))


def test_tiles_textures_and_objects_of_real_data_are_said_as_the_run_says_them(tmp_path, capsys):
    data = [str(shared_data("metal_plate")), str(shared_data("magnetic_tile"))]
    flags = ["--data", *data, "--tile", "32", "--tile-source", "64", "--textures", str(shared_data("dtd", "images")),
             *_overrides(SMALL_MODEL + ONE_QUICK_EPOCH + ["synth.objects={magnetic_tile: false}"])]
    planned = dry_run_start(capsys, flags)
    assert planned == run_start(capsys, flags, tmp_path / "run")
    assert planned[0].startswith("synthetic anomalies: 50% textures from ")
    assert planned[1:] == [
        "tiling: 9 tiles of 32 px, stride 24 px, on images resized to 64 px; each training image is one tile at a "
        "random position",
        "magnetic_tile: texture (anomalies anywhere), set in synth.objects",
        "metal_plate: object (anomalies on the foreground)",  # decided on its probe images
    ]


def test_a_category_set_by_hand_that_is_not_in_the_data_stops_the_dry_run_as_it_stops_the_run(tmp_path, capsys):
    assert main(["train", "--dry-run", "--data", strips(tmp_path), "--set", "synth.objects={strip: true}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == ("mala: error: synth.objects names strip, not among the "
                                                        "training categories (strips)")


def test_tuning_in_training_is_said_as_the_run_says_it(tmp_path, capsys):
    from tests.tune.test_tune_command import QUICK_HYBRID

    flags = ["--data", str(shared_data("metal_plate")), *_overrides(QUICK_HYBRID)]
    planned = dry_run_start(capsys, flags)
    said = run_start(capsys, flags, tmp_path / "run")
    assert said[:len(planned)] == planned
    assert ("training on 43 of the 54 training images; each category's map fusion is chosen on the other 11 "
            "(run.tune), then the memory holds all") in planned
    assert said[len(planned)].startswith("global map trained, loss ")  # QUICK_HYBRID has one
    assert said[len(planned) + 1].startswith("map fusion per category, chosen on held-out training images")
