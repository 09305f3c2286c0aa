"""`mala` command line: a thin layer over `mala.engine`; user errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mala.errors import ConfigError, DataError, MalaError
from mala.sizes import ASPECT, is_aspect

if TYPE_CHECKING:
    from mala.engine import Tuning
    from mala.eval.metrics import MetricsTable
    from mala.train.setup import ConfigRequest


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


# training flags as Lightning users know them: --num-nodes N is `--set run.num_nodes=N`, and so on
RUN_FLAGS = ("accelerator", "devices", "num_nodes", "strategy", "precision", "accumulate", "clip_grad", "compile",
             "checkpoint_every_steps", "keep_checkpoints", "seed")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accelerator", help="cpu, gpu, cuda, mps or auto [the config's run.accelerator]")
    parser.add_argument("--devices", type=_int_at_least(1),
                        help="devices per node; several start one process each (DDP). Batch sizes are per device")
    parser.add_argument("--num-nodes", type=_int_at_least(1), help="machines (launch each with torchrun)")
    parser.add_argument("--strategy", help="Fabric strategy: auto, ddp, fsdp [auto]")
    parser.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed (GPU) [32-true]")
    parser.add_argument("--accumulate", type=_int_at_least(1), help="batches per optimizer step [1]")
    parser.add_argument("--clip-grad", type=float, metavar="NORM", help="clip the gradient norm to NORM; 0: off [0]")
    parser.add_argument("--compile", action="store_const", const=True, help="torch.compile the transformer blocks")
    parser.add_argument("--checkpoint-every-steps", type=_int_at_least(0), metavar="N",
                        help="also write a resumable checkpoint every N optimizer steps; 0: at epoch ends only [0]")
    parser.add_argument("--keep-checkpoints", type=_int_at_least(1), metavar="K",
                        help="resumable checkpoints kept in RUN/checkpoints, newest first [1]")
    parser.add_argument("--seed", type=int, help="seed of sampling, masking and synthesis [0]")


COST_PRESETS, COST_SIZE = "tiny,base,paper", 256  # what `mala cost` measures when not told


def _add_memory_search_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-search", choices=["exact", "int8"],
                        help="how a checkpoint's memory is searched on a CPU (and in its ONNX export): int8 = an "
                             "int8 shortlist re-ranked exactly (fast where the CPU has int8 dot products, e.g. AVX-512 "
                             "VNNI), exact = float32 throughout (try it where int8 is slower) [as the model file "
                             "says: model.memory_search]")


def _image_size(text: str) -> int | list[int]:
    """argparse type: SIZE or HEIGHTxWIDTH, as `model.image_size` stores it."""
    from mala.sizes import parse_size_option

    try:
        return parse_size_option(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _image_size_or_aspect(text: str) -> int | list[int] | str:
    """argparse type: `aspect`, SIZE or HEIGHTxWIDTH."""
    if is_aspect(text):
        return ASPECT
    try:
        return _image_size(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; or aspect (README.md, Image size)") from None


def _add_image_size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=_image_size_or_aspect, metavar="SIZE|HxW|aspect",
                        help="the model's input: SIZE (square), HEIGHTxWIDTH (e.g. 320x128), or aspect (the training "
                             "images' median aspect ratio at about the config's pixel count; README.md, Image size) "
                             "[the config's model.image_size]")


def _add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=_image_size, metavar="SIZE|HxW",
                        help="train and infer on tiles of this size (the model's input) cut from each image at "
                             "--tile-source, maps stitched by averaging the overlaps (README.md, Tiling) [no tiling]")
    parser.add_argument("--tile-stride", type=int, metavar="PIXELS",
                        help="pixels between neighbouring tiles, 1 to the tile's side [3/4 of the tile]")
    parser.add_argument("--tile-source", type=_image_size, metavar="SIZE|HxW",
                        help="the size every image is resized to before tiling [the training images' median "
                             "height and width]")


def _request(args: argparse.Namespace) -> ConfigRequest:
    """The config the command line asks for; the engine resolves what it leaves open from the training images."""
    from mala.train.setup import ConfigRequest

    run = {key: getattr(args, key) for key in RUN_FLAGS if getattr(args, key, None) is not None}
    overrides = list(args.set or [])
    if getattr(args, "no_tune", False):
        overrides.append("run.tune=false")
    if getattr(args, "epochs", None) is not None:  # pretrain --epochs
        overrides.append(f"stage1.epochs={args.epochs}")
    return ConfigRequest(args.config, overrides, args.image_size, args.tile, args.tile_stride, args.tile_source,
                         getattr(args, "textures", None), run)


def print_metrics(results: MetricsTable) -> None:
    """Per-category table of the paper's two metrics and the others, n/a where undefined."""
    columns = ["image_auroc", "pixel_auroc", "pixel_aupro", "pixel_ap", "image_f1_max", "pixel_f1_max"]
    columns += [column for column in ["routing"] if column in next(iter(results.values()))]
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
        print(engine.plan_training(_request(args), _data(args), _csv(args.categories), init=args.init))
        return
    model_path = engine.train(_request(args), _data(args), args.out, _csv(args.categories), resume=args.resume,
                              cache_dir=args.cache_dir, init=args.init)
    print(f"model saved to {model_path}")
    print(f"test it with: mala test --checkpoint {model_path} {_data_options(args)}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from mala import engine

    model_path = engine.pretrain(_request(args), args.data, args.out, resume=args.resume, init=args.init,
                                 cache_dir=args.cache_dir)
    print(f"pretrained model saved to {model_path}")
    print(f"start training from it with: mala train --init {model_path} --config CONFIG --data ...")


def cmd_test(args: argparse.Namespace) -> None:
    from mala import engine
    from mala.checkpoint import model_file

    out = args.out or model_file(args.checkpoint).parent / "test"  # a run folder's report goes inside it
    results = engine.test(Path(args.checkpoint), _data(args), _csv(args.categories), out, device=args.device,
                          figures_per_category=args.figures, full_resolution=args.full_resolution,
                          cache_dir=args.cache_dir, store_test_thresholds=args.store_test_thresholds,
                          route=args.route, memory_search=args.memory_search)
    print_metrics(results)
    print(f"report written to {out}: open {out / 'index.html'} (metrics.json, metrics.csv, table.md beside it)")


def cmd_predict(args: argparse.Namespace) -> None:
    from mala.deploy.backends import open_backend
    from mala.deploy.predict import UNNAMED, Predictor, predict_folder

    backend = open_backend(args.model, args.device, category=args.category, memory_search=args.memory_search)
    predictor = Predictor(backend, args.category)
    if not predictor.calibrated:
        print("mala: note: this model has no thresholds yet, so no decisions: run `mala calibrate`", file=sys.stderr)
    summary = predict_folder(predictor, args.input, args.out, args.batch_size, not args.no_pictures)
    decided = ", ".join(f"{summary[key]} {key}" for key in ("anomalous", "normal") if summary[key])
    print(f"{summary['images']} images: {decided or 'no decisions'}, {summary['failed']} unreadable "
          f"({predictor.backend.kind}); results in {args.out / 'results.csv'} and results.json")
    if args.category is None and any(name != UNNAMED for name in summary["categories"]):
        routed = ", ".join(f"{name} {count}" for name, count in sorted(summary["categories"].items()))
        print(f"routed to the memory section of: {routed} (results.csv, column category)")
    if summary["failed"]:
        print("unreadable images are listed in results.csv with the reason", file=sys.stderr)


def cmd_calibrate(args: argparse.Namespace) -> None:
    from mala import engine

    calibration = engine.calibrate(Path(args.checkpoint), _data(args) if (args.data or args.data_config) else None,
                                   args.normal, _csv(args.categories), args.quantile, args.pixel_quantile,
                                   args.device, args.cache_dir)
    print(f"{'category':24}{'image threshold':>18}{'pixel threshold':>18}  rule (image; pixel)")
    for name, entry in calibration.entries.items():
        print(f"{name:24}{entry.image_threshold:18.5f}{entry.pixel_threshold:18.5f}  {entry.image_rule}; "
              f"{entry.pixel_rule}")
    print(f"thresholds stored in {args.checkpoint}")


def cmd_tune(args: argparse.Namespace) -> None:
    from mala import engine
    from mala.checkpoint import model_file

    out = args.out or model_file(args.checkpoint).parent / "tune"
    _print_tuning(engine.tune(Path(args.checkpoint), _data(args), out, args.device, args.cache_dir))


def _print_tuning(tuning: Tuning) -> None:
    print(tuning.report.read_text(), end="")
    print(f"each category's fusion stored in {tuning.model}; every candidate's figures in "
          f"{tuning.report.with_name('tuning.json')}, the maps it changed in {tuning.report.with_name('tuning.png')}")


def cmd_export(args: argparse.Namespace) -> None:
    from mala import engine

    out = args.out or Path(args.checkpoint).with_suffix(".onnx")
    path = engine.export(Path(args.checkpoint), out, args.category, args.opset, args.memory_search)
    print(f"ONNX model written to {path}; run it without torch: mala predict --model {path} --input IMAGES")


def cmd_serve(args: argparse.Namespace) -> None:
    from mala.deploy.serve import serve

    serve(args.model, args.host, args.port, args.category, args.device, args.max_upload_mb, args.max_megapixels,
          args.memory_search)


def cmd_cost(args: argparse.Namespace) -> None:
    from mala.eval.cost import format_cost_table, measure_cost, measure_trained_cost

    costs = []
    if args.checkpoint:
        if args.config or args.image_size:
            raise ConfigError("--checkpoint measures the trained model as it is: its config and image size are "
                              "fixed, so --config and --image-size cannot be given with it")
        for checkpoint in args.checkpoint:
            print(f"measuring {checkpoint} ...", file=sys.stderr)
            costs.append(measure_trained_cost(checkpoint, args.batch, args.repeats, args.device, args.category,
                                              args.memory_search))
    else:
        if args.category or args.memory_search:
            raise ConfigError("--category and --memory-search are about a trained model's memory: give them with "
                              "--checkpoint")
        for name in _csv(args.config or COST_PRESETS):
            print(f"measuring {name} ...", file=sys.stderr)
            costs.append(measure_cost(name, args.image_size or COST_SIZE, args.batch, args.repeats, args.device))
    print(format_cost_table(costs, args.batch, args.repeats, args.device))


def cmd_demo(args: argparse.Namespace) -> None:
    from mala.demo import run_demo

    results = run_demo(args.out, minutes=args.minutes)
    print_metrics(results)
    print(f"report (tables, ROC curves, example maps): {args.out / 'run' / 'test' / 'index.html'}")
    images = args.out / "data" / "weave" / "test"
    print(f"maps and decisions for any images: mala predict --model {args.out / 'run'} --input {images} "
          f"--out {args.out / 'predictions'}")


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
    _add_image_size_argument(train)
    _add_tiling_arguments(train)
    train.add_argument("--no-tune", action="store_true",
                       help="train on all images with the config's map fusion (the same as --set run.tune=false); "
                            "by default 20 %% of each category's images are held out of training to choose its "
                            "fusion, then the memory holds all (RUN/tune)")
    train.add_argument("--dry-run", action="store_true",
                       help="print what the run would say as it starts (its choices and warnings), parameters, "
                            "steps, learning rates and an estimated time; train nothing")
    _add_run_arguments(train)
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
    _add_image_size_argument(pretrain)
    _add_tiling_arguments(pretrain)
    pretrain.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pretrain.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    _add_run_arguments(pretrain)
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
    test.add_argument("--route", action="store_true",
                      help="do not tell the model each image's category: it routes each image to the memory section "
                           "of its nearest category, and the table gets the share routed right (column routing)")
    test.add_argument("--store-test-thresholds", action="store_true",
                      help="store this test set's F1-max thresholds with the model (the test labels choose them: "
                           "decisions then look better on this test set than they are); else `mala calibrate`")
    _add_memory_search_argument(test)
    test.set_defaults(func=cmd_test)

    cost = commands.add_parser("cost", help="parameters, GFLOPs and images/s per config (the paper's Table 6)")
    cost.add_argument("--config", "--presets", dest="config",
                      help=f"comma-separated presets or YAML files [{COST_PRESETS}]")
    cost.add_argument("--image-size", type=_image_size, metavar="SIZE|HxW",
                      help=f"image size, square or HEIGHTxWIDTH; the model is built for it [{COST_SIZE}]")
    cost.add_argument("--checkpoint", type=Path, nargs="+", metavar="MODEL",
                      help="trained models (model.safetensors or run folders) instead of presets: timed as they run, "
                           "their size, tiles and normal-feature memory included")
    cost.add_argument("--batch", type=_int_at_least(1), default=1, help="images per timed forward [1]")
    cost.add_argument("--repeats", type=_int_at_least(1), default=5,
                      help="timed forwards, the median counts; keep it low for `paper` on a CPU [5]")
    cost.add_argument("--device", default="cpu", help="torch device for the timing [cpu]")
    cost.add_argument("--category", help="with --checkpoint: images read this category's memory section, as "
                                         "`predict --category` (its speed with the category known) [routed]")
    _add_memory_search_argument(cost)
    cost.set_defaults(func=cmd_cost)

    predict = commands.add_parser("predict", help="score, decision, anomaly map and overlay for each image")
    predict.add_argument("--model", "--checkpoint", dest="model", type=Path, required=True,
                         help="model.safetensors (or its run folder), or an exported .onnx file (needs no torch)")
    predict.add_argument("--input", type=Path, required=True, help="an image, or a folder searched recursively")
    predict.add_argument("--out", type=Path, default=Path("predictions"),
                         help="results.csv/.json, maps/ and overlays/ go here [predictions]")
    predict.add_argument("--category", help="the images' category: its memory section and thresholds [each image "
                         "routed to its nearest category's section and decided with that category's thresholds]")
    predict.add_argument("--batch-size", type=_int_at_least(1), default=8, help="images per forward pass [8]")
    predict.add_argument("--device", default="cpu", help="torch device for a checkpoint [cpu]")
    predict.add_argument("--no-pictures", action="store_true", help="scores and decisions only, no map files")
    _add_memory_search_argument(predict)
    predict.set_defaults(func=cmd_predict)

    calibrate = commands.add_parser("calibrate", help="choose the decision thresholds and store them with the model")
    calibrate.add_argument("--checkpoint", required=True, help="model.safetensors (or its run folder)")
    _add_data_arguments(calibrate)
    calibrate.add_argument("--normal", type=Path, nargs="+", metavar="FOLDER",
                           help="folders of normal images only (each named like its category), instead of --data")
    calibrate.add_argument("--categories", help="comma-separated subset of categories [all found]")
    calibrate.add_argument("--quantile", type=float, default=0.995,
                           help="with normal images only: this quantile of their scores is the threshold [0.995]")
    calibrate.add_argument("--pixel-quantile", type=float, default=0.995,
                           help="with no anomaly masks: this quantile of normal pixels is the pixel threshold [0.995]")
    calibrate.add_argument("--device", default="cpu", help="torch device [cpu]")
    calibrate.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    calibrate.set_defaults(func=cmd_calibrate)

    tune = commands.add_parser("tune", help="choose each category's map fusion on its training images (a model "
                               "trained on 80 %% of them maps the rest with small synthetic defects) and store it")
    tune.add_argument("--checkpoint", required=True, help="model.safetensors (or its run folder)")
    _add_data_arguments(tune)
    tune.add_argument("--out", type=Path, help="folder of the protocol's model and the choice's report (a killed run "
                      "resumes there, a finished protocol model is reused) [next to the checkpoint: tune/]")
    tune.add_argument("--device", default="cpu", help="torch device of the validation maps [cpu]")
    tune.add_argument("--cache-dir", type=Path, help="folder that keeps decoded images for later runs [none]")
    tune.set_defaults(func=cmd_tune)

    export = commands.add_parser("export", help="the model as one ONNX graph: uint8 images to scores and maps")
    export.add_argument("--checkpoint", required=True, help="model.safetensors (or its run folder)")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="[onnx]")
    export.add_argument("--out", type=Path, help="output file [the checkpoint's name with .onnx]")
    export.add_argument("--category", help="a graph for this category: its memory section and thresholds [each "
                        "image routed to its nearest category's section, named by the output 'category', and "
                        "normalised with that category's thresholds]")
    export.add_argument("--opset", type=_int_at_least(18), default=18, help="ONNX opset [18]")
    _add_memory_search_argument(export)
    export.set_defaults(func=cmd_export)

    serve = commands.add_parser("serve", help="HTTP service: POST /predict, GET /health, a web page at /")
    serve.add_argument("--model", "--checkpoint", dest="model", type=Path, required=True,
                       help="model.safetensors (or its run folder), or an exported .onnx file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    serve.add_argument("--port", type=_int_at_least(1), default=8000, help="[8000]")
    serve.add_argument("--category", help="the images' category: its memory section and thresholds [each image "
                       "routed to its nearest category's section and decided with that category's thresholds]")
    serve.add_argument("--device", default="cpu", help="torch device for a checkpoint [cpu]")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="larger uploads get 413 [20]")
    serve.add_argument("--max-megapixels", type=float, default=40.0,
                       help="images with more pixels get 413 before decoding (decompression bombs) [40]")
    _add_memory_search_argument(serve)
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser("demo", help="generate a small procedural dataset, train `tiny` on it, test it")
    demo.add_argument("--out", type=Path, default=Path("mala_demo"), help="folder for data and run [mala_demo]")
    demo.add_argument("--minutes", type=float, default=4.0, help="approximate training budget on this CPU [4]")
    demo.set_defaults(func=cmd_demo)

    preview = commands.add_parser("synth-preview", help="picture grid of synthetic anomalies on normal images")
    _add_data_arguments(preview)
    preview.add_argument("--out", type=Path, default=Path("synth_preview.png"))
    preview.add_argument("--textures", type=Path, help="folder of anomaly textures, e.g. DTD")
    preview.add_argument("--count", type=int, default=8, help="rows (normal images) [8]")
    preview.add_argument("--size", type=_image_size, default=224, metavar="SIZE|HxW",
                         help="image size, square or HEIGHTxWIDTH, as the model's [224]")
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
