"""`mala predict`: results for every readable image at its own size, the others listed with the reason; the ONNX
path without torch."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.cli import main
from mala.deploy.backends import OnnxBackend, TorchBackend
from mala.deploy.calibration import ALL, Calibration, Thresholds
from mala.deploy.graph import store_calibration
from mala.deploy.predict import NO_THRESHOLD, UNNAMED, Predictor, output_name, predict_folder
from mala.errors import DataError
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model


@pytest.fixture
def inputs(tmp_path) -> Path:
    """Real images of two sizes and formats in nested folders, a broken PNG, a 16-bit one and a text file."""
    folder = tmp_path / "inputs"
    (folder / "plate").mkdir(parents=True)
    (folder / "tile").mkdir()
    for path in sorted(shared_data("metal_plate", "test", "defect").glob("*.png"))[:2]:
        shutil.copy(path, folder / "plate" / path.name)
    tile = sorted(shared_data("magnetic_tile", "test", "blowhole").glob("*.jpg"))[0]
    shutil.copy(tile, folder / "tile" / tile.name)
    (folder / "tile" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    grey16 = np.asarray(Image.open(tile).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(folder / "tile" / "grey16.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def test_every_image_gets_a_result_and_the_broken_one_a_reason(checkpoint, inputs, tmp_path):
    store_calibration(checkpoint, Calibration(
        {ALL: Thresholds(0.5, 0.5, 0.0, 1.0, 0.0, 1.0, "F1-max", "F1-max over pixels", 9)}, "mala test"))
    out = tmp_path / "out"
    summary = predict_folder(Predictor(TorchBackend(checkpoint)), inputs, out, batch_size=2)
    rows = read_rows(out)
    assert set(rows) == {"plate/" + p.name for p in (inputs / "plate").iterdir()} | {
        "tile/" + p.name for p in (inputs / "tile").iterdir()}
    broken = rows["tile/broken.png"]
    assert broken["status"] == "error" and "broken.png: cannot read image" in broken["error"]
    assert summary["failed"] == 1 and summary["images"] == 5
    for name, row in rows.items():
        if row["status"] != "ok":
            continue
        assert row["decision"] == ("anomalous" if float(row["score"]) >= 0.5 else "normal")
        original = Image.open(inputs / name)
        for picture in (row["map_file"], row["overlay_file"]):
            assert Image.open(out / picture).size == original.size  # maps at the image's own size
    assert json.loads((out / "results.json").read_text())["summary"] == summary


def test_without_thresholds_there_are_scores_but_no_decisions(checkpoint, inputs, tmp_path):
    summary = predict_folder(Predictor(TorchBackend(checkpoint)), inputs / "plate", tmp_path / "out")
    rows = read_rows(tmp_path / "out")
    assert {row["decision"] for row in rows.values()} == {NO_THRESHOLD}
    assert summary[NO_THRESHOLD] == 2 and all(float(row["score"]) > 0 for row in rows.values())


def test_onnx_and_torch_give_the_same_results(checkpoint, onnx_model, inputs, tmp_path):
    predict_folder(Predictor(TorchBackend(onnx_model.with_suffix(".safetensors"))), inputs, tmp_path / "torch")
    predict_folder(Predictor(OnnxBackend(onnx_model)), inputs, tmp_path / "onnx")
    torch_rows, onnx_rows = read_rows(tmp_path / "torch"), read_rows(tmp_path / "onnx")
    for name, row in torch_rows.items():
        if row["status"] == "ok":
            assert float(onnx_rows[name]["score"]) == pytest.approx(float(row["score"]), abs=1e-4)


NOTHING_ANOMALOUS = Thresholds(2.0, 2.0, 0.0, 1.0, 0.0, 1.0, "F1-max", "F1-max over pixels", 9)  # above any map
EVERYTHING_ANOMALOUS = Thresholds(-1.0, -1.0, 0.0, 1.0, 0.0, 1.0, "F1-max", "F1-max over pixels", 9)


def test_a_routed_image_names_its_category_and_is_decided_by_its_thresholds(inputs, tmp_path, capsys):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True)
    store_calibration(checkpoint, Calibration({ALL: NOTHING_ANOMALOUS, "magnetic_tile": EVERYTHING_ANOMALOUS},
                                              "mala test"))
    readable = {"plate/" + p.name: "metal_plate" for p in (inputs / "plate").iterdir()}
    readable |= {"tile/" + p.name: "magnetic_tile" for p in (inputs / "tile").iterdir() if p.name != "broken.png"}
    summary = predict_folder(Predictor(TorchBackend(checkpoint)), inputs, tmp_path / "routed", write_pictures=False)
    rows = read_rows(tmp_path / "routed")
    assert {name: rows[name]["category"] for name in readable} == readable
    # the plate has no thresholds of its own: those of all categories together decide it
    assert {name: rows[name]["decision"] for name in readable} == {
        name: "anomalous" if category == "magnetic_tile" else "normal" for name, category in readable.items()}
    assert summary["categories"] == {"metal_plate": 2, "magnetic_tile": 2}
    assert summary["thresholds"] == {"metal_plate": asdict(NOTHING_ANOMALOUS),  # what decided each category's images
                                     "magnetic_tile": asdict(EVERYTHING_ANOMALOUS)}
    # named, the category holds for every image, and so do its thresholds
    predict_folder(Predictor(TorchBackend(checkpoint, category="magnetic_tile"), "magnetic_tile"), inputs,
                   tmp_path / "named", write_pictures=False)
    named = read_rows(tmp_path / "named")
    assert {(named[name]["category"], named[name]["decision"]) for name in readable} == {("magnetic_tile", "anomalous")}
    # the command line says where the images went
    assert main(["predict", "--model", str(checkpoint), "--input", str(inputs), "--out", str(tmp_path / "cli"),
                 "--no-pictures"]) == 0
    assert "routed to the memory section of: magnetic_tile 2, metal_plate 2" in capsys.readouterr().out


def test_images_a_model_cannot_name_are_counted_as_unnamed(inputs, tmp_path):
    checkpoint = save_random_model(tmp_path / "model.safetensors", [])  # a model of no named categories
    store_calibration(checkpoint, Calibration({ALL: NOTHING_ANOMALOUS}, "mala test"))
    summary = predict_folder(Predictor(TorchBackend(checkpoint)), inputs / "plate", tmp_path / "out",
                             write_pictures=False)
    assert {row["category"] for row in read_rows(tmp_path / "out").values()} == {""}
    assert summary["categories"] == {UNNAMED: 2} and summary["thresholds"] == {UNNAMED: asdict(NOTHING_ANOMALOUS)}


def test_empty_and_missing_inputs_are_clear_errors(checkpoint, tmp_path):
    predictor = Predictor(TorchBackend(checkpoint))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in it or below it"):
        predict_folder(predictor, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(DataError, match="no such file or folder"):
        predict_folder(predictor, tmp_path / "nowhere", tmp_path / "out")


def test_output_names_do_not_clash():
    taken: set[Path] = set()
    assert output_name(Path("a/b.png"), taken) == Path("a/b.png")
    assert output_name(Path("a/b.jpg"), taken) == Path("a/b.jpg.png")


def test_cli_reports_a_bad_model_file_in_one_line(tmp_path, inputs, capsys):
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    assert main(["predict", "--model", str(tmp_path / "model.onnx"), "--input", str(inputs)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mala: error:") and "cannot load as an ONNX model" in error and "\n" not in error


TRAINING_ONLY = ("torch", "scipy", "matplotlib", "safetensors", "yaml", "lightning_fabric", "sklearn")
BLOCK_TRAINING_PACKAGES = f"""
import sys
for name in {TRAINING_ONLY!r}:
    sys.modules[name] = None  # importing it now fails, as on a PC with only the runtime extra
from mala.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_onnx_predict_runs_with_only_the_runtime_packages(onnx_model, inputs, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", BLOCK_TRAINING_PACKAGES, "predict", "--model", str(onnx_model), "--input",
                           str(inputs), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    assert sum(row["status"] == "ok" for row in rows.values()) == 4
    assert "5 images" in done.stdout and "1 unreadable" in done.stdout


def test_memory_search_switches_a_checkpoints_search_and_an_onnx_graph_refuses_it(onnx_model, inputs, tmp_path,
                                                                                    capsys):
    hybrid = save_random_model(tmp_path / "hybrid.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True)
    for kind, int8 in (("exact", False), ("int8", True)):
        memories = TorchBackend(hybrid, memory_search=kind).graph.model.memories
        assert memories and all(memory.int8_search == int8 for memory, _ in memories)
    assert main(["predict", "--model", str(hybrid), "--input", str(inputs), "--out", str(tmp_path / "exact"),
                 "--memory-search", "exact", "--no-pictures"]) == 0
    assert len(read_rows(tmp_path / "exact")) == 5
    assert main(["predict", "--model", str(onnx_model), "--input", str(inputs), "--memory-search", "exact"]) == 2
    assert "searches its memory as it was exported" in capsys.readouterr().err
