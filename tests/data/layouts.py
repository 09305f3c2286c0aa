"""Small datasets in every supported layout, built in a temporary folder from a few real files of ../shared/data."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import shared_data


def plate_normals(count: int) -> list[Path]:
    """Defect-free metal_plate images (512 x 512 RGB PNG)."""
    return sorted((shared_data("metal_plate") / "train" / "good").iterdir())[:count]


def plate_defects(count: int) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of anomalous metal_plate images."""
    source = shared_data("metal_plate")
    images = sorted((source / "test" / "defect").iterdir())[:count]
    return [(image, source / "ground_truth" / "defect" / f"{image.stem}_mask.png") for image in images]


def tile_normals(count: int) -> list[Path]:
    """Defect-free magnetic tile images (grey JPEG of varying sizes)."""
    return sorted((shared_data("magnetic_tile") / "train" / "good").iterdir())[:count]


def tile_defects(defect: str, count: int) -> list[tuple[Path, Path]]:
    source = shared_data("magnetic_tile")
    images = sorted((source / "test" / defect).iterdir())[:count]
    return [(image, source / "ground_truth" / defect / f"{image.stem}_mask.png") for image in images]


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def save_mask(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def empty_mask_like(image: Path, path: Path) -> Path:
    with Image.open(image) as opened:
        width, height = opened.size
    return save_mask(np.zeros((height, width), dtype=np.uint8), path)


def mvtec_category(root: Path, name: str = "plate", normals: int = 3, defects: int = 1) -> Path:
    """ROOT/NAME in MVTec AD layout: train/good, test/good (one image), test/defect with ground_truth/defect."""
    category = root / name
    goods = plate_normals(normals)
    for path in goods:
        copy(path, category / "train" / "good" / path.name)
    copy(goods[0], category / "test" / "good" / goods[0].name)
    for image, mask in plate_defects(defects):
        copy(image, category / "test" / "defect" / image.name)
        copy(mask, category / "ground_truth" / "defect" / mask.name)
    return category


def mvtec_loco_category(root: Path, name: str = "box") -> Path:
    """An MVTec LOCO category: validation/good, and each defect's mask split over two files in a folder."""
    category = root / name
    goods = plate_normals(5)
    for path in goods[:3]:
        copy(path, category / "train" / "good" / path.name)
    for path in goods[3:]:
        copy(path, category / "validation" / "good" / path.name)
    copy(goods[0], category / "test" / "good" / "000.png")
    (image, mask), = plate_defects(1)
    copy(image, category / "test" / "logical_anomalies" / "000.png")
    pixels = np.asarray(Image.open(mask))
    left, right = pixels.copy(), pixels.copy()
    left[:, 256:], right[:, :256] = 0, 0
    save_mask(left, category / "ground_truth" / "logical_anomalies" / "000" / "000.png")
    save_mask(right, category / "ground_truth" / "logical_anomalies" / "000" / "001.png")
    return category


VISA_HEADER = ["object", "split", "label", "image", "mask"]


def visa_root(root: Path, name: str = "metal_plate", normals: int = 4, defects: int = 2) -> Path:
    """VisA layout: OBJECT/Data/Images/{Normal,Anomaly}, OBJECT/Data/Masks/Anomaly, split_csv/1cls.csv.

    All normal images but the last train; the last and every anomalous image test."""
    rows = []
    for i, path in enumerate(plate_normals(normals)):
        relative = f"{name}/Data/Images/Normal/{i:04d}.PNG"
        copy(path, root / relative)
        rows.append([name, "train" if i < normals - 1 else "test", "normal", relative, ""])
    for i, (image, mask) in enumerate(plate_defects(defects)):
        relative_image = f"{name}/Data/Images/Anomaly/{i:03d}.PNG"
        relative_mask = f"{name}/Data/Masks/Anomaly/{i:03d}.png"
        copy(image, root / relative_image)
        copy(mask, root / relative_mask)
        rows.append([name, "test", "anomaly", relative_image, relative_mask])
    write_csv(root / "split_csv" / "1cls.csv", [VISA_HEADER, *rows])
    return root


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def ksdd2_root(root: Path) -> Path:
    """KolektorSDD2 layout: train/ 3 normal + 1 anomalous, test/ 2 normal + 2 anomalous; N.png with N_GT.png."""
    normals, defects = plate_normals(5), plate_defects(3)
    plan = {"train": (normals[:3], defects[:1]), "test": (normals[3:], defects[1:])}
    number = 10000
    for split, (goods, bads) in plan.items():
        for image in goods:
            copy(image, root / split / f"{number}.png")
            empty_mask_like(image, root / split / f"{number}_GT.png")
            number += 1
        for image, mask in bads:
            copy(image, root / split / f"{number}.png")
            copy(mask, root / split / f"{number}_GT.png")
            number += 1
    return root


def mt_root(root: Path, normals: int = 8, defects: dict[str, int] | None = None) -> Path:
    """Original MT layout: MT_Free/Imgs and MT_<Defect>/Imgs, each image X.jpg with its mask X.png beside it."""
    for image in tile_normals(normals):
        copy(image, root / "MT_Free" / "Imgs" / image.name)
        empty_mask_like(image, root / "MT_Free" / "Imgs" / f"{image.stem}.png")  # as in the original: empty masks
    for defect, count in (defects or {"blowhole": 2, "crack": 1}).items():
        folder = root / f"MT_{defect.capitalize()}" / "Imgs"
        for image, mask in tile_defects(defect, count):
            copy(image, folder / image.name)
            copy(mask, folder / f"{image.stem}.png")
    return root


def generic_folders(root: Path) -> dict[str, Path]:
    """normal/ (3), test/good (1), test/scratch (2, the first with a mask in masks/scratch), masks/."""
    for image in plate_normals(3):
        copy(image, root / "normal" / image.name)
    copy(plate_normals(4)[3], root / "test" / "good" / "ok.png")
    (first, first_mask), (second, _) = plate_defects(2)
    copy(first, root / "test" / "scratch" / "a.png")
    copy(second, root / "test" / "scratch" / "b.png")
    copy(first_mask, root / "masks" / "scratch" / "a_mask.png")
    return {"normal": root / "normal", "good": root / "test" / "good", "scratch": root / "test" / "scratch",
            "masks": root / "masks"}


def generic_spec(folders: dict[str, Path]) -> str:
    """The `--data` value of `generic_folders`."""
    return (f"kind=folder,normal={folders['normal']},test={folders['good']};{folders['scratch']},"
            f"masks={folders['masks']}")
