"""The paper's Table 4 (ablations) for the `tiny` preset at a fixed budget per row, plus pretraining vs scratch.

    python bench/ablation.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        --textures ../shared/data/dtd/images --image-size 128 --minutes-per-row 0.5 --seeds 0 1 --rates 42 53 \
        --out ../bench-runs/ablation

Rows (ONE model over all categories unless said otherwise, same seeds, same budget per row):

    reconstruction   stage 1 only; the map is the reconstruction error (run.pipeline=reconstruction)
    no_stage1        stage 2 on the random frozen encoder (stage1.enabled=false)
    no_plpm          full schedule without the adversarial term (stage1.use_plpm=false)
    no_tbm           full schedule, map from the decoder tokens alone (model.use_tbm=false)
    full             full MALA (end to end, stage 1 + PLPM + TBM)
    single_class     full MALA, one model per category (each model the same epochs, so the same total budget)
    pretrained       `mala pretrain` on DTD + the normal training images, then `mala train --init` (issue 6);
                     pretraining counted inside the same budget. Its "scratch" arm is the `full` row.

The budget: `--minutes-per-row` of training compute. At the start the script times one training step of each
stage at `--image-size` (bench/train_throughput.py's `stage_steps`/`measure`, random images) and turns minutes
into epochs; a row with both stages gives stage 1 `--stage1-share` of the budget. Every row's actual wall and
CPU seconds (children's user + system time) are reported beside its metrics, so the budget can be checked.
Results: OUT/results.json (appended run by run, so a stopped run keeps what finished) and a Markdown table on
stdout and in OUT/table.md. Runs already in results.json are skipped on a rerun with the same OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS = ["reconstruction", "no_stage1", "no_plpm", "no_tbm", "full", "single_class", "pretrained"]
ROW_TITLES = {
    "reconstruction": "reconstruction-based pipeline (stage 1 only, map = reconstruction error)",
    "no_stage1": "end to end without stage 1 (random frozen encoder)",
    "no_plpm": "end to end without PLPM",
    "no_tbm": "end to end without TBM",
    "full": "full MALA (end to end), unified multi-class",
    "single_class": "full MALA, single-class (one model per category)",
    "pretrained": "pretrain on DTD + normals, then full MALA (same total budget)",
}


def run_timed(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `cmd` with output to `log`; wall seconds, CPU seconds (user + sys) and peak RSS (MiB) of the child."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    result = {"rc": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "peak_mib": round(usage.ru_maxrss / 1024, 1)}
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        result["error"] = " | ".join(line.strip()[-300:] for line in tail)
    return result


def nice_prefix(niceness: int) -> list[str]:
    return ["nice", "-n", str(niceness)] if niceness else []


def calibrate(preset: str, size: int, steps: int = 2) -> dict[int, float]:
    """Training images/s of each stage at `size` on this machine, from bench/train_throughput.py."""
    from bench.train_throughput import measure, stage_steps

    rates = {}
    for name, (step, batch) in stage_steps(preset, size).items():
        _, timed = measure(step, steps)
        seconds = statistics.median(timed) if isinstance(timed, (list, tuple)) else timed
        rates[1 if name == "stage 1" else 2] = batch / seconds
    return rates


def epochs_for(seconds: float, rate: float, images_per_epoch: int) -> int:
    return max(1, int(round(seconds * rate / images_per_epoch)))


def stage1_schedule(seconds: float, rate: float, n_categories: int, ipc: int,
                    prefix: str = "stage1") -> tuple[int, list[str]]:
    """Stage-1 epochs and overrides worth `seconds` at `rate`: at least 2 epochs, the images per category set so
    that epochs x categories x images per category is the budget's image count."""
    images = seconds * rate
    epochs = max(2, int(round(images / (n_categories * ipc))))
    ipc = max(4, int(round(images / (epochs * n_categories))))
    return epochs, [f"{prefix}.images_per_category={ipc}", f"{prefix}.epochs={epochs}",
                    f"{prefix}.warmup_epochs={max(1, epochs // 10)}"]


def row_plan(row: str, budget_s: float, rates: dict[int, float], n_categories: int, share1: float,
             s1_ipc: int, s2_ipc: int, pretrain_categories: int) -> dict:
    """Epochs (and config overrides) for a row so that its training compute is `budget_s` at `rates`."""
    e2 = epochs_for(budget_s * (1 - share1), rates[2], n_categories * s2_ipc)
    plan: dict = {"pretrain_sets": []}
    if row == "reconstruction":
        e1, sets = stage1_schedule(budget_s, rates[1], n_categories, s1_ipc)
        sets.append("run.pipeline=reconstruction")
        e2 = 0
    elif row == "no_stage1":
        e1, e2 = 0, epochs_for(budget_s, rates[2], n_categories * s2_ipc)
        sets = ["stage1.enabled=false", f"stage2.epochs={e2}"]
    elif row == "pretrained":
        # half of the stage-1 share pretrains on DTD + normals, the other half is stage 1 on the normals
        pe, plan["pretrain_sets"] = stage1_schedule(budget_s * share1 / 2, rates[1], pretrain_categories, s1_ipc)
        plan["pretrain_epochs"] = pe
        e1, sets = stage1_schedule(budget_s * share1 / 2, rates[1], n_categories, s1_ipc)
        sets.append(f"stage2.epochs={e2}")
    else:
        e1, sets = stage1_schedule(budget_s * share1, rates[1], n_categories, s1_ipc)
        sets.append(f"stage2.epochs={e2}")
        if row == "no_plpm":
            sets.append("stage1.use_plpm=false")
        if row == "no_tbm":
            sets.append("model.use_tbm=false")
    plan.update(sets=sets, stage1_epochs=e1, stage2_epochs=e2)
    return plan


def read_metrics(test_dir: Path) -> dict:
    data = json.loads((test_dir / "metrics.json").read_text())
    return {cat: {k: data["metrics"][cat][k] for k in ("image_auroc", "pixel_auroc", "pixel_aupro")}
            for cat in data["metrics"] if cat != "mean"}


def mala_train_test(*, name: str, out: Path, data: list[str], textures: str, preset: str, size: int, seed: int,
                    sets: list[str], categories: str | None, cache: Path, niceness: int,
                    init: Path | None = None) -> dict:
    """`mala train` then `mala test` in OUT/NAME; times, peak memory and per-category metrics (or the error)."""
    run_dir = out / name
    log = run_dir.with_suffix(".log")
    common = ["--data", *data, "--cache-dir", str(cache)] + (["--categories", categories] if categories else [])
    train = [*nice_prefix(niceness), sys.executable, "-m", "mala.cli", "train", "--config", preset, *common,
             "--textures", textures, "--out", str(run_dir), "--set", f"model.image_size={size}",
             "--set", f"run.seed={seed}"]
    for item in sets:
        train += ["--set", item]
    if init is not None:
        train += ["--init", str(init)]
    result: dict = {"name": name, "train": run_timed(train, log)}
    if result["train"]["rc"] != 0:
        return result
    test_dir = run_dir / "test"
    test = [*nice_prefix(niceness), sys.executable, "-m", "mala.cli", "test", "--checkpoint",
            str(run_dir / "model.safetensors"), *common, "--out", str(test_dir), "--figures", "0"]
    result["test"] = run_timed(test, log)
    if result["test"]["rc"] == 0:
        result["metrics"] = read_metrics(test_dir)
    return result


def mala_pretrain(*, out: Path, data: list[str], textures: str, preset: str, size: int, seed: int, epochs: int,
                  sets: list[str], cache: Path, niceness: int) -> tuple[dict, Path]:
    """`mala pretrain` on DTD + every root's train/good. The normal images are linked file by file (not copied)
    under OUT/normals/<root name>/, one pretraining category per root (mala does not follow linked folders)."""
    links = out / "normals"
    for root in data:
        folder = links / Path(root).name
        folder.mkdir(parents=True, exist_ok=True)
        for image in sorted((Path(root).resolve() / "train" / "good").iterdir()):
            if image.is_file() and not (folder / image.name).exists():
                (folder / image.name).symlink_to(image)
    folders = [textures, str(links)]
    run_dir = out / f"pretrain_s{seed}"
    cmd = [*nice_prefix(niceness), sys.executable, "-m", "mala.cli", "pretrain", "--config", preset,
           "--data", *folders, "--out", str(run_dir), "--epochs", str(epochs), "--cache-dir", str(cache),
           "--set", f"model.image_size={size}", "--set", f"run.seed={seed}"]
    for item in sets:
        cmd += ["--set", item]
    return run_timed(cmd, run_dir.with_suffix(".log")), run_dir / "model.safetensors"


def pretrain_categories(data: list[str], textures: str) -> int:
    """Categories `mala pretrain` sees: one per DTD class folder plus one per data root (normals/<root>)."""
    classes = [d for d in Path(textures).iterdir() if d.is_dir()] or [Path(textures)]
    return len(classes) + len(data)


def summarise(results: list[dict], categories: list[str]) -> str:
    """Markdown: per row, mean ± spread (half the range over seeds) of image / pixel AUROC and AUPRO per category."""
    header = ["row", "seeds"] + [f"{c} image / pixel AUROC, AUPRO" for c in categories] + \
             ["mean image / pixel AUROC", "train s (wall, per seed)", "train CPU s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        ok = [r for r in runs if r.get("metrics")]
        failed = [r for r in runs if not r.get("metrics")]
        cells = [ROW_TITLES[row], ",".join(str(r["seed"]) for r in ok) or "-"]
        means = {"image_auroc": [], "pixel_auroc": []}
        for cat in categories:
            vals = {k: [100 * r["metrics"][cat][k] for r in ok if cat in r["metrics"]]
                    for k in ("image_auroc", "pixel_auroc", "pixel_aupro")}
            cells.append(" / ".join(_pm(vals[k]) for k in ("image_auroc", "pixel_auroc")) + ", " +
                         _pm(vals["pixel_aupro"]))
        for r in ok:
            for k in means:
                means[k].append(statistics.mean(100 * r["metrics"][c][k] for c in categories if c in r["metrics"]))
        cells.append(" / ".join(_pm(means[k]) for k in ("image_auroc", "pixel_auroc")))
        cells.append(_pm([r["wall_s"] for r in ok], digits=0))
        cells.append(_pm([r["cpu_s"] for r in ok], digits=0))
        lines.append("| " + " | ".join(cells) + " |")
        for r in failed:
            lines.append(f"| {ROW_TITLES[row]}, seed {r['seed']}: FAILED | {r.get('error', '?')} |")
    return "\n".join(lines)


def _pm(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(max(values) - min(values)) / 2:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", nargs="+", required=True, help="MVTec-layout category roots")
    parser.add_argument("--textures", required=True, help="DTD images folder")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--minutes-per-row", type=float, default=0.5, help="training compute per row and seed")
    parser.add_argument("--stage1-share", type=float, default=0.5, help="part of a two-stage row's budget for stage 1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--out", type=Path, default=Path("../bench-runs/ablation"))
    parser.add_argument("--nice", type=int, default=5)
    parser.add_argument("--rates", type=float, nargs=2, metavar=("STAGE1", "STAGE2"),
                        help="training images/s of each stage; skips the timing at the start")
    args = parser.parse_args()

    for root in [*args.data, args.textures]:
        if not Path(root).is_dir():
            parser.error(f"not a folder: {root}")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    results_path = args.out / "results.json"
    state = json.loads(results_path.read_text()) if results_path.exists() else {"runs": []}
    categories = [Path(d).name for d in args.data]

    if args.rates:
        rates = {1: args.rates[0], 2: args.rates[1]}
    elif "rates" in state:
        rates = {int(k): v for k, v in state["rates"].items()}
    else:
        rates = calibrate(args.preset, args.image_size)
    state.update(rates=rates, image_size=args.image_size, minutes_per_row=args.minutes_per_row, preset=args.preset,
                 command=" ".join(sys.argv))
    print(f"training rates at {args.image_size} px: stage 1 {rates[1]:.1f}, stage 2 {rates[2]:.1f} images/s",
          flush=True)

    from mala.config import load_config

    cfg = load_config(args.preset)
    budget = args.minutes_per_row * 60
    pre_cats = pretrain_categories(args.data, args.textures)
    state["runs"] = [r for r in state["runs"] if "error" not in r]  # a rerun retries failed rows
    done = {(r["row"], r["seed"]) for r in state["runs"]}
    for seed in args.seeds:
        for row in args.rows:
            if (row, seed) in done:
                continue
            plan = row_plan(row, budget, rates, len(categories), args.stage1_share,
                            cfg.stage1.images_per_category, cfg.stage2.images_per_category, pre_cats)
            record = {"row": row, "seed": seed, "plan": plan}
            print(f"[{time.strftime('%H:%M:%S')}] {row}, seed {seed}: {plan}", flush=True)
            common = dict(out=args.out, data=args.data, textures=args.textures, preset=args.preset,
                          size=args.image_size, seed=seed, cache=cache, niceness=args.nice)
            parts = []
            init = None
            if row == "pretrained":
                pre, init = mala_pretrain(epochs=plan["pretrain_epochs"], sets=plan["pretrain_sets"], **common)
                parts.append(pre)
                if pre["rc"] != 0:
                    record["error"] = f"mala pretrain failed: {pre.get('error')}"
            if "error" not in record:
                metrics = {}
                for cats in (categories if row == "single_class" else [None]):
                    name = f"{row}_s{seed}" + (f"_{cats}" if cats else "")
                    res = mala_train_test(name=name, sets=plan["sets"], categories=cats, init=init, **common)
                    parts.append(res["train"])
                    if "metrics" not in res:
                        stage = "test" if "test" in res else "train"
                        record["error"] = f"mala {stage} failed: {res.get(stage, {}).get('error')}"
                        break
                    metrics.update(res["metrics"])
                else:
                    record["metrics"] = metrics
            record["wall_s"] = round(sum(p["wall_s"] for p in parts), 1)
            record["cpu_s"] = round(sum(p["cpu_s"] for p in parts), 1)
            record["peak_mib"] = max(p["peak_mib"] for p in parts)
            state["runs"].append(record)
            results_path.write_text(json.dumps(state, indent=1))
            print(f"  -> {json.dumps({k: record.get(k) for k in ('metrics', 'wall_s', 'cpu_s', 'error')})}",
                  flush=True)

    table = summarise(state["runs"], categories)
    (args.out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
