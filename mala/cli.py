"""`mala` command line: a thin layer over `mala.engine`; user errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mala.errors import ConfigError, DataError, MalaError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _int_at_least(minimum: int):
    """argparse type: an integer not below `minimum`."""
    def integer(value: str) -> int:  # named so argparse says "invalid integer value"
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number
    return integer


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", metavar="DATA",
                        help="data roots (layout detected), KIND:PATH, or KEY=VALUE,... (README.md, Datasets)")
    parser.add_argument("--data-config", type=Path, metavar="YAML",
                        help="a file naming several datasets, with or instead of --data (README.md, Datasets)")


def _data(args: argparse.Namespace) -> list:
    from mala.data.specs import data_sources

    return data_sources(args.data, args.data_config)


def _data_options(args: argparse.Namespace) -> str:
    """The data options as given, to repeat in a later command."""
    options = ["--data", *map(shlex.quote, args.data)] if args.data else []
    return " ".join(options + (["--data-config", shlex.quote(str(args.data_config))] if args.data_config else []))


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

    if args.dry_run:
        if args.resume:
            raise ConfigError("--dry-run plans a fresh run; it does not combine with --resume")
        print(engine.plan_training(_load_cfg(args), _data(args), _csv(args.categories), init=args.init))
        return
    cfg = None if args.resume else _load_cfg(args)
    model_path = engine.train(cfg, _data(args), args.out, _csv(args.categories), resume=args.resume,
                              cache_dir=args.cache_dir, init=args.init)
    print(f"model saved to {model_path}")
    print(f"test it with: mala test --checkpoint {model_path} {_data_options(args)}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from mala import engine

    cfg = None if args.resume else _load_cfg(args)
    if cfg is not None and args.epochs is not None:
        cfg.stage1.epochs = args.epochs
    model_path = engine.pretrain(cfg, args.data, args.out, resume=args.resume, init=args.init,
                                 cache_dir=args.cache_dir)
    print(f"pretrained model saved to {model_path}")
    print(f"start training from it with: mala train --init {model_path} --config CONFIG --data ...")


def cmd_test(args: argparse.Namespace) -> None:
    from mala import engine

    out = args.out or Path(args.checkpoint).parent / "test"
    results = engine.test(Path(args.checkpoint), _data(args), _csv(args.categories), out, device=args.device,
                          figures_per_category=args.figures, full_resolution=args.full_resolution,
                          cache_dir=args.cache_dir)
    print_metrics(results)
    print(f"report written to {out}: open {out / 'index.html'} (metrics.json, metrics.csv, table.md beside it)")


def cmd_cost(args: argparse.Namespace) -> None:
    from mala.eval.cost import format_cost_table, measure_cost

    costs = []
    for name in _csv(args.config):
        print(f"measuring {name} ...", file=sys.stderr)
        costs.append(measure_cost(name, args.image_size, args.batch, args.repeats, args.device))
    print(format_cost_table(costs, args.image_size, args.batch, args.repeats, args.device))


def cmd_demo(args: argparse.Namespace) -> None:
    from mala.demo import run_demo

    results = run_demo(args.out, minutes=args.minutes)
    print_metrics(results)
    print(f"report (tables, ROC curves, example maps): {args.out / 'run' / 'test' / 'index.html'}")


def cmd_synth_preview(args: argparse.Namespace) -> None:
    from mala import engine

    path = engine.synth_preview(_data(args), args.out, args.textures, args.count, args.size, args.seed)
    print(f"preview written to {path}")


def cmd_check_data(args: argparse.Namespace) -> None:
    from mala import engine

    report = engine.check_data(_data(args), _csv(args.categories), args.workers)
    print(report.text())
    if report.problems:
        raise DataError(f"{len(report.problems)} problem(s) in the data, listed above")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mala", description="MALA: one model for anomaly maps of many categories")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train stage 1 and stage 2 as ONE model over all categories")
    train.add_argument("--config", default="tiny", help="preset (tiny, base, paper) or YAML file [tiny]")
    _add_data_arguments(train)
    train.add_argument("--categories", help="comma-separated subset of categories [all found]")
    train.add_argument("--textures", type=Path, help="folder of anomaly textures, e.g. DTD [the images themselves]")
    train.add_argument("--out", type=Path, default=Path("runs/mala"), help="run folder [runs/mala]")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    train.add_argument("--init", type=Path, metavar="CHECKPOINT",
                       help="start from these weights: mae_pretrain_vit_*.pth, mae_visualize_vit_*.pth, a timm state "
                            "dict or a mala model/pretrain output (README.md, Initialisation) [random]")
    train.add_argument("--dry-run", action="store_true",
                       help="print parameters, steps, learning rates and an estimated time; train nothing")
    train.set_defaults(func=cmd_train)

    pretrain = commands.add_parser("pretrain", help="stage-1 masked-autoencoder training on unlabeled images, "
                                                    "a starting point for `train --init`")
    pretrain.add_argument("--data", nargs="+", type=Path, required=True, metavar="FOLDER",
                          help="folders of images, searched recursively; one category per top-level subfolder")
    pretrain.add_argument("--out", type=Path, default=Path("runs/pretrain"),
                          help="run folder; the weights go to its model.safetensors [runs/pretrain]")
    pretrain.add_argument("--config", default="tiny", help="preset (tiny, base, paper) or YAML file [tiny]")
    pretrain.add_argument("--epochs", type=_int_at_least(1), help="stage-1 epochs [the config's stage1.epochs]")
    pretrain.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    pretrain.add_argument("--init", type=Path, metavar="CHECKPOINT", help="start from these weights, as in train")
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pretrain.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    pretrain.set_defaults(func=cmd_pretrain)

    test = commands.add_parser("test", help="per-category image and pixel metrics of a trained model")
    test.add_argument("--checkpoint", required=True, help="model.safetensors (or its run folder)")
    _add_data_arguments(test)
    test.add_argument("--categories", help="comma-separated subset of categories [all found]")
    test.add_argument("--out", type=Path, help="report folder [next to the checkpoint: test/]")
    test.add_argument("--device", default="cpu", help="torch device [cpu]")
    test.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    test.add_argument("--figures", type=_int_at_least(0), default=4, metavar="N",
                      help="example images per category in the report, best and worst cases first; 0: none [4]")
    test.add_argument("--full-resolution", action="store_true",
                      help="pixel metrics at each image's original size (maps upsampled bilinearly, masks as stored); "
                           "needs one image size per category and about 16 bytes of memory per pixel of the largest "
                           "category (120 images of 1024 x 1024: ~2 GB); metric time grows with the pixel count "
                           "(512 px originals: ~9x). The report's pictures and ROC curves stay at the model's size")
    test.set_defaults(func=cmd_test)

    cost = commands.add_parser("cost", help="parameters, GFLOPs and images/s per config (the paper's Table 6)")
    cost.add_argument("--config", "--presets", dest="config", default="tiny,base,paper",
                      help="comma-separated presets or YAML files [tiny,base,paper]")
    cost.add_argument("--image-size", type=_int_at_least(1), default=256,
                      help="square image size; the model is built for it [256]")
    cost.add_argument("--batch", type=_int_at_least(1), default=1, help="images per timed forward [1]")
    cost.add_argument("--repeats", type=_int_at_least(1), default=5,
                      help="timed forwards, the median counts; keep it low for `paper` on a CPU [5]")
    cost.add_argument("--device", default="cpu", help="torch device for the timing [cpu]")
    cost.set_defaults(func=cmd_cost)

    demo = commands.add_parser("demo", help="generate a small procedural dataset, train `tiny` on it, test it")
    demo.add_argument("--out", type=Path, default=Path("mala_demo"), help="folder for data and run [mala_demo]")
    demo.add_argument("--minutes", type=float, default=4.0, help="approximate training budget on this CPU [4]")
    demo.set_defaults(func=cmd_demo)

    preview = commands.add_parser("synth-preview", help="picture grid of synthetic anomalies on normal images")
    _add_data_arguments(preview)
    preview.add_argument("--out", type=Path, default=Path("synth_preview.png"))
    preview.add_argument("--textures", type=Path, help="folder of anomaly textures, e.g. DTD")
    preview.add_argument("--count", type=int, default=8, help="rows (normal images) [8]")
    preview.add_argument("--size", type=int, default=224, help="image size [224]")
    preview.add_argument("--seed", type=int, default=0)
    preview.set_defaults(func=cmd_synth_preview)

    check = commands.add_parser("check-data", help="count the images per dataset, category, split and label; "
                                                   "list every problem (exit code 2 if any)")
    _add_data_arguments(check)
    check.add_argument("--categories", help="comma-separated subset of categories [all found]")
    check.add_argument("--workers", type=_int_at_least(1), default=2, help="threads that read the images [2]")
    check.set_defaults(func=cmd_check_data)
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
