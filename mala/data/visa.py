"""Reader for the original VisA layout: images under ROOT, listed in a split CSV (`split_csv/1cls.csv`).

    object,split,label,image,mask
    candle,train,normal,candle/Data/Images/Normal/0000.JPG,
    candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png

split: train or test; label: normal or anomaly; paths relative to ROOT; every anomaly needs its mask.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mala.data.samples import Sample
from mala.data.scanning import Problems, choose_categories, root_found
from mala.data.specs import DataSource

COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
SPLITS = ("train", "test")
DEFECT = "anomaly"  # VisA names no defect types

Row = dict[str, str]


def _rows(split_csv: Path, problems: Problems) -> list[tuple[str, Row]]:
    """(file:line, row) of every data row, values stripped; nothing if the file is unusable."""
    try:
        with split_csv.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [(f"{split_csv}:{reader.line_num}", row) for row in reader]
    except FileNotFoundError:
        problems.append(f"{split_csv}: split file not found")
        return []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{split_csv}: cannot read the split file ({exc})")
        return []
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        problems.append(f"{split_csv}: missing column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        return []
    return [(where, {c: (row.get(c) or "").strip() for c in COLUMNS}) for where, row in rows]


def _listed_file(root: Path, value: str, what: str, where: str, problems: Problems) -> Path | None:
    """The file a row names, or None with its problem reported."""
    if not value:
        problems.append(f"{where}: no {what} given")
        return None
    if not (root / value).is_file():
        problems.append(f"{root / value}: {what} not found (listed in {where})")
        return None
    return root / value


def _sample(root: Path, where: str, row: Row, problems: Problems) -> Sample | None:
    """The row's sample, or None with its problem reported."""
    label = LABELS.get(row["label"])
    if row["split"] not in SPLITS or label is None:
        problems.append(f"{where}: split must be {' or '.join(SPLITS)} and label {' or '.join(LABELS)}, "
                        f"got {row['split']!r} and {row['label']!r}")
        return None
    image = _listed_file(root, row["image"], "image", where, problems)
    if image is None:
        return None
    if label == 0:
        return Sample(row["object"], image, row["split"], 0)
    mask = _listed_file(root, row["mask"], "mask", where, problems)
    return None if mask is None else Sample(row["object"], image, row["split"], 1, DEFECT, mask)


def read_visa(source: DataSource, problems: Problems) -> list[Sample]:
    """The samples of the source's categories (VisA objects)."""
    if not root_found(source.root, problems):
        return []
    by_object: dict[str, list[tuple[str, Row]]] = {}
    for where, row in _rows(source.root / source.split_csv, problems):
        by_object.setdefault(row["object"], []).append((where, row))
    if "" in by_object:
        problems += [f"{where}: object is empty" for where, _ in by_object.pop("")]
    samples: list[Sample] = []
    first_listed: dict[Path, str] = {}
    for rows in choose_categories(by_object, source, problems).values():
        for where, row in rows:
            sample = _sample(source.root, where, row, problems)
            if sample is not None and sample.path in first_listed:
                problems.append(f"{sample.path}: listed twice ({first_listed[sample.path]} and {where})")
            elif sample is not None:
                first_listed[sample.path] = where
                samples.append(sample)
    return samples
