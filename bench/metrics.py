"""Time mala.eval.metrics.compute_metrics on MVTec-AD-sized random maps, against scikit-learn (and anomalib if present).

    python bench/metrics.py [--images 1725] [--size 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from mala.eval.metrics import compute_metrics

BLOB_SCALE = 8  # masks are drawn at 1/8 resolution and upsampled, which makes smooth blobs cheaply
ANOMALOUS_AREA = 0.03  # fraction of an anomalous image covered by blobs
SIGNAL = 1.0  # added to the unit-variance noise inside the blobs


def blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A few smooth blobs covering ANOMALOUS_AREA of a size x size image."""
    coarse = ndimage.gaussian_filter(rng.standard_normal((size // BLOB_SCALE,) * 2), sigma=1.5)
    field = ndimage.zoom(coarse, BLOB_SCALE, order=1)
    return field > np.quantile(field, 1 - ANOMALOUS_AREA)


def make_data(n_images: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image labels and scores, masks (N, H, W) bool and maps (N, H, W) float32; about half the images anomalous."""
    rng = np.random.default_rng(seed)
    maps = rng.standard_normal((n_images, size, size), dtype=np.float32)
    masks = np.zeros(maps.shape, dtype=bool)
    image_labels = rng.random(n_images) < 0.5
    for index in np.flatnonzero(image_labels):
        masks[index] = blob_mask(rng, size)
    maps[masks] += SIGNAL
    return image_labels, maps.max(axis=(1, 2)), masks, maps


def measure(run: Callable[[], object], repeats: int) -> tuple[float, int, object]:
    """Median seconds over repeats, peak memory allocated by the first run (numpy reports its buffers to
    tracemalloc), and the result."""
    tracemalloc.start()
    seconds, result = timed(run)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    times = [seconds] + [timed(run)[0] for _ in range(repeats - 1)]
    return statistics.median(times), peak, result


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def anomalib_aupro(masks: np.ndarray, maps: np.ndarray) -> Callable[[], float] | None:
    """anomalib's AUPRO as a callable, or None when anomalib is not installed."""
    try:
        import torch
        from anomalib.metrics import aupro as anomalib_module
    except ImportError:
        return None
    # anomalib 2.x wraps AUPRO for its batches and keeps the plain torchmetrics class as _AUPRO.
    metric_class = getattr(anomalib_module, "_AUPRO", anomalib_module.AUPRO)

    def run() -> float:
        metric = metric_class(fpr_limit=0.3)
        metric.update(torch.from_numpy(maps), torch.from_numpy(masks))
        return float(metric.compute())

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1725)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    image_labels, image_scores, masks, maps = make_data(args.images, args.size)
    print(f"{args.images} maps of {args.size}x{args.size} = {maps.size / 1e6:.1f} M pixels, "
          f"{masks.mean():.2%} anomalous; inputs take {(maps.nbytes + masks.nbytes) / 2**30:.2f} GiB\n")

    def ours() -> dict[str, float | None]:
        return compute_metrics(image_labels, image_scores, masks, maps)

    seconds, peak, metrics = measure(ours, args.repeats)
    print("mala:", ", ".join(f"{name} {value:.6f}" for name, value in metrics.items()))
    print(f"process max RSS after mala: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    rows = [("mala compute_metrics (all 7 metrics)", seconds, peak,
             f"pixel AUROC {metrics['pixel_auroc']:.6f}, AUPRO {metrics['pixel_aupro']:.6f}")]
    seconds, peak, value = measure(lambda: roc_auc_score(masks.ravel(), maps.ravel()), 1)
    rows.append(("sklearn roc_auc_score (pixel AUROC only, 1 run)", seconds, peak, f"pixel AUROC {value:.6f}"))
    anomalib_run = anomalib_aupro(masks, maps)
    if anomalib_run is None:
        print("anomalib is not installed: its AUPRO was skipped")
    else:
        seconds, peak, value = measure(anomalib_run, 1)
        rows.append(("anomalib AUPRO (1 run)", seconds, peak, f"AUPRO {value:.6f}"))

    print("\n| what | seconds (median) | peak extra memory (GiB) | result |\n|---|---:|---:|---|")
    for name, seconds, peak, result in rows:
        print(f"| {name} | {seconds:.2f} | {peak / 2**30:.2f} | {result} |")


if __name__ == "__main__":
    main()
