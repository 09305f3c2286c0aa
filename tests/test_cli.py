"""The `mala` command: user errors are one line without a traceback; the demo trains and tests end to end."""

import json
import subprocess
import sys

from mala.deploy.graph import read_calibration
from tests.conftest import shared_data


def _mala(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mala.cli", *args], capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_missing_data_folder(tmp_path):
    result = _mala("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    _assert_one_line_error(result, "missing: data folder not found")


def test_unknown_category(tmp_path):
    result = _mala("train", "--data", str(shared_data("metal_plate")), "--categories", "bottle", "--out", str(tmp_path))
    _assert_one_line_error(result, "categories not found: bottle")


def test_bad_config_value(tmp_path):
    result = _mala("train", "--data", str(tmp_path), "--set", "stage1.nonsense=3")
    _assert_one_line_error(result, "--set 'stage1.nonsense=3'")


def test_a_mask_ratio_that_hides_everything_is_refused(tmp_path):
    result = _mala("train", "--data", str(tmp_path), "--set", "stage1.mask_ratio=1")
    _assert_one_line_error(result, "stage1.mask_ratio must be at least 0 and below 1, got 1.0")


def test_checkpoint_that_is_not_one(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x00" * 64)
    result = _mala("test", "--checkpoint", str(fake), "--data", str(shared_data("metal_plate")))
    _assert_one_line_error(result, "model.safetensors: not a safetensors checkpoint")


def test_resume_without_a_run(tmp_path):
    result = _mala("train", "--data", str(shared_data("metal_plate")), "--out", str(tmp_path / "run"), "--resume")
    _assert_one_line_error(result, "nothing to resume")


def test_demo_generates_trains_and_tests(tmp_path):
    result = _mala("demo", "--out", str(tmp_path), "--minutes", "0.4")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"weave", "granite", "washer", "pcb_chip", "mean"}
    assert 0 <= metrics["mean"]["pixel_auroc"] <= 1
    assert "mean" in result.stdout and "image auroc" in result.stdout
    # decisions come from thresholds chosen on the validation images, not on the test set
    assert read_calibration(tmp_path / "run" / "model.safetensors").data == [str(tmp_path / "validation")]
