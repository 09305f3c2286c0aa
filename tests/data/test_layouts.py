"""Every supported layout, built from real images: detection, counts, labels, masks, and the problems each reports."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.data.dataset import ImageCache
from mala.data.images import read_mask
from mala.data import sources
from mala.data.sources import scan_roots, scan_sources, train_samples
from mala.data.specs import detect_kind
from mala.errors import DataError
from tests.data import layouts


def _counts(samples) -> Counter:
    return Counter((s.category, s.split, s.label) for s in samples)


def _problems(*specs) -> list[str]:
    return scan_sources(list(specs)).problems


# ----- detection ----------------------------------------------------------------------------------------------


def test_each_layout_is_detected(tmp_path):
    layouts.mvtec_category(tmp_path / "mvtec")
    assert detect_kind(tmp_path / "mvtec") == "mvtec"
    assert detect_kind(tmp_path / "mvtec" / "plate") == "mvtec"
    assert detect_kind(layouts.visa_root(tmp_path / "visa")) == "visa"
    assert detect_kind(layouts.ksdd2_root(tmp_path / "ksdd2")) == "ksdd2"
    assert detect_kind(layouts.mt_root(tmp_path / "mt")) == "mt"


def test_an_unknown_layout_says_what_was_looked_for(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"photos: no known dataset layout .*name the kind, e.g. mvtec:PATH"):
        scan_roots([tmp_path / "photos"])


def test_an_explicit_kind_is_read_with_that_reader(tmp_path):
    root = layouts.visa_root(tmp_path / "v")
    assert _counts(scan_roots([f"visa:{root}"])) == _counts(scan_roots([root]))
    with pytest.raises(DataError, match=r"no category folders"):
        scan_roots([f"mvtec:{root}"])


# ----- MVTec AD and MVTec LOCO ------------------------------------------------------------------------------


def test_mvtec_loco_validation_images_are_not_trained_on_and_mask_folders_merge(tmp_path):
    layouts.mvtec_loco_category(tmp_path)
    samples = scan_roots([tmp_path])
    assert _counts(samples) == {("box", "train", 0): 3, ("box", "validation", 0): 2, ("box", "test", 0): 1,
                                ("box", "test", 1): 1}
    assert len(train_samples(samples)) == 3 and len(sources.test_samples(samples)) == 2
    anomalous = next(s for s in samples if s.label)
    assert anomalous.defect == "logical_anomalies" and anomalous.mask_path.is_dir()
    merged = read_mask(anomalous.mask_path, 64, image_path=anomalous.path)
    halves = [read_mask(path, 64) for path in sorted(anomalous.mask_path.iterdir())]
    assert halves[0].any() and halves[1].any() and np.array_equal(merged, halves[0] | halves[1])


def test_mvtec_empty_defect_folder_and_empty_mask_folder(tmp_path):
    category = layouts.mvtec_loco_category(tmp_path)
    (category / "test" / "structural_anomalies").mkdir()
    for mask in (category / "ground_truth" / "logical_anomalies" / "000").iterdir():
        mask.unlink()
    problems = _problems(tmp_path)
    assert any(p.endswith("000: no mask images in this mask folder") for p in problems), problems
    assert any("test/structural_anomalies: no images" in p for p in problems), problems


def test_mvtec_duplicate_names_after_stem_matching(tmp_path):
    category = layouts.mvtec_category(tmp_path)
    first = next((category / "train" / "good").iterdir())
    Image.open(first).save(first.with_suffix(".jpg"))
    with pytest.raises(DataError, match=rf"{first.stem}\.png: same name as {first.stem}\.jpg in its folder"):
        scan_roots([tmp_path])


def test_mvtec_mask_and_mask_folder_of_one_image_are_ambiguous(tmp_path):
    category = layouts.mvtec_category(tmp_path)
    mask = next((category / "ground_truth" / "defect").iterdir())
    layouts.copy(mask, mask.parent / mask.name.replace("_mask", ""))
    assert any("same name as" in p for p in _problems(tmp_path))


# ----- VisA ---------------------------------------------------------------------------------------------------


def test_visa_counts_labels_and_masks(tmp_path):
    root = layouts.visa_root(tmp_path / "VisA")
    samples = scan_roots([root])
    assert _counts(samples) == {("metal_plate", "train", 0): 3, ("metal_plate", "test", 0): 1,
                                ("metal_plate", "test", 1): 2}
    assert {s.dataset for s in samples} == {"VisA"}
    cache = ImageCache.build(sources.test_samples(samples), 32, workers=1)
    anomalous = [i for i, s in enumerate(cache.samples) if s.label]
    assert sorted(cache.masks) == anomalous and all(cache.mask(i).any() for i in anomalous)


def test_visa_csv_problems_are_all_reported_with_file_and_line(tmp_path):
    root = layouts.visa_root(tmp_path)
    rows = csv_rows(root)
    rows[1][2] = "broken"  # label
    rows[2][3] = "metal_plate/Data/Images/Normal/missing.PNG"
    rows[-1][4] = ""  # an anomaly without its mask
    rows.append(rows[-2])  # listed twice
    layouts.write_csv(root / "split_csv" / "1cls.csv", rows)
    problems = _problems(root)
    csv_file = root / "split_csv" / "1cls.csv"
    assert problems[0] == (f"{csv_file}:2: split must be train or test and label normal or anomaly, "
                           "got 'train' and 'broken'")
    assert problems[1] == f"{root}/metal_plate/Data/Images/Normal/missing.PNG: image not found (listed in {csv_file}:3)"
    assert problems[2] == f"{csv_file}:7: no mask given"
    assert problems[3].endswith(f"Anomaly/000.PNG: listed twice ({csv_file}:6 and {csv_file}:8)")
    with pytest.raises(DataError, match=r"got 'train' and 'broken' \(and 3 more problems: `mala check-data` lists"):
        scan_roots([root])


def test_visa_missing_columns(tmp_path):
    root = layouts.visa_root(tmp_path)
    layouts.write_csv(root / "split_csv" / "1cls.csv", [["object", "split", "image"]])
    with pytest.raises(DataError, match=r"1cls.csv: missing column\(s\) label, mask"):
        scan_roots([f"visa:{root}"])


def csv_rows(root: Path) -> list[list[str]]:
    with (root / "split_csv" / "1cls.csv").open(newline="") as handle:
        return list(csv.reader(handle))


# ----- KolektorSDD2 -------------------------------------------------------------------------------------------


def test_ksdd2_labels_come_from_the_ground_truth_pixels(tmp_path):
    root = layouts.ksdd2_root(tmp_path / "KSDD2")
    gt = root / "test" / "10004_GT.png"
    layouts.save_mask(np.pad(np.ones((4, 4), np.uint8), 254), gt)  # value 1, not 255: still anomalous
    samples = scan_roots([root])
    assert _counts(samples) == {("kolektorsdd2", "train", 0): 3, ("kolektorsdd2", "train", 1): 1,
                                ("kolektorsdd2", "test", 0): 1, ("kolektorsdd2", "test", 1): 3}
    assert len(train_samples(samples)) == 3  # the anomalous training image is left out
    changed = next(s for s in samples if s.path.name == "10004.png")
    assert changed.label == 1 and changed.mask_path == gt
    assert all(s.mask_path is None for s in samples if s.label == 0)


def test_ksdd2_missing_and_unreadable_ground_truth(tmp_path):
    root = layouts.ksdd2_root(tmp_path)
    (root / "train" / "10000_GT.png").unlink()
    (root / "test" / "10004_GT.png").write_bytes(b"not a png")
    problems = _problems(f"ksdd2:{root}")
    assert problems[0] == f"{root}/train/10000.png: no mask found (looked for {root}/train/10000_GT.png)"
    assert problems[1].startswith(f"{root}/test/10004_GT.png: cannot read image")


# ----- MT -----------------------------------------------------------------------------------------------------


def test_mt_defects_masks_and_seeded_split(tmp_path):
    root = layouts.mt_root(tmp_path / "Magnetic-Tile-Defect")
    samples = scan_roots([root])
    assert _counts(samples) == {("magnetic_tile", "train", 0): 6, ("magnetic_tile", "test", 0): 2,
                                ("magnetic_tile", "test", 1): 3}
    assert Counter(s.defect for s in samples if s.label) == {"blowhole": 2, "crack": 1}
    assert all(s.mask_path == s.path.with_suffix(".png") for s in samples if s.label)
    default_test = {s.path for s in samples if s.split == "test" and not s.label}
    assert default_test == {s.path for s in scan_roots([f"kind=mt,root={root},seed=0"]) if s.split == "test"
                            and not s.label}
    other_seeds = [{s.path for s in scan_roots([f"kind=mt,root={root},seed={seed}"]) if s.split == "test"
                    and not s.label} for seed in range(1, 6)]
    assert any(test != default_test for test in other_seeds)


def test_mt_image_without_mask(tmp_path):
    root = layouts.mt_root(tmp_path)
    mask = next((root / "MT_Crack" / "Imgs").glob("*.png"))
    mask.unlink()
    with pytest.raises(DataError, match=rf"{mask.stem}\.jpg: no mask found \(looked for .*{mask.name}\)"):
        scan_roots([root])


# ----- generic folders ----------------------------------------------------------------------------------------


def test_generic_folders_with_a_mask_missing(tmp_path):
    folders = layouts.generic_folders(tmp_path / "widget")
    spec = layouts.generic_spec(folders)
    samples = scan_roots([spec])
    assert _counts(samples) == {("widget", "train", 0): 3, ("widget", "test", 0): 1, ("widget", "test", 1): 2}
    by_name = {s.path.name: s for s in samples if s.label}
    assert by_name["a.png"].mask_path.name == "a_mask.png" and by_name["a.png"].has_mask
    assert by_name["b.png"].mask_path is None and not by_name["b.png"].has_mask
    assert all(s.has_mask for s in samples if not s.label)


def test_generic_folders_flat_masks_and_category_option(tmp_path):
    folders = layouts.generic_folders(tmp_path)
    flat = tmp_path / "flat_masks"
    layouts.copy(folders["masks"] / "scratch" / "a_mask.png", flat / "b.png")
    samples = scan_roots([f"kind=folder,normal={folders['normal']},test={folders['scratch']},masks={flat},"
                          "category=plates"])
    assert {s.path.name: s.has_mask for s in samples if s.label} == {"a.png": False, "b.png": True}
    assert {s.category for s in samples} == {"plates"}


def test_generic_folders_problems(tmp_path):
    folders = layouts.generic_folders(tmp_path)
    Image.open(folders["scratch"] / "a.png").save(folders["scratch"] / "a.jpg")
    (tmp_path / "empty").mkdir()
    problems = _problems(f"kind=folder,normal={tmp_path / 'empty'},test={folders['scratch']};{tmp_path / 'gone'}")
    assert problems == [
        f"{tmp_path / 'empty'}: no images (looked for .bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp)",
        f"{folders['scratch'] / 'a.png'}: same name as a.jpg in its folder (files are matched by name without "
        "extension; keep one)",
        f"{tmp_path / 'gone'}: folder not found",
    ]


# ----- images and masks of any kind ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode, value", [("I;16", 1), ("L", 1), ("RGB", (0, 0, 1)), ("P", 3), ("1", 1)])
def test_any_non_zero_mask_value_is_anomalous(tmp_path, mode, value):
    mask = Image.new(mode, (40, 20), 0)
    if mode == "P":
        mask.putpalette([0, 0, 0] * 3 + [9, 9, 9] + [0, 0, 0] * 252)
    mask.paste(value, (0, 0, 10, 20))
    mask.save(tmp_path / "mask.png")
    pixels = read_mask(tmp_path / "mask.png", 8)
    assert pixels[:, :2].all() and not pixels[:, 2:].any()


def test_palette_index_zero_need_not_be_black(tmp_path):
    mask = Image.new("P", (8, 8), 0)
    mask.putpalette([255, 255, 255] + [0, 0, 0] * 255)  # index 0 is white: every pixel anomalous
    mask.save(tmp_path / "mask.png")
    assert read_mask(tmp_path / "mask.png", 8).all()
