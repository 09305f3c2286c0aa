"""A per-category ONNX export of a category whose fusion gives the global map no share: onnxruntime images/s with the
global map left out (`mala.deploy.graph.drop_unread_global_map`, as `mala export --category` writes it) and kept (the
export before that change), batch 1, measured in turns; the maps must agree.

    python bench/category_export.py runs/global_seed0 --category el_mono --out runs/category_export
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

import mala.deploy.graph as graph  # noqa: E402


def export_both(run: Path, category: str, out: Path) -> dict[str, Path]:
    """The category's export as shipped ("lean") and with the unread global map kept ("full")."""
    out.mkdir(parents=True, exist_ok=True)
    lean = graph.export_onnx(run, out / "lean.onnx", category=category)
    shipped, graph.drop_unread_global_map = graph.drop_unread_global_map, lambda model, section: None
    try:
        full = graph.export_onnx(run, out / "full.onnx", category=category)
    finally:
        graph.drop_unread_global_map = shipped
    return {"lean": lean, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--category", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in export_both(args.run, args.category, args.out).items()}
    size = sessions["lean"].get_inputs()[0].shape[1:3]
    image = np.random.default_rng(0).integers(0, 255, (1, *size, 3), dtype=np.uint8)
    maps = {name: session.run(None, {"images": image})[1] for name, session in sessions.items()}
    print(f"largest map difference: {float(np.abs(maps['lean'] - maps['full']).max()):.2e}")
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < args.seconds:
                session.run(None, {"images": image})
                count += 1
            rates[name].append(count / (time.perf_counter() - start))
    for name, values in rates.items():
        megabytes = (args.out / f"{name}.onnx").stat().st_size / 1e6
        print(f"{name}: {megabytes:.0f} MB, " + " / ".join(f"{v:.1f}" for v in values)
              + f" img/s, median {statistics.median(values):.1f}")
    print(f"median ratio lean / full: {statistics.median(rates['lean']) / statistics.median(rates['full']):.2f}")


if __name__ == "__main__":
    main()
