"""`mala check-data`: what the data holds, and every problem in it, found without training."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mala.data.images import read_mask, read_rgb
from mala.data.samples import SPLITS, Sample
from mala.data.scanning import Problems, reported
from mala.data.sources import DataSpec, scan_sources
from mala.progress import progress

PROBE_SIZE = 8  # decoding is what is checked; the resized pixels are thrown away
COLUMNS = ("normal", "anomalous", "no mask")  # "no mask": anomalous images that count for image metrics only


@dataclass
class DataReport:
    """The samples found, and every problem met in scanning and decoding them."""

    samples: list[Sample]
    problems: Problems

    def counts(self) -> dict[tuple[str, str, str], Counter[str]]:
        """Per (dataset, category, split): how many images in each of COLUMNS."""
        table: dict[tuple[str, str, str], Counter[str]] = {}
        for s in sorted(self.samples, key=lambda s: (s.dataset, s.category, SPLITS.index(s.split))):
            row = table.setdefault((s.dataset, s.category, s.split), Counter())
            row["anomalous" if s.label else "normal"] += 1
            row["no mask"] += not s.has_mask
        return table

    def text(self) -> str:
        """The counts as a table, then every problem."""
        table = [("dataset", "category", "split", *COLUMNS)]
        table += [(*key, *(str(row[c]) for c in COLUMNS)) for key, row in self.counts().items()]
        lines = _aligned(table, text_columns=3) if table[1:] else ["no images found"]
        if not self.problems:
            return "\n".join([*lines, "no problems found"])
        return "\n".join([*lines, f"{len(self.problems)} problem(s):", *(f"  {p}" for p in self.problems)])


def _aligned(table: list[tuple[str, ...]], text_columns: int) -> list[str]:
    """Rows of cells in columns: the first `text_columns` left-aligned, the numbers after them right-aligned."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(w) if i < text_columns else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in table
    ]


def _decoding_problems(sample: Sample) -> Problems:
    """What building the image cache would stop at: an unreadable image or mask, a mask of another size."""
    problems: Problems = []
    if reported(lambda: read_rgb(sample.path, PROBE_SIZE), problems) is not None and sample.mask_path is not None:
        reported(lambda: read_mask(sample.mask_path, PROBE_SIZE, image_path=sample.path), problems)
    return problems


def check_data(specs: list[DataSpec], categories: list[str] | None = None, workers: int = 2) -> DataReport:
    """Scan every dataset and decode every file, collecting all problems instead of stopping at the first."""
    scan = scan_sources(specs, categories)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found = progress(pool.map(_decoding_problems, scan.samples), total=len(scan.samples), desc="reading images",
                     unit="img", leave=False)
        decoding = [problem for problems in found for problem in problems]
    return DataReport(scan.samples, scan.problems + decoding)
