"""Inference and training images per second of each preset, each against the floor set by FLOPs and this CPU's
matrix-multiply rate measured in the same run.

    python bench/throughput.py --presets tiny,base,paper --sizes 224,256 --batches 1,16

Inference: `mala.eval.cost.measure_cost` (FLOPs of one forward counted by FlopCounterMode, median of `--repeats`
timed forwards after one warm-up) for each preset, size and batch. Training: bench/train_throughput.py's
`stage_steps` / `measure` (one optimizer-free forward + backward per stage, random images) at `--train-size`
with `--train-batch` images per step for each preset (`tiny` at its preset batch sizes unless given; a `paper`
step of 128 images would take many minutes on a CPU, and on a CPU the rate per image hardly depends on the
batch). "floor" = the images/s a forward (or step) would reach if all its FLOPs ran at the GEMM rate
(1024^3 fp32 product) measured just before it; "ratio" = measured / floor.

A case whose estimated time (FLOPs / GEMM rate x runs) is over `--max-seconds` is not run and is listed as
skipped with its estimate, so a table never has a silent gap. `paper` (ViT-L) is run with `--paper-repeats`
(default 1). Output: a Markdown table on stdout and, with --out, in a file.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.train_throughput import gemm_flops_per_second, measure, stage_steps  # noqa: E402
from mala.eval.cost import config_at_size, images_per_second, inference_flops  # noqa: E402
from mala.model import MALA  # noqa: E402


def median_seconds(timed) -> float:
    """bench/train_throughput.py's `measure` returns a list of step times (older versions: the median)."""
    return statistics.median(timed) if isinstance(timed, (list, tuple)) else float(timed)


def inference_rows(presets: list[str], sizes: list[int], batches: list[int], repeats: int, paper_repeats: int,
                   max_seconds: float) -> list[str]:
    rows = []
    for preset in presets:
        for size in sizes:
            cfg = config_at_size(preset, size)
            model = MALA(cfg.model).eval()
            flops = inference_flops(model)  # one image
            for batch in batches:
                gemm = gemm_flops_per_second()
                floor = gemm / flops
                runs = 1 + (paper_repeats if preset == "paper" else repeats)
                estimate = flops * batch * runs / gemm
                if estimate > max_seconds:
                    rows.append(f"| {preset} | {size} | {batch} | {flops / 1e9:.2f} | skipped (estimated "
                                f"{estimate:.0f} s > --max-seconds {max_seconds:.0f}) | {gemm / 1e9:.0f} | "
                                f"{floor:.2f} | - |")
                    continue
                rate = images_per_second(model, batch, runs - 1)
                rows.append(f"| {preset} | {size} | {batch} | {flops / 1e9:.2f} | {rate:.2f} | {gemm / 1e9:.0f} | "
                            f"{floor:.2f} | {rate / floor:.2f} |")
                print(rows[-1], flush=True)
            del model
    return rows


def training_rows(presets: list[str], size: int, batch: dict[str, int | None], steps: int, paper_steps: int,
                  max_seconds: float) -> list[str]:
    rows = []
    for preset in presets:
        for name, (step, images) in stage_steps(preset, size, batch.get(preset)).items():
            gemm = gemm_flops_per_second()
            n = paper_steps if preset == "paper" else steps
            started = time.perf_counter()
            flops, timed = measure(step, n)
            seconds = median_seconds(timed)
            rate, floor = images / seconds, gemm / (flops / images)
            rows.append(f"| {preset} | {name} | {size} | {images} | {flops / images / 1e9:.2f} | {rate:.2f} | "
                        f"{gemm / 1e9:.0f} | {floor:.2f} | {rate / floor:.2f} |")
            print(rows[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
            if time.perf_counter() - started > max_seconds:
                print(f"note: {preset} {name} took longer than --max-seconds", flush=True)
    return rows


def header() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    return (f"{datetime.date.today()}, commit {commit} (plus uncommitted work), {platform.processor() or 'cpu'}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--presets", default="tiny,base,paper")
    parser.add_argument("--sizes", default="224,256", help="inference image sizes")
    parser.add_argument("--batches", default="1,16", help="inference batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per case (tiny, base)")
    parser.add_argument("--paper-repeats", type=int, default=1, help="timed forwards per case for paper")
    parser.add_argument("--train-size", type=int, default=224)
    parser.add_argument("--train-batch", default="tiny:0,base:4,paper:2",
                        help="images per timed training step per preset; 0: the preset's own batch sizes")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per stage")
    parser.add_argument("--paper-steps", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="skip a case estimated to take longer")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    presets = [p for p in args.presets.split(",") if p]
    train_batch = {k: (int(v) or None) for k, v in (item.split(":") for item in args.train_batch.split(","))}

    text = [f"Throughput by preset: {header()}", "", "Inference (image to anomaly map, torch.no_grad):", "",
            "| preset | px | batch | GFLOP per image | images/s | GEMM GFLOP/s | floor images/s | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    print("\n".join(text), flush=True)
    text += inference_rows(presets, [int(s) for s in args.sizes.split(",")], [int(b) for b in args.batches.split(",")],
                           args.repeats, args.paper_repeats, args.max_seconds)
    if not args.skip_training:
        part = ["", f"Training (forward + loss + backward of one step, {args.train_size} px):", "",
                "| preset | stage | px | batch | GFLOP per image | images/s | GEMM GFLOP/s | floor images/s | ratio |",
                "|---|---|---|---|---|---|---|---|---|"]
        print("\n".join(part), flush=True)
        text += part + training_rows(presets, args.train_size, train_batch, args.steps, args.paper_steps,
                                     args.max_seconds)
    output = "\n".join(text)
    print("\n" + output)
    if args.out:
        args.out.write_text(output + "\n")


if __name__ == "__main__":
    main()
