"""`mala predict`: score, decision, anomaly map and overlay for each image of a file or folder (no torch needed
with an ONNX model). Unreadable images are listed with the reason and the rest still run; rows reach results.csv
as they are done, so an interrupted run keeps what it finished."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mala.data.images import open_rgb, require_image_files, resize_rgb
from mala.deploy.backends import Backend, calibration, category_name
from mala.deploy.calibration import Thresholds
from mala.deploy.render import map_image, overlay, resize_map
from mala.errors import DataError
from mala.progress import progress

NO_THRESHOLD = "no threshold"  # the decision of a model that was never tested or calibrated
UNNAMED = "unnamed"  # results.json's category count of images the model cannot name (a model of no named categories)


@dataclass
class Prediction:
    score: float  # raw image score (paper eq. 7)
    normalized_score: float  # 0.5 at the image threshold; the raw score for a model without thresholds
    decision: str  # "anomalous", "normal" or NO_THRESHOLD
    anomalous_area: float | None  # share of the model-size map at or above the pixel threshold
    anomaly_map: np.ndarray  # (H, W) at the image's own size, normalised like the score
    category: str | None = None  # the category whose memory section read the image: given, or routed to


class Predictor:
    """A backend with the thresholds of one category; without one, each image is routed and decided with the
    thresholds of the category it was routed to (those of all categories together where it has none)."""

    def __init__(self, backend: Backend, category: str | None = None):
        self.backend, self.category = backend, category
        self.calibration = calibration(backend)
        self.thresholds = self.calibration.thresholds(category) if self.calibration else None

    @property
    def calibrated(self) -> bool:
        return self.thresholds is not None

    def __call__(self, images: list[Image.Image]) -> list[Prediction]:
        """Predictions for RGB images of any sizes (one batch through the model)."""
        shape = self.backend.image_shape  # smaller images are enlarged to it, as in training
        scores, maps, places = self.backend.run(np.stack([resize_rgb(image, shape) for image in images]))
        return [self._one(image.size, float(score), anomaly_map, category_name(self.backend, int(place)))
                for image, score, anomaly_map, place in zip(images, scores, maps, places)]

    def thresholds_for(self, category: str | None) -> Thresholds | None:
        """The thresholds that decide an image of `category` (the one it was given or routed to)."""
        if self.category is None and self.calibration:
            return self.calibration.routed_thresholds(category)
        return self.thresholds

    def thresholds_by_category(self, categories: dict[str, int]) -> dict[str, dict] | None:
        """The thresholds that decided the images of each category (`categories`' names, as counted); None without
        any."""
        if not self.calibrated:
            return None
        return {name: asdict(self.thresholds_for(None if name == UNNAMED else name)) for name in categories}

    def _one(self, size: tuple[int, int], score: float, anomaly_map: np.ndarray, category: str | None) -> Prediction:
        chosen = self.thresholds_for(category)
        if chosen is None:
            return Prediction(score, score, NO_THRESHOLD, None, resize_map(anomaly_map, size), category)
        normalized = float(chosen.normalized_score(np.float32(score)))
        normalized_map = chosen.normalized_map(anomaly_map)
        decision = "anomalous" if normalized >= 0.5 else "normal"
        # the area is read at the model's size, where the pixel threshold was chosen (upsampling smooths peaks)
        area = float(np.mean(normalized_map >= 0.5))
        return Prediction(score, normalized, decision, area, resize_map(normalized_map, size), category)


@dataclass
class ResultRow:
    image: str
    status: str  # "ok" or "error"
    category: str | None = None  # given, or the one the image was routed to
    score: float | None = None
    normalized_score: float | None = None
    decision: str | None = None
    anomalous_area: float | None = None
    map_file: str | None = None
    overlay_file: str | None = None
    error: str | None = None


def list_images(source: Path) -> tuple[list[Path], Path]:
    """The image files to predict (a file, or a folder searched recursively) and the folder their names are
    relative to."""
    source = Path(source)
    if source.is_file():
        return [source], source.parent
    if not source.is_dir():
        raise DataError(f"{source}: no such file or folder")
    return require_image_files(source), source


def output_name(relative: Path, taken: set[Path]) -> Path:
    """`a/b.jpg` becomes `a/b.png`; `a/b.jpg.png` when another input already took that name (b.png and b.jpg)."""
    name = relative.with_suffix(".png")
    if name in taken:
        name = relative.with_name(relative.name + ".png")
    taken.add(name)
    return name


def _read(files: list[Path]) -> tuple[list[tuple[Path, Image.Image]], list[tuple[Path, str]]]:
    readable, failed = [], []
    for path in files:
        try:
            readable.append((path, open_rgb(path)))
        except DataError as exc:
            failed.append((path, str(exc)))
    return readable, failed


class ResultWriter:
    """results.csv row by row (flushed), maps/ and overlays/ as PNG, results.json at the end."""

    def __init__(self, out: Path, root: Path, write_pictures: bool = True):
        self.out, self.root, self.write_pictures = Path(out), root, write_pictures
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[ResultRow] = []
        self.taken: set[Path] = set()
        self._handle = (self.out / "results.csv").open("w", newline="")
        self._csv = csv.DictWriter(self._handle, fieldnames=list(ResultRow.__dataclass_fields__))
        self._csv.writeheader()

    def add(self, row: ResultRow) -> None:
        self.rows.append(row)
        self._csv.writerow(asdict(row))
        self._handle.flush()

    def add_prediction(self, path: Path, image: Image.Image, prediction: Prediction) -> None:
        relative = path.relative_to(self.root)
        row = ResultRow(str(relative), "ok", prediction.category, prediction.score, prediction.normalized_score,
                        prediction.decision, prediction.anomalous_area)
        if self.write_pictures:
            name = output_name(relative, self.taken)
            row.map_file, row.overlay_file = str(Path("maps") / name), str(Path("overlays") / name)
            self._save(row.map_file, map_image(prediction.anomaly_map))
            self._save(row.overlay_file, Image.fromarray(overlay(np.asarray(image), prediction.anomaly_map)))
        self.add(row)

    def add_failure(self, path: Path, reason: str) -> None:
        self.add(ResultRow(str(path.relative_to(self.root)), "error", error=reason))

    def _save(self, name: str, picture: Image.Image) -> None:
        target = self.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        picture.save(target)

    def close(self, summary: dict) -> None:
        self._handle.close()
        payload = {"summary": summary, "images": [asdict(row) for row in self.rows]}
        (self.out / "results.json").write_text(json.dumps(payload, indent=1))


def predict_folder(predictor: Predictor, source: Path, out: Path, batch_size: int = 8,
                   write_pictures: bool = True) -> dict:
    """Predict every image under `source` into `out`; returns the summary that results.json also holds."""
    files, root = list_images(source)
    writer = ResultWriter(out, root, write_pictures)
    counts = {"anomalous": 0, "normal": 0, NO_THRESHOLD: 0}
    categories: dict[str, int] = {}  # images per category, as given or routed
    failures = 0
    try:
        with progress(total=len(files), desc="predicting", unit="img") as bar:
            for start in range(0, len(files), batch_size):
                readable, failed = _read(files[start:start + batch_size])
                for path, reason in failed:
                    writer.add_failure(path, reason)
                predictions = predictor([image for _, image in readable]) if readable else []
                for (path, image), prediction in zip(readable, predictions):
                    writer.add_prediction(path, image, prediction)
                    counts[prediction.decision] += 1
                    name = prediction.category or UNNAMED
                    categories[name] = categories.get(name, 0) + 1
                failures += len(failed)
                bar.update(len(readable) + len(failed))
    finally:
        summary = {"images": len(files), "failed": failures, **counts, "categories": categories,
                   "backend": predictor.backend.kind,
                   "thresholds": predictor.thresholds_by_category(categories)}
        writer.close(summary)
    return summary
