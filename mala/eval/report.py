"""The test report: metrics as JSON, CSV and Markdown, ROC curves, example anomaly maps (paper Figures 4-6) and an
index.html that shows them all with relative links only."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mala.data.dataset import ImageCache
from mala.deploy.render import overlay  # absolute map values, so normal images stay blue
from mala.eval.evaluate import MEAN_ROW, Predictions, add_categories, pixels_at_model_size, with_known_pixels
from mala.eval.metrics import MetricsTable, roc_curve

Curve = tuple[np.ndarray, np.ndarray, float]

MISSING = "n/a"
TABLE1_METRICS = ("image_auroc", "pixel_auroc")  # the paper's Table 1 columns
METRIC_WORDS = {"auroc": "AUROC", "ap": "AP", "f1_max": "F1-max", "aupro": "AUPRO"}
IMAGE_ROC_FILE = "roc_image.png"
PIXEL_ROC_FILE = "roc_pixel.png"
MAX_CURVE_POINTS = 2000  # a pixel ROC has up to millions of corners; this many are indistinguishable when drawn


class ReportCollector:
    """The report's per-category parts as each category is added (its thinned ROC curves, its example figure, drawn
    while its images are at hand), written out with the metrics at the end (`write`)."""

    def __init__(self, out: Path, figures_per_category: int = 4):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.figures_per_category = figures_per_category
        self.image_curves: dict[str, Curve | None] = {}
        self.pixel_curves: dict[str, Curve | None] = {}
        self.example_files: list[str] = []
        self.map_shape = (0, 0)

    def add(self, category: str, cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> None:
        self.image_curves[category] = image_roc(cache, predictions, indices)
        self.pixel_curves[category] = pixel_roc(cache, predictions, indices)
        self.map_shape = predictions.maps.shape[1:3]
        if self.figures_per_category > 0:
            self.example_files.append(draw_examples(self.out, cache, predictions, category, indices,
                                                    self.figures_per_category))

    def write(self, results: MetricsTable, trained_on: Sequence[str] = ()) -> Path:
        """Metrics files, ROC figures and index.html; returns the index.html path."""
        out = self.out
        write_metrics_json(out / "metrics.json", results, trained_on)
        write_metrics_csv(out / "metrics.csv", results)
        (out / "table.md").write_text(markdown_report(results), encoding="utf-8")
        height, width = self.map_shape
        draw_rocs(out / IMAGE_ROC_FILE, self.image_curves, "Image-level ROC (exact, all test images)")
        draw_rocs(out / PIXEL_ROC_FILE, self.pixel_curves,
                  f"Pixel-level ROC (exact, every pixel of known label at the model's {height} x {width})")
        index = out / "index.html"
        index.write_text(index_html(results, trained_on, self.example_files), encoding="utf-8")
        return index


def write_report(out: Path, cache: ImageCache, predictions: Predictions, results: MetricsTable,
                 figures_per_category: int = 4, trained_on: Sequence[str] = ()) -> Path:
    """Write metrics files, ROC curves, example figures and index.html into `out`; returns the index.html path."""
    report = ReportCollector(out, figures_per_category)
    add_categories(cache, predictions, report)
    return report.write(results, trained_on)


# ----- metrics as files ------------------------------------------------------------------------------------------


def metric_columns(results: MetricsTable) -> list[str]:
    return list(next(iter(results.values())))


def metric_label(key: str) -> str:
    """`pixel_f1_max` -> `Pixel F1-max`."""
    level, _, name = key.partition("_")
    return f"{level.capitalize()} {METRIC_WORDS.get(name, name)}"


def percent(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def write_metrics_json(path: Path, results: MetricsTable, trained_on: Sequence[str]) -> None:
    path.write_text(json.dumps({"trained_on": list(trained_on), "metrics": results}, indent=2), encoding="utf-8")


def write_metrics_csv(path: Path, results: MetricsTable) -> None:
    """Category rows x metric columns, full precision (repr round-trips every float), n/a where undefined."""
    columns = metric_columns(results)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", *columns])
        for category, row in results.items():
            writer.writerow([category, *(MISSING if row[c] is None else repr(row[c]) for c in columns)])


def table_cells(results: MetricsTable, columns: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table in percent with one decimal, as the paper prints them."""
    header = ["Category", *(f"{metric_label(c)} (%)" for c in columns)]
    return header, [[category, *(percent(row[c]) for c in columns)] for category, row in results.items()]


def split_tables(results: MetricsTable) -> list[tuple[str, list[str]]]:
    """(title, columns) of the paper's Table 1 layout and of a second table with the other metrics."""
    others = [c for c in metric_columns(results) if c not in TABLE1_METRICS]
    return [("Image and pixel AUROC (paper Table 1 layout)", list(TABLE1_METRICS)), ("Other metrics", others)]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_report(results: MetricsTable) -> str:
    sections = [f"## {title}\n\n{markdown_table(*table_cells(results, columns))}\n"
                for title, columns in split_tables(results)]
    return "\n".join(sections)


# ----- ROC curves --------------------------------------------------------------------------------------------------


def image_roc(cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> Curve | None:
    """The thinned ROC curve of the images' scores (`thin`), with the exact area."""
    labels = np.array([cache.samples[i].label for i in indices])
    return thinned(roc_curve(labels, predictions.scores[indices]))


def pixel_roc(cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> Curve | None:
    """The thinned ROC curve over the pixels of the images whose pixels are known, as the pixel metrics."""
    known = with_known_pixels(cache, indices)
    return thinned(roc_curve(*pixels_at_model_size(cache, predictions.maps, known))) if len(known) else None


def thinned(curve: Curve | None) -> Curve | None:
    """The curve with at most MAX_CURVE_POINTS corners (`thin`) and its exact area: a pixel curve's millions of
    corners are not kept while the other categories are tested."""
    return None if curve is None else (*thin(*curve[:2]), curve[2])


def thin(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_CURVE_POINTS corners, evenly spread along the curve, ends kept."""
    keep = np.unique(np.linspace(0, len(fpr) - 1, MAX_CURVE_POINTS).round().astype(int))
    return fpr[keep], tpr[keep]


def draw_rocs(path: Path, curves: dict[str, Curve | None], title: str) -> None:
    """One curve per category (AUROC of the drawn curve in the legend); n/a for a category with one class."""
    figure = Figure(figsize=(6, 6))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for category, curve in curves.items():
        if curve is None:
            axes.plot([], [], " ", label=f"{category} ({MISSING})")
            continue
        fpr, tpr, area = curve  # thinned already (`thinned`)
        axes.plot(fpr, tpr, label=f"{category} ({percent(area)})")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower right", fontsize=8, title="AUROC %", title_fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# ----- example anomaly maps (paper Figures 4-6) --------------------------------------------------------------------


def choose_examples(labels: np.ndarray, scores: np.ndarray, count: int) -> list[tuple[int, str]]:
    """Positions to show and why: the anomalous images with the highest and lowest score, the normal image with the
    highest score (worst false alarm), then others spread evenly over the score ranking."""
    anomalous = np.flatnonzero(labels == 1)
    normal = np.flatnonzero(labels == 0)
    anomalous = anomalous[np.argsort(-scores[anomalous], kind="stable")]
    normal = normal[np.argsort(-scores[normal], kind="stable")]
    picks: list[tuple[int, str]] = []
    if anomalous.size:
        picks.append((int(anomalous[0]), "anomalous, highest score"))
    if anomalous.size > 1:
        picks.append((int(anomalous[-1]), "anomalous, lowest score"))
    if normal.size:
        picks.append((int(normal[0]), "normal, highest score"))
    chosen = {position for position, _ in picks}
    rest = [int(p) for p in np.concatenate([anomalous, normal]) if p not in chosen]
    spread = np.unique(np.linspace(0, len(rest) - 1, max(0, min(count - len(picks), len(rest)))).round().astype(int))
    picks += [(rest[i], "anomalous" if labels[rest[i]] == 1 else "normal") for i in spread]
    return picks[:count]


def examples_file(category: str) -> str:
    """A file name for any category name: percent-encoded, so `DATASET/CATEGORY` stays one file, and no two clash."""
    return f"examples_{quote(category, safe='')}.png"


def draw_examples(out: Path, cache: ImageCache, predictions: Predictions, category: str, indices: np.ndarray,
                  count: int) -> str:
    """Rows image / ground truth / overlay for the chosen images of one category; returns the file name."""
    labels = np.array([cache.samples[i].label for i in indices])
    picks = choose_examples(labels, predictions.scores[indices], count)
    figure = Figure(figsize=(2.4 * len(picks), 7.6))
    FigureCanvasAgg(figure)
    grid = figure.subplots(3, len(picks), squeeze=False)
    for column, (position, role) in enumerate(picks):
        index = int(indices[position])
        sample = cache.samples[index]
        grid[0, column].imshow(cache.images[index])
        grid[1, column].imshow(cache.mask(index), cmap="gray", vmin=0, vmax=1)
        grid[1, column].set_xlabel("" if sample.has_mask else "mask unknown", fontsize=8)
        grid[2, column].imshow(overlay(cache.images[index], predictions.maps[index]))
        grid[0, column].set_title(f"{role}\n{sample.defect}, score {predictions.scores[index]:.3f}", fontsize=8)
    for row, name in enumerate(("image", "ground truth", "anomaly map")):
        grid[row, 0].set_ylabel(name)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(category)
    figure.tight_layout()
    name = examples_file(category)
    figure.savefig(out / name, dpi=100)
    return name


# ----- index.html --------------------------------------------------------------------------------------------------


def html_row(cells: list[str], tag: str = "td") -> str:
    css = ' class="mean"' if cells[0].split("/")[-1] == MEAN_ROW else ""  # also the `DATASET/mean` rows
    return f"<tr{css}>" + "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in cells) + "</tr>"


def html_table(header: list[str], rows: list[list[str]]) -> str:
    return "<table>" + html_row(header, "th") + "".join(html_row(row) for row in rows) + "</table>"


def image_tag(name: str, alt: str) -> str:
    return f'<p><img src="{quote(name)}" alt="{html.escape(alt)}"></p>'


def index_html(results: MetricsTable, trained_on: Sequence[str], example_files: list[str]) -> str:
    tables = "".join(f"<h2>{html.escape(title)}</h2>{html_table(*table_cells(results, columns))}"
                     for title, columns in split_tables(results))
    files = " ".join(f'<a href="{name}">{name}</a>' for name in ("metrics.json", "metrics.csv", "table.md"))
    examples = "".join(image_tag(name, name) for name in example_files)
    if examples:
        examples = f"<h2>Examples: image, ground truth, anomaly map</h2>\n{examples}"
    trained = html.escape(", ".join(trained_on)) or "unknown"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>MALA test report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.mean {{ font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head>
<body>
<h1>MALA test report</h1>
<p>Model trained on: {trained}. Files: {files}</p>
{tables}
<h2>ROC curves</h2>
{image_tag(IMAGE_ROC_FILE, "image-level ROC")}{image_tag(PIXEL_ROC_FILE, "pixel-level ROC")}
{examples}
</body></html>
"""
