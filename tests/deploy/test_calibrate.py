"""`mala calibrate` chooses thresholds on real data and stores them with the model (`mala test` only when asked,
with a warning); predictions then flag what the thresholds promise."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mala import engine
from mala.cli import main
from mala.deploy.backends import TorchBackend
from mala.deploy.calibration import ALL
from mala.deploy.graph import read_calibration
from mala.deploy.predict import Predictor, predict_folder
from mala.errors import ConfigError
from tests.conftest import shared_data
from tests.data.layouts import mvtec_category
from tests.deploy.conftest import save_random_model


def test_quantile_on_normal_images_flags_that_share_of_them(checkpoint, tmp_path):
    normal = shared_data("metal_plate", "train", "good")
    calibration = engine.calibrate(checkpoint, normal_folders=[normal], quantile=0.8, pixel_quantile=0.9)
    entry = calibration.thresholds("good")  # categories are named after the folders
    assert entry.image_rule == "0.8 quantile of 54 normal images" and entry.images == 54
    assert read_calibration(checkpoint) == calibration
    summary = predict_folder(Predictor(TorchBackend(checkpoint), "good"), normal, tmp_path / "out",
                             write_pictures=False)
    # the same images through the deployment path: about 20% of them at or above the 0.8 quantile
    assert summary["anomalous"] == pytest.approx(0.2 * 54, abs=1.5)
    with (tmp_path / "out" / "results.csv").open() as handle:
        areas = [float(row["anomalous_area"]) for row in csv.DictReader(handle)]
    assert np.mean(areas) == pytest.approx(0.1, abs=0.02)  # about 10% of normal pixels above the 0.9 quantile


def test_f1_max_on_labelled_data_for_each_category_and_all(checkpoint):
    roots = [shared_data("metal_plate"), shared_data("magnetic_tile")]
    calibration = engine.calibrate(checkpoint, roots=roots, categories=["metal_plate"])
    assert set(calibration.entries) == {ALL, "metal_plate"}
    entry = calibration.thresholds("metal_plate")
    assert entry.image_rule == "F1-max" and entry.pixel_rule == "F1-max over pixels"
    assert entry.image_min <= entry.image_threshold <= entry.image_max


def test_test_leaves_the_model_file_alone_and_reports_its_f1_max_thresholds(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    data = ["--data", str(shared_data("metal_plate"))]
    assert main(["test", "--checkpoint", str(checkpoint), *data, "--figures", "0", "--out", str(tmp_path / "t")]) == 0
    assert checkpoint.read_bytes() == before and read_calibration(checkpoint) is None
    report = json.loads((tmp_path / "t" / "thresholds.json").read_text())
    assert report["chosen_by"] == "mala test" and report["entries"]["metal_plate"]["image_rule"] == "F1-max"
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["metrics"]["metal_plate"]["image_f1_max"] > 0
    assert "has no decision thresholds: choose them with `mala calibrate`" in capsys.readouterr().err


def test_test_of_a_run_folder_writes_its_report_inside_that_folder(checkpoint):
    run = checkpoint.parent
    assert main(["test", "--checkpoint", str(run), "--data", str(shared_data("metal_plate")), "--figures", "0"]) == 0
    assert json.loads((run / "test" / "metrics.json").read_text())["metrics"]["metal_plate"]["image_auroc"] >= 0
    assert not (run.parent / "test").exists()  # not beside the run, where another run's report may lie


def test_test_stores_its_thresholds_only_when_asked_and_names_the_leak(checkpoint, tmp_path, capsys):
    data = ["--data", str(shared_data("metal_plate"))]
    assert main(["calibrate", "--checkpoint", str(checkpoint), "--normal",
                 str(shared_data("metal_plate", "train", "good"))]) == 0
    calibrated = read_calibration(checkpoint)
    assert main(["test", "--checkpoint", str(checkpoint), *data, "--figures", "0", "--out", str(tmp_path / "t")]) == 0
    assert read_calibration(checkpoint) == calibrated  # by default a test never changes the model
    capsys.readouterr()
    assert main(["test", "--checkpoint", str(checkpoint), *data, "--figures", "0", "--out", str(tmp_path / "t2"),
                 "--store-test-thresholds"]) == 0
    assert read_calibration(checkpoint).chosen_by == "mala test"
    warning = capsys.readouterr().err
    assert "warning:" in warning and "replacing those of `mala calibrate`" in warning
    assert "The test labels chose them" in warning and "optimistic" in warning


def test_calibrate_needs_exactly_one_kind_of_data(checkpoint):
    with pytest.raises(ConfigError, match="one of them"):
        engine.calibrate(checkpoint)


def test_a_model_on_read_only_storage_is_still_tested(checkpoint, tmp_path, capsys, monkeypatch):
    def read_only(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(engine, "store_calibration", read_only)  # as root, a chmod would not stop the write
    results = engine.test(checkpoint, [shared_data("metal_plate")], out=tmp_path / "report", figures_per_category=0,
                          store_test_thresholds=True)
    assert results["metal_plate"]["image_auroc"] is not None
    assert read_calibration(checkpoint) is None and (tmp_path / "report" / "thresholds.json").exists()
    assert "thresholds not stored with the model (Permission denied)" in capsys.readouterr().err


def test_thresholds_record_where_they_were_chosen(checkpoint):
    root = shared_data("metal_plate")
    calibration = engine.calibrate(checkpoint, roots=[root])
    assert calibration.data == [str(root)]


def test_routing_a_model_without_a_memory_is_refused_in_one_line(tmp_path, capsys):
    checkpoint = save_random_model(tmp_path / "run" / "model.safetensors", ["plate"])  # the pixel ViT: no memory
    root = tmp_path / "data"
    mvtec_category(root, "plate")
    assert main(["test", "--checkpoint", str(checkpoint), "--data", str(root), "--route"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mala: error: ") and "--route needs a normal-feature memory" in error
