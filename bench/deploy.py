"""Deployment benchmarks: inference images/s with torch and with onnxruntime, and `mala serve` latency under load.

    python bench/deploy.py --preset tiny --size 224 --runs 5 --seconds 3 --clients 8 --requests 200

The model has the preset's architecture with random weights (speed does not depend on them, but a built model's
normal-feature memory is empty); `--checkpoint RUN/model.safetensors` takes a trained model instead, its memory
included, and exports it to ONNX first (`--category C`: a graph of that category's section, else routed), both
with the model's own memory search and with the exact one (`--memory-search`). Throughput: the whole
inference graph (uint8 images in, scores and maps out), torch and onnxruntime measured in turns, `--runs` times
each, medians and their ratios to torch's printed.

    python bench/deploy.py --checkpoint runs/s18_b18_seed0 --category magnetic_tile --batches 1 --runs 5 --requests 0 Load: `--clients` concurrent HTTP clients send `--requests` requests in all
(a real metal_plate test image, 512 x 512 PNG, answered with map and overlay as base64 PNG, as the web page asks)
to a `mala serve` child process on 127.0.0.1, once with the checkpoint (torch) and once with the ONNX file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mala.checkpoint import save_checkpoint  # noqa: E402
from mala.config import apply_overrides, load_config  # noqa: E402
from mala.deploy.backends import Backend, OnnxBackend, TorchBackend  # noqa: E402
from mala.deploy.graph import export_onnx  # noqa: E402
from mala.deploy.serve import running_server  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.sizes import describe_shape  # noqa: E402

IMAGE = ROOT.parent / "shared" / "data" / "metal_plate" / "test" / "defect" / "test_test_00026.png"


def build_model(preset: str, size: int, folder: Path) -> tuple[Path, Path]:
    cfg = apply_overrides(load_config(preset), [f"model.image_size={size}"])
    torch.manual_seed(0)
    state = {"kind": "model", "config": cfg.to_dict(), "data": {"categories": ["bench"]},
             "model": MALA(cfg.model).state_dict()}
    checkpoint = folder / "model.safetensors"
    save_checkpoint(checkpoint, state)
    return checkpoint, export_onnx(checkpoint, folder / "model.onnx")


def images_per_second(backend: Backend, batch: int, seconds: float) -> float:
    images = np.random.default_rng(0).integers(0, 256, (batch, *backend.image_shape, 3), np.uint8)
    backend.run(images)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        backend.run(images)
        done += batch
    return done / (time.perf_counter() - started)


def throughput_rows(backends: dict[str, Backend], batches: list[int], runs: int, seconds: float) -> list[str]:
    """A header and a row per batch size: each backend's median images/s (the first's, then each other's with its
    ratio to the first's) and every run's."""
    first, *others = backends
    rows = ["| batch | " + " | ".join([f"{first} img/s", *(f"{name} img/s (ratio)" for name in others)]) + " | runs |",
            "|---|" + "---|" * len(backends) + "---|"]
    for batch in batches:
        rates: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(runs):  # in turns, so all see the same machine load
            for name, backend in backends.items():
                rates[name].append(images_per_second(backend, batch, seconds))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        runs_text = "; ".join(f"{name} " + ", ".join(f"{v:.1f}" for v in values) for name, values in rates.items())
        cells = [f"{medians[first]:.1f}", *(f"{medians[n]:.1f} ({medians[n] / medians[first]:.2f})" for n in others)]
        rows.append(f"| {batch} | " + " | ".join(cells) + f" | {runs_text} |")
    return rows


def post(url: str, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(f"{url}/predict", data=body, method="POST",
                                     headers={"Content-Type": "image/png"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return status, time.perf_counter() - started


def load_row(name: str, model: Path, clients: int, requests: int) -> str:
    body = IMAGE.read_bytes()
    with running_server(model) as url:
        post(url, body)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(lambda _: post(url, body), range(requests)))
        wall = time.perf_counter() - started
    latencies = sorted(seconds for _, seconds in results)
    failed = sum(status != 200 for status, _ in results)
    p99 = latencies[min(len(latencies) - 1, int(np.ceil(0.99 * len(latencies))) - 1)]
    return (f"| {name} | {requests} | {clients} | {failed} | {1000 * statistics.median(latencies):.0f} | "
            f"{1000 * p99:.0f} | {requests / wall:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--checkpoint", type=Path, help="a trained model.safetensors instead of --preset")
    parser.add_argument("--category", help="with --checkpoint: the graphs read this category's section [routed]")
    parser.add_argument("--memory-search", nargs="+", choices=["int8", "exact"], default=["int8", "exact"],
                        help="with --checkpoint: each search timed with torch and onnxruntime [int8 exact]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.checkpoint:
            checkpoint, searches = args.checkpoint, args.memory_search
            onnx = {s: export_onnx(checkpoint, Path(folder) / f"{s}.onnx", args.category, memory_search=s)
                    for s in searches}
            backends = {f"{kind}, {s} search": TorchBackend(checkpoint, category=args.category, memory_search=s)
                        if kind == "torch" else OnnxBackend(onnx[s], category=args.category)
                        for s in searches for kind in ("torch", "onnxruntime")}
        else:
            checkpoint, model_onnx = build_model(args.preset, args.size, Path(folder))
            onnx = {"": model_onnx}
            backends = {"torch": TorchBackend(checkpoint), "onnxruntime": OnnxBackend(model_onnx)}
        shape = describe_shape(next(iter(backends.values())).image_shape)
        print(f"{args.checkpoint or args.preset} at {shape}, torch {torch.__version__} ({torch.get_num_threads()} "
              f"threads)\n")
        print("\n".join(throughput_rows(backends, [int(b) for b in args.batches.split(",")], args.runs,
                                        args.seconds)))
        if args.requests:
            print("\n| server model | requests | clients | failed | p50 ms | p99 ms | requests/s |\n"
                  "|---|---|---|---|---|---|---|")
            for name, model in (("checkpoint (torch)", checkpoint), ("ONNX (onnxruntime)", next(iter(onnx.values())))):
                print(load_row(name, model, args.clients, args.requests), flush=True)


if __name__ == "__main__":
    main()
