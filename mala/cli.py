"""`mala` command line: a thin layer over `mala.engine`; user errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mala.errors import MalaError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _load_cfg(args: argparse.Namespace):
    from mala.config import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config), args.set or [])
    if getattr(args, "textures", None):
        cfg.synth.texture_dir = str(args.textures)
    return cfg


def print_metrics(results: dict[str, dict[str, float | None]]) -> None:
    """Per-category table of the paper's two metrics and the others, n/a where undefined."""
    columns = ["image_auroc", "pixel_auroc", "pixel_aupro", "pixel_ap", "image_f1_max", "pixel_f1_max"]
    width = max(len(c) for c in results) + 2
    print("category".ljust(width) + "".join(c.replace("_", " ").rjust(14) for c in columns))
    for category, row in results.items():
        cells = ["n/a" if row.get(c) is None else f"{100 * row[c]:.1f}" for c in columns]
        print(category.ljust(width) + "".join(cell.rjust(14) for cell in cells))


def cmd_train(args: argparse.Namespace) -> None:
    from mala import engine

    cfg = None if args.resume else _load_cfg(args)
    model_path = engine.train(cfg, args.data, args.out, _csv(args.categories), resume=args.resume)
    print(f"model saved to {model_path}")
    print(f"test it with: mala test --checkpoint {model_path} --data {' '.join(map(str, args.data))}")


def cmd_test(args: argparse.Namespace) -> None:
    from mala import engine

    out = args.out or Path(args.checkpoint).parent / "test"
    results = engine.test(Path(args.checkpoint), args.data, _csv(args.categories), out, device=args.device)
    print_metrics(results)
    print(f"metrics written to {out / 'metrics.json'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from mala.demo import run_demo

    results = run_demo(args.out, minutes=args.minutes)
    print_metrics(results)


def cmd_synth_preview(args: argparse.Namespace) -> None:
    from mala import engine

    path = engine.synth_preview(args.data, args.out, args.textures, args.count, args.size, args.seed)
    print(f"preview written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mala", description="MALA: one model for anomaly maps of many categories")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train stage 1 and stage 2 as ONE model over all categories")
    train.add_argument("--config", default="tiny", help="preset (tiny, base, paper) or YAML file [tiny]")
    train.add_argument("--data", type=Path, nargs="+", required=True, help="MVTec-layout root(s)")
    train.add_argument("--categories", help="comma-separated subset of categories [all found]")
    train.add_argument("--textures", type=Path, help="folder of anomaly textures, e.g. DTD [the images themselves]")
    train.add_argument("--out", type=Path, default=Path("runs/mala"), help="run folder [runs/mala]")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.set_defaults(func=cmd_train)

    test = commands.add_parser("test", help="per-category image and pixel metrics of a trained model")
    test.add_argument("--checkpoint", required=True, help="model.safetensors (or its run folder)")
    test.add_argument("--data", type=Path, nargs="+", required=True, help="MVTec-layout root(s)")
    test.add_argument("--categories", help="comma-separated subset of categories [all found]")
    test.add_argument("--out", type=Path, help="report folder [next to the checkpoint: test/]")
    test.add_argument("--device", default="cpu", help="torch device [cpu]")
    test.set_defaults(func=cmd_test)

    demo = commands.add_parser("demo", help="generate a small procedural dataset, train `tiny` on it, test it")
    demo.add_argument("--out", type=Path, default=Path("mala_demo"), help="folder for data and run [mala_demo]")
    demo.add_argument("--minutes", type=float, default=4.0, help="approximate training budget on this CPU [4]")
    demo.set_defaults(func=cmd_demo)

    preview = commands.add_parser("synth-preview", help="picture grid of synthetic anomalies on normal images")
    preview.add_argument("--data", type=Path, nargs="+", required=True, help="MVTec-layout root(s)")
    preview.add_argument("--out", type=Path, default=Path("synth_preview.png"))
    preview.add_argument("--textures", type=Path, help="folder of anomaly textures, e.g. DTD")
    preview.add_argument("--count", type=int, default=8, help="rows (normal images) [8]")
    preview.add_argument("--size", type=int, default=224, help="image size [224]")
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(func=cmd_synth_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except MalaError as exc:
        print(f"mala: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mala: interrupted (a training run continues with `mala train --resume --out RUN_DIR`)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
