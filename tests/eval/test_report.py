"""The test report: files that hold exactly the computed metrics, links that resolve, n/a where undefined; the
full-resolution pixel metrics; `mala test` writing it all."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mala.checkpoint import save_checkpoint
from mala.cli import main
from mala.data.dataset import ImageCache
from mala.data.images import mask_pixels
from mala.data import sources
from mala.eval.evaluate import Predictions, category_metrics
from mala.eval.full_resolution import pixels_at_original_size
from mala.eval.metrics import roc_curve
from mala.eval.report import choose_examples, examples_file, write_report
from mala.model import MALA, image_score
from tests.conftest import shared_data

SIZE = 64
NO_ANOMALIES = "only_good"  # a category of normal images alone: every metric is undefined
TABLE_HEADERS = {  # what table.md calls each metric, written out here so the test does not trust the code's names
    "Image AUROC (%)": "image_auroc", "Pixel AUROC (%)": "pixel_auroc", "Image AP (%)": "image_ap",
    "Image F1-max (%)": "image_f1_max", "Pixel AP (%)": "pixel_ap", "Pixel F1-max (%)": "pixel_f1_max",
    "Pixel AUPRO (%)": "pixel_aupro",
}


@pytest.fixture(scope="module")
def cache() -> ImageCache:
    """Three normal and four anomalous metal_plate test images, plus two normal ones as a category of their own."""
    samples = sources.test_samples(sources.scan_roots([shared_data("metal_plate")]))
    normal = [s for s in samples if s.label == 0][:3]
    anomalous = [s for s in samples if s.label == 1][:4]
    only_normal = [dataclasses.replace(s, category=NO_ANOMALIES) for s in normal[:2]]
    return ImageCache.build(normal + anomalous + only_normal, SIZE)


@pytest.fixture(scope="module")
def predictions(cache: ImageCache) -> Predictions:
    """Maps that find the masks through noise, so every metric is defined and below 1."""
    rng = np.random.default_rng(0)
    masks = np.stack([cache.mask(i) for i in range(len(cache.samples))])
    maps = (0.3 * masks + 0.7 * rng.random(masks.shape)).astype(np.float32)
    return Predictions(maps, image_score(torch.from_numpy(maps), 9).numpy().astype(np.float64))


@pytest.fixture(scope="module")
def report(tmp_path_factory, cache: ImageCache, predictions: Predictions) -> tuple[Path, dict]:
    results = category_metrics(cache, predictions)
    out = tmp_path_factory.mktemp("report")
    index = write_report(out, cache, predictions, results, figures_per_category=3, trained_on=["metal_plate"])
    assert index == out / "index.html"
    return out, results


def markdown_rows(text: str) -> list[dict[str, str]]:
    """Every body row of every Markdown table, as {header: cell}."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(cells[0]) <= set("-:"):
            rows.append(dict(zip(header, cells)))
    return rows


def test_report_files_exist(report):
    out, _ = report
    expected = ["metrics.json", "metrics.csv", "table.md", "index.html", "roc_image.png", "roc_pixel.png",
                "examples_metal_plate.png", f"examples_{NO_ANOMALIES}.png"]
    for name in expected:
        assert (out / name).stat().st_size > 0, name


def test_metrics_json_holds_the_results(report):
    out, results = report
    written = json.loads((out / "metrics.json").read_text())
    assert written == {"trained_on": ["metal_plate"], "metrics": results}


def test_metrics_csv_holds_the_exact_numbers(report):
    out, results = report
    with (out / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["category"] for row in rows] == list(results)
    for row in rows:
        expected = results[row["category"]]
        assert set(row) - {"category"} == set(expected)
        for key, value in expected.items():
            assert row[key] == "n/a" if value is None else float(row[key]) == value, (row["category"], key)


def test_table_md_holds_the_numbers_in_percent(report):
    out, results = report
    rows = markdown_rows((out / "table.md").read_text())
    seen = set()
    for row in rows:
        expected = results[row["Category"]]
        for header, cell in row.items():
            if header == "Category":
                continue
            key = TABLE_HEADERS[header]
            seen.add(key)
            value = expected[key]
            assert cell == "n/a" if value is None else abs(float(cell) - 100 * value) <= 0.05 + 1e-9, (header, cell)
    assert seen == set(results["mean"])
    first_table_header = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("|"))
    assert first_table_header == "| Category | Image AUROC (%) | Pixel AUROC (%) |"  # the paper's Table 1 columns
    assert [row["Category"] for row in rows[:3]] == ["metal_plate", NO_ANOMALIES, "mean"]


def test_na_for_a_category_without_anomalous_pixels(report):
    out, results = report
    assert all(value is None for value in results[NO_ANOMALIES].values())
    assert results["metal_plate"]["pixel_auroc"] is not None
    csv_row = next(line for line in (out / "metrics.csv").read_text().splitlines() if line.startswith(NO_ANOMALIES))
    assert csv_row.split(",")[1:] == ["n/a"] * len(results["mean"])
    assert f"| {NO_ANOMALIES} | n/a | n/a |" in (out / "table.md").read_text()
    assert f"<td>{NO_ANOMALIES}</td><td>n/a</td>" in (out / "index.html").read_text()


def test_every_link_in_index_html_points_to_a_file(report):
    out, _ = report
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(links) == 3 + 2 + 2  # data files, ROC figures, one example figure per category
    for link in links:
        assert "//" not in link and not link.startswith("/"), link  # relative only
        assert (out / unquote(link)).is_file(), link
    assert not re.search(r"https?:", page)


def test_no_example_figures_when_none_asked(tmp_path, cache, predictions):
    write_report(tmp_path, cache, predictions, category_metrics(cache, predictions), figures_per_category=0)
    assert not list(tmp_path.glob("examples_*"))
    assert "examples_" not in (tmp_path / "index.html").read_text()


def test_example_file_names_stay_in_the_folder_and_apart():
    assert "/" not in examples_file("mvtec/bottle")
    assert examples_file("mvtec/bottle") != examples_file("mvtec_bottle")


def test_examples_include_best_and_worst_cases():
    labels = np.array([1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.5, 0.2, 0.9, 0.1, 0.7, 0.3, 0.6])
    picks = choose_examples(labels, scores, 5)
    assert picks[:3] == [(2, "anomalous, highest score"), (3, "anomalous, lowest score"), (4, "normal, highest score")]
    assert len({position for position, _ in picks}) == 5
    assert [p for p, _ in choose_examples(labels, scores, 2)] == [2, 3]
    assert [p for p, _ in choose_examples(np.zeros(3, dtype=int), scores[:3], 4)] == [2, 0, 1]  # normals only


def test_roc_curve_area_is_the_auroc():
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.random(300) + 0.3 * labels, 2)  # with ties
    fpr, tpr, area = roc_curve(labels, scores)
    assert area == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert roc_curve(np.zeros(3, dtype=bool), np.arange(3)) is None


def test_full_resolution_pixels_are_at_the_original_size(cache, predictions):
    indices = cache.indices_by_category()["metal_plate"]
    masks, maps = pixels_at_original_size(cache, predictions.maps, indices)
    assert masks.shape == maps.shape == (len(indices), 512, 512)
    for row, index in enumerate(indices):
        sample = cache.samples[index]
        expected = np.zeros((512, 512), bool) if sample.mask_path is None else mask_pixels(sample.mask_path)
        assert np.array_equal(masks[row], expected)
    # bilinear upsampling keeps the mean and the range of each map
    assert maps.mean(axis=(1, 2)) == pytest.approx(predictions.maps[indices].mean(axis=(1, 2)), abs=2e-3)
    assert maps.min() >= predictions.maps[indices].min() and maps.max() <= predictions.maps[indices].max()


def test_full_resolution_metrics_of_mask_maps_are_near_perfect(cache):
    masks = np.stack([cache.mask(i) for i in range(len(cache.samples))]).astype(np.float32)
    perfect = Predictions(masks, masks.max(axis=(1, 2)).astype(np.float64))
    full = category_metrics(cache, perfect, full_resolution=True)["metal_plate"]
    assert full["image_auroc"] == 1.0
    assert 0.97 < full["pixel_auroc"] < 1.0  # 64 px maps blur the 512 px mask edges a little


def small_mvtec_copy(root: Path) -> Path:
    """metal_plate cut to one training image, two normal and two anomalous test images, in MVTec layout."""
    source = shared_data("metal_plate")
    picks = {"train/good": 1, "test/good": 2, "test/defect": 2}
    for folder, count in picks.items():
        (root / folder).mkdir(parents=True)
        for image in sorted((source / folder).glob("*.png"))[:count]:
            shutil.copy(image, root / folder)
    (root / "ground_truth/defect").mkdir(parents=True)
    for image in (root / "test/defect").iterdir():
        shutil.copy(source / "ground_truth/defect" / f"{image.stem}_mask.png", root / "ground_truth/defect")
    return root


def test_mala_test_writes_the_report(tmp_path, small_config, capsys):
    data = small_mvtec_copy(tmp_path / "data" / "metal_plate")
    model_file = tmp_path / "model.safetensors"
    untrained = MALA(small_config.model).state_dict()  # the report's wiring is under test, not the model
    save_checkpoint(model_file, {"kind": "model", "config": small_config.to_dict(),
                                 "data": {"categories": ["metal_plate"]}, "model": untrained})
    out = tmp_path / "report"
    code = main(["test", "--checkpoint", str(model_file), "--data", str(data), "--out", str(out),
                 "--figures", "2", "--full-resolution"])
    assert code == 0
    assert str(out / "index.html") in capsys.readouterr().out
    written = json.loads((out / "metrics.json").read_text())
    assert written["trained_on"] == ["metal_plate"]
    assert 0 <= written["metrics"]["metal_plate"]["pixel_auroc"] <= 1
    assert (out / "examples_metal_plate.png").is_file()
