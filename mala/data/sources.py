"""From the user's data (`--data` values, data-config entries) to one list of samples over every dataset.

Each source is read by the reader of its layout, detected unless named. Every source is one dataset, named by its
`name` option, else by its root folder (see `DataSource.dataset_name`); two datasets may not share a name.
Categories keep the names their dataset gives them, except where two datasets hold categories of the same name:
all of those become `DATASET/CATEGORY`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mala.data.generic import read_folder
from mala.data.ksdd2 import read_ksdd2
from mala.data.mt import read_mt
from mala.data.mvtec import read_mvtec
from mala.data.samples import Sample
from mala.data.scanning import Problems, raise_first, reported
from mala.data.specs import DataSource, detect_kind, parse_data_arg
from mala.data.visa import read_visa
from mala.errors import DataError

READERS: dict[str, Callable[[DataSource, Problems], list[Sample]]] = {
    "mvtec": read_mvtec,
    "visa": read_visa,
    "ksdd2": read_ksdd2,
    "mt": read_mt,
    "folder": read_folder,
}
DataSpec = Path | str | DataSource  # a path or `--data` value, or a parsed source


@dataclass
class Scan:
    """Every sample found, and every problem met on the way."""

    samples: list[Sample]
    problems: Problems


def as_source(spec: DataSpec) -> DataSource:
    return spec if isinstance(spec, DataSource) else parse_data_arg(str(spec))


def _with_kind(source: DataSource, problems: Problems) -> DataSource | None:
    """The source with its layout detected if it names none; None with the problem reported if unknown."""
    if source.kind is not None:
        return source
    kind = reported(lambda: detect_kind(source.root), problems)
    return None if kind is None else replace(source, kind=kind)


def _read(sources: list[DataSource], problems: Problems) -> dict[str, list[Sample]]:
    """Each dataset's samples by dataset name."""
    by_dataset: dict[str, list[Sample]] = {}
    places: dict[str, str] = {}
    for source in sources:
        known = len(problems)
        source = _with_kind(source, problems)
        if source is None:
            continue
        name = source.dataset_name()
        if name in by_dataset:
            problems.append(f"{source.describe()}: dataset name {name!r} is also that of {places[name]}; "
                            "name one of them (name=... in --data or a data config)")
            continue
        places[name] = source.describe()
        by_dataset[name] = READERS[source.kind](source, problems)
        if not by_dataset[name] and len(problems) == known:
            problems.append(f"{source.describe()}: no images found")
    return by_dataset


def _named(by_dataset: dict[str, list[Sample]]) -> list[Sample]:
    """Samples with their dataset set, and `DATASET/` before the categories that two datasets share."""
    holders = Counter(category for samples in by_dataset.values() for category in {s.category for s in samples})
    return [
        replace(s, dataset=dataset, category=f"{dataset}/{s.category}" if holders[s.category] > 1 else s.category)
        for dataset, samples in by_dataset.items()
        for s in samples
    ]


def _chosen(samples: list[Sample], categories: list[str], problems: Problems) -> list[Sample]:
    found = {s.category for s in samples}
    missing = [c for c in categories if c not in found]
    if missing:
        problems.append(f"categories not found: {', '.join(missing)} (found: {', '.join(sorted(found))})")
    return [s for s in samples if s.category in set(categories)]


def scan_sources(specs: list[DataSpec], categories: list[str] | None = None) -> Scan:
    """Samples of every dataset, optionally only `categories` (names as reported, prefixed where they collide)."""
    problems: Problems = []
    samples = _named(_read([as_source(spec) for spec in specs], problems))
    if categories:
        samples = _chosen(samples, categories, problems)
    return Scan(samples, problems)


def scan_roots(specs: list[DataSpec], categories: list[str] | None = None) -> list[Sample]:
    """As `scan_sources`, raising the first problem as a DataError."""
    scan = scan_sources(specs, categories)
    raise_first(scan.problems)
    return scan.samples


def train_samples(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.split == "train" and s.label == 0]


def test_samples(samples: list[Sample]) -> list[Sample]:
    found = [s for s in samples if s.split == "test"]
    if not found:
        raise DataError("no test images found (README.md, section Datasets, shows where each layout keeps them)")
    return found
