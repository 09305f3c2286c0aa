"""MALA against anomalib 2.x peers on MVTec-layout roots, with the same wall-clock training budget per method.

    python bench/peers.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        --textures ../shared/data/dtd/images --budget-minutes 8 --image-size 128 --out ../bench-runs/peers

anomalib needs torchvision, which this project does not, so the peers run in a separate environment that this
script calls with `--anomalib-python` (default /work/anomalib-env/bin/python). Set it up once, outside the repo:

    python -m venv /work/anomalib-env
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /work/anomalib-constraints.txt
    /work/anomalib-env/bin/pip install -c /work/anomalib-constraints.txt anomalib==2.7.0 torch==2.14.1 \\
        torchvision==0.29.1

(the constraints file keeps pip from swapping torch; on the development machine both wheels come from its local
package mirror). The peers run with HF_HUB_OFFLINE=1: no ImageNet weights can be fetched here, so every
backbone-based peer (PaDiM, PatchCore, FastFlow, Reverse Distillation) uses `pre_trained=False`, a RANDOM
resnet18; their published numbers assume ImageNet features and are far above what they reach here.
DRAEM takes its anomaly textures from the same DTD folder as `mala` (`dtd_dir`). GANomaly gives image
scores only. PatchCore and Reverse Distillation use resnet18 instead of their wide_resnet50_2 default (random
weights either way; the small one fits the CPU budget), PatchCore a 1 % coreset.

Budget: `--budget-minutes` is split evenly over the methods (`--methods`, `mala` and `mala_no_stage1` count as
one method each). anomalib trains one model per category, so each category gets its share of the method's
budget (Lightning's `max_time`; PaDiM and PatchCore need one epoch and stop earlier). `mala` trains ONE model
over all categories; its stage epochs are set from the training rates measured at the start of the run
(bench/train_throughput.py, on this machine under its current load) so that training fills the method's
budget; the actual seconds are reported. Test time is not part of the budget.

anomalib's MVTec reader reads only .png: every root is copied into a temporary folder with images converted
to PNG (the data itself is never modified). Results: OUT/results.json (one record per method and category,
written as each finishes; a failed run is recorded with its error) and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEERS = ["padim", "patchcore", "fastflow", "reverse_distillation", "draem", "ganomaly"]
MALA_METHODS = ["mala", "mala_no_stage1"]
TITLES = {
    "padim": "PaDiM (random resnet18)",
    "patchcore": "PatchCore (random resnet18, 1 % coreset)",
    "fastflow": "FastFlow (random resnet18)",
    "reverse_distillation": "Reverse Distillation (random resnet18)",
    "draem": "DRAEM (DTD textures)",
    "ganomaly": "GANomaly (image scores only)",
    "mala": "mala `tiny`, ONE model (stage 1 + stage 2)",
    "mala_no_stage1": "mala `tiny`, ONE model, no stage 1",
}
DEFAULT_ANOMALIB_PYTHON = "/work/anomalib-env/bin/python"


# ----- the worker: runs inside the anomalib environment ------------------------------------------------------------

def png_copy(root: Path, dest: Path) -> Path:
    """`root` (MVTec layout) copied to `dest/<category>` with every image as PNG (anomalib reads only .png)."""
    from PIL import Image

    out = dest / root.name
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}:
            continue
        target = (out / path.relative_to(root)).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":
            shutil.copyfile(path, target)  # not a link: anomalib refuses files that resolve outside its root
        else:
            Image.open(path).save(target)
    return out


def build_peer(method: str, size: int, textures: str):
    from anomalib.metrics import AUPRO, AUROC, Evaluator
    from anomalib import models

    image_metrics = [AUROC(fields=["pred_score", "gt_label"], prefix="image_")]
    pixel_metrics = [AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
                     AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False)]
    evaluator = Evaluator(test_metrics=image_metrics + ([] if method == "ganomaly" else pixel_metrics))
    kwargs = dict(evaluator=evaluator, post_processor=False, visualizer=False)
    if method == "padim":
        cls, extra = models.Padim, dict(backbone="resnet18", pre_trained=False)
    elif method == "patchcore":
        cls, extra = models.Patchcore, dict(backbone="resnet18", pre_trained=False, coreset_sampling_ratio=0.01)
    elif method == "fastflow":
        cls, extra = models.Fastflow, dict(backbone="resnet18", pre_trained=False)
    elif method == "reverse_distillation":
        cls, extra = models.ReverseDistillation, dict(backbone="resnet18", pre_trained=False)
    elif method == "draem":
        cls, extra = models.Draem, dict(dtd_dir=textures)
    elif method == "ganomaly":
        cls, extra = models.Ganomaly, dict()
    else:
        raise ValueError(f"unknown peer {method!r}; known: {', '.join(PEERS)}")
    pre = cls.configure_pre_processor(image_size=(size, size))
    return cls(pre_processor=pre, **kwargs, **extra)


def worker(args: argparse.Namespace) -> None:
    """One peer on one category (in the anomalib environment); prints one JSON line starting with RESULT."""
    import resource

    record = {"method": args.worker, "category": Path(args.root).name}
    try:
        import lightning
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        lightning.seed_everything(args.seed, workers=True)
        work = Path(args.tmp)
        copy = png_copy(Path(args.root), work / "data")
        datamodule = MVTecAD(root=copy.parent, category=copy.name, train_batch_size=args.batch_size,
                             eval_batch_size=args.batch_size, num_workers=1, seed=args.seed)
        model = build_peer(args.worker, args.image_size, args.textures)
        engine = Engine(default_root_dir=work / "results", logger=False, accelerator="cpu", devices=1,
                        max_epochs=10_000, max_time={"seconds": args.seconds}, enable_progress_bar=False,
                        limit_val_batches=0, num_sanity_val_steps=0)  # no validation: AUROC needs no threshold
        started = time.perf_counter()
        engine.fit(model=model, datamodule=datamodule)
        record["train_s"] = round(time.perf_counter() - started, 1)
        record["epochs"] = engine.trainer.current_epoch
        started = time.perf_counter()
        out = engine.test(model=model, datamodule=datamodule, verbose=False)
        seconds = time.perf_counter() - started
        record["test_images"] = len(datamodule.test_data)
        record["test_img_s"] = round(record["test_images"] / seconds, 2)
        metrics = out[0] if out else {}
        record["metrics"] = {
            "image_auroc": metrics.get("image_AUROC"),
            "pixel_auroc": metrics.get("pixel_AUROC"),
            "pixel_aupro": metrics.get("pixel_AUPRO"),
        }
    except Exception as error:  # the table reports the failure, not a silent gap
        record["error"] = f"{type(error).__name__}: {error}"[:400]
        traceback.print_exc()
    record["peak_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(record), flush=True)


# ----- the driver: runs in the project's environment ---------------------------------------------------------------

def run_peer(method: str, root: str, seconds: float, args: argparse.Namespace) -> dict:
    from bench.ablation import run_timed

    tmp = Path(tempfile.mkdtemp(prefix=f"peer-{method}-"))
    log = args.out / f"{method}_{Path(root).name}.log"
    cmd = ["nice", "-n", str(args.nice), args.anomalib_python, str(Path(__file__).resolve()), "--worker", method,
           "--root", str(Path(root).resolve()), "--textures", str(Path(args.textures).resolve()),
           "--seconds", str(int(seconds)), "--image-size", str(args.image_size), "--tmp", str(tmp),
           "--seed", str(args.seed), "--batch-size", str(args.batch_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    timed = run_timed(cmd, log, env=env)
    shutil.rmtree(tmp, ignore_errors=True)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    if lines:
        record = json.loads(lines[-1][len("RESULT "):])
    else:
        record = {"method": method, "category": Path(root).name,
                  "error": f"worker exited {timed['rc']} without a result: {timed.get('error', '')}"[:400]}
    record["peak_mib"] = timed["peak_mib"]
    return record


def run_mala(method: str, seconds: float, args: argparse.Namespace) -> list[dict]:
    from bench.ablation import calibrate, epochs_for, mala_train_test
    from mala.config import load_config

    cfg = load_config("tiny")
    n = len(args.data)
    if args.rates:
        rates = {1: args.rates[0], 2: args.rates[1]}
    else:
        rates = calibrate("tiny", args.image_size)
    if method == "mala":
        e1 = epochs_for(seconds * 0.5, rates[1], n * cfg.stage1.images_per_category)
        e2 = epochs_for(seconds * 0.5, rates[2], n * cfg.stage2.images_per_category)
        sets = [f"stage1.epochs={e1}", f"stage2.epochs={e2}", f"stage1.warmup_epochs={max(1, e1 // 10)}"]
    else:
        e2 = epochs_for(seconds, rates[2], n * cfg.stage2.images_per_category)
        sets = ["stage1.enabled=false", f"stage2.epochs={e2}"]
    res = mala_train_test(name=method, out=args.out, data=args.data, textures=args.textures, preset="tiny",
                          size=args.image_size, seed=args.seed, sets=sets, categories=None,
                          cache=args.out / "cache", niceness=args.nice)
    base = {"method": method, "train_s": res["train"]["wall_s"], "train_cpu_s": res["train"]["cpu_s"],
            "peak_mib": max(res["train"]["peak_mib"], res.get("test", {}).get("peak_mib", 0)),
            "settings": " ".join(sets), "rates": rates}
    if "metrics" not in res:
        stage = "test" if "test" in res else "train"
        return [{**base, "category": Path(root).name, "error": f"mala {stage}: {res[stage].get('error')}"}
                for root in args.data]
    test_images = sum(count_test_images(Path(root)) for root in args.data)
    base["test_img_s"] = round(test_images / res["test"]["wall_s"], 2)  # includes loading the model and data
    return [{**base, "category": cat, "metrics": m} for cat, m in res["metrics"].items()]


def count_test_images(root: Path) -> int:
    return sum(1 for p in (root / "test").rglob("*") if p.is_file())


def fmt(value, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def table(records: list[dict]) -> str:
    lines = ["| method | category | image AUROC | pixel AUROC | AUPRO | train s | test img/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        title = TITLES.get(r["method"], r["method"])
        if "error" in r:
            lines.append(f"| {title} | {r['category']} | FAILED: {r['error']} | | | {r.get('train_s', '-')} | - | "
                         f"{r.get('peak_mib', '-')} |")
            continue
        m = r["metrics"]
        train = f"{r['train_s']}" + (" (one model, all categories)" if r["method"] in MALA_METHODS else "")
        lines.append(f"| {title} | {r['category']} | {fmt(m.get('image_auroc'))} | {fmt(m.get('pixel_auroc'))} | "
                     f"{fmt(m.get('pixel_aupro'))} | {train} | {r.get('test_img_s', '-')} | {r['peak_mib']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", nargs="+", help="MVTec-layout category roots")
    parser.add_argument("--textures", help="DTD images folder (mala's synthesis and DRAEM's dtd_dir)")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="training wall clock for all methods")
    parser.add_argument("--methods", nargs="+", default=PEERS + MALA_METHODS, choices=PEERS + MALA_METHODS)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="anomalib train/eval batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anomalib-python", default=DEFAULT_ANOMALIB_PYTHON)
    parser.add_argument("--out", type=Path, default=Path("../bench-runs/peers"))
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--rates", type=float, nargs=2, metavar=("STAGE1", "STAGE2"),
                        help="mala training images/s per stage; default: timed at the start of the mala runs")
    # worker mode (inside the anomalib environment)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.data or not args.textures:
        parser.error("--data and --textures are required")
    for root in [*args.data, args.textures]:
        if not Path(root).is_dir():
            parser.error(f"not a folder: {root}")
    needs_anomalib = any(m in PEERS for m in args.methods)
    if needs_anomalib and not Path(args.anomalib_python).exists():
        parser.error(f"no anomalib environment at {args.anomalib_python}: set it up as this script's docstring says "
                     "(python bench/peers.py --help), or pass --anomalib-python, or run --methods mala only")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    state = json.loads(results_path.read_text()) if results_path.exists() else {"records": []}
    state.update(command=" ".join(sys.argv), budget_minutes=args.budget_minutes, image_size=args.image_size)
    per_method = args.budget_minutes * 60 / len(args.methods)
    done = {(r["method"], r["category"]) for r in state["records"] if "error" not in r}  # failures run again
    print(f"{len(args.methods)} methods, {per_method:.0f} s of training each", flush=True)
    for method in args.methods:
        if method in MALA_METHODS:
            if all((method, Path(root).name) in done for root in args.data):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {method}: one model, {per_method:.0f} s", flush=True)
            new = run_mala(method, per_method, args)
        else:
            new = []
            for root in args.data:
                if (method, Path(root).name) in done:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {method} on {Path(root).name}: "
                      f"{per_method / len(args.data):.0f} s", flush=True)
                new.append(run_peer(method, root, per_method / len(args.data), args))
                print("  -> " + json.dumps(new[-1]), flush=True)
        state["records"] = [r for r in state["records"] if (r["method"], r["category"]) not in
                            {(n["method"], n["category"]) for n in new}] + new
        results_path.write_text(json.dumps(state, indent=1))
    text = table(state["records"])
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
