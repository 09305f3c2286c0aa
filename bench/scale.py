"""The memory at scale (issue 23, item 4): build time, peak RSS, memory rows, model file size, inference speed with
the category known and routed, and accuracy, for (a) 15 categories x 300 training images at 224 px and (b) 100
training images of 5 megapixels, tiled.

    python bench/scale.py --data ../shared/data --out runs/scale.json

(a) The 15 categories are the five real sets of ../shared/data (magnetic_tile, metal_plate, pcb, el_mono, el_multi)
    in three looks each: as they are, colours inverted, and turned a quarter with the colour channels reversed. Each
    category draws its 300 training images from the set's normal training images with random flips (repeats where
    the set has fewer); its test set is the real test set in the same look (at most `--test-per-category` images).
(b) 100 training images of 2560 x 1920 (4.9 MP, `--large`): metal_plate's normal images enlarged, with random flips, cut into
    224 px tiles at stride 224 (108 tiles an image); then one real defect image at that size is predicted, tiled.

Each part runs in a process of its own, so its peak RSS (ru_maxrss) is its own. The untrained `tiny` model stands in
for a trained one: the memory and the speed do not depend on stage 2's weights. Accuracy is that of the memory's
map alone (memory weight 1), which is what the sections and routing change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.memory_sections import memory_predictions, test_tokens  # noqa: E402
from mala.checkpoint import save_checkpoint  # noqa: E402
from mala.config import MalaConfig, TilingConfig, load_config  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.samples import Sample  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.deploy.graph import InferenceGraph  # noqa: E402
from mala.eval.evaluate import category_metrics, known_sections, mean_row, routed_right  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402

SETS = ["magnetic_tile", "metal_plate", "deeppcb/pcb", "pv_el_cells/el_mono", "pv_el_cells/el_multi"]
LOOKS = ["plain", "inverted", "turned"]
SPEED_IMAGES = 30
SPEED_RUNS = 3


def look(images: np.ndarray, name: str) -> np.ndarray:
    """Images (N, H, W, 3) uint8 in one of the `LOOKS` (square images, so a quarter turn keeps the shape)."""
    if name == "inverted":
        return 255 - images
    if name == "turned":
        return np.ascontiguousarray(np.rot90(images, axes=(1, 2))[..., ::-1])
    return images


def flipped(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image flipped left-right and/or upside down at random."""
    out = images.copy()
    for i in range(len(out)):
        if rng.random() < 0.5:
            out[i] = out[i, :, ::-1]
        if rng.random() < 0.5:
            out[i] = out[i, ::-1]
    return out


def categories_cache(data: Path, size: int, train_per_category: int, test_per_category: int,
                     seed: int) -> tuple[ImageCache, ImageCache]:
    """The 15 categories' training and test caches (see the module's description)."""
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for name in SETS:
        found = scan_roots([data / name])
        train = ImageCache.build(train_samples(found), size, desc=f"decoding {name}")
        tests = test_samples(found)
        tests = [tests[i] for i in np.linspace(0, len(tests) - 1, min(test_per_category, len(tests))).astype(int)]
        test = ImageCache.build(tests, size, desc=f"decoding {name} test")
        for look_name in LOOKS:
            category = f"{Path(name).name}_{look_name}"
            drawn = rng.integers(0, len(train.images), train_per_category)
            train_parts.append((category, flipped(look(train.images[drawn], look_name), rng), None, None))
            masks = {i: np.rot90(m).copy() if look_name == "turned" else m for i, m in test.masks.items()}
            test_parts.append((category, look(test.images, look_name), test.samples, masks))
    return joined(train_parts, "train"), joined(test_parts, "test")


def joined(parts: list, split: str) -> ImageCache:
    """One cache of (category, images, samples or None, masks or None) parts, samples renamed to their category."""
    samples, masks, offset = [], {}, 0
    for category, images, originals, part_masks in parts:
        samples += ([dataclasses.replace(sample, category=category) for sample in originals] if originals else
                    [Sample(category, Path(f"{category}/{split}/{i}.png"), split, 0) for i in range(len(images))])
        masks |= {offset + i: mask for i, mask in (part_masks or {}).items()}
        offset += len(images)
    return ImageCache(samples, np.concatenate([p[1] for p in parts]), masks)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def built_model(cfg: MalaConfig, train: ImageCache, seed: int) -> tuple[MALA, float]:
    torch.manual_seed(seed)
    model = MALA(cfg.model).eval()
    start = time.perf_counter()
    fill_memory(model, train, seed, cfg.tile_grid)
    return model, time.perf_counter() - start


def file_size_mb(model: MALA, cfg: MalaConfig, categories: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {"categories": categories},
                               "model": model.state_dict()})
        return path.stat().st_size / 1e6


@torch.no_grad()
def images_per_second(graph: InferenceGraph, images: np.ndarray) -> float:
    """Median over `SPEED_RUNS` of batch-1 images per second through the whole inference graph."""
    batch = torch.from_numpy(images)
    graph(batch[:1])  # warm-up
    rates = []
    for _ in range(SPEED_RUNS):
        start = time.perf_counter()
        for i in range(len(batch)):
            graph(batch[i:i + 1])
        rates.append(len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


def memory_metrics(model: MALA, tokens: torch.Tensor, test: ImageCache, known: np.ndarray, route: bool,
                   kernel: int) -> dict:
    """Mean image / pixel AUROC and AUPRO (and the share routed right) of the memory's map alone over the test
    images' tokens, read in their `known` sections or, with `route`, in those the model routes them to."""
    sections = model.memory.route(tokens).numpy() if route else known
    predictions = memory_predictions(model, tokens, sections, kernel)
    predictions.routed_right = routed_right(known, sections)
    categories = test.indices_by_category()  # not the means per dataset or overall: the mean of the 15 categories
    row = mean_row({c: r for c, r in category_metrics(test, predictions).items() if c in categories})
    return {key: None if value is None else round(100 * value, 1) for key, value in row.items()}


def categories_part(args: argparse.Namespace) -> dict:
    cfg = load_config("tiny")
    train, test = categories_cache(args.data, cfg.model.image_size, args.train_per_category, args.test_per_category,
                                   args.seed)
    decoded_gib = peak_rss_gib()
    model, seconds = built_model(cfg, train, args.seed)
    categories = sorted({s.category for s in train.samples})
    speed_images = test.images[np.linspace(0, len(test.images) - 1, SPEED_IMAGES).astype(int)]
    known, routed = InferenceGraph(model, cfg, section=0), InferenceGraph(model, cfg)
    known_rate, routed_rate = images_per_second(known, speed_images), images_per_second(routed, speed_images)
    result = {
        "part": f"15 categories x {args.train_per_category} images, 224 px", "training_images": len(train.samples),
        "test_images": len(test.samples), "build_seconds": round(seconds, 1),
        "peak_rss_gib_after_decoding": round(decoded_gib, 2), "memory_rows": len(model.memory.tokens),
        "model_file_mb": round(file_size_mb(model, cfg, categories), 1),
        "images_per_second_known": round(known_rate, 1), "images_per_second_routed": round(routed_rate, 1),
        "routed_over_known": round(routed_rate / known_rate, 2),
    }
    tokens, known = test_tokens(model, test), known_sections(test, categories)
    for name, route in (("memory_map_known", False), ("memory_map_routed", True)):
        result[name] = memory_metrics(model, tokens, test, known, route, cfg.run.score_kernel)
    result["peak_rss_gib"] = round(peak_rss_gib(), 2)  # build, speed and accuracy included
    return result


def large_cache(data: Path, size: tuple[int, int], count: int, seed: int) -> tuple[ImageCache, np.ndarray]:
    """`count` enlarged, flipped metal_plate normal images, and one real defect image at the same size."""
    found = scan_roots([data / "metal_plate"])
    train = ImageCache.build(train_samples(found), size, desc="decoding metal_plate enlarged")
    drawn = np.random.default_rng(seed).integers(0, len(train.images), count)
    images = flipped(train.images[drawn], np.random.default_rng(seed))
    samples = [Sample("metal_plate", Path(f"large/{i}.png"), "train", 0) for i in range(count)]
    defect = next(s for s in test_samples(found) if s.label == 1)
    return ImageCache(samples, images, {}), ImageCache.build([defect], size, desc="decoding a defect").images


def tiled_part(args: argparse.Namespace) -> dict:
    cfg = load_config("tiny")
    cfg.tiling = TilingConfig(source_size=args.large, stride=cfg.model.image_size)
    train, defect = large_cache(args.data, tuple(args.large), args.large_images, args.seed)
    model, seconds = built_model(cfg, train, args.seed)
    megapixels = args.large[0] * args.large[1] / 1e6
    return {"part": f"{args.large_images} images of {megapixels:.1f} MP, tiled", "tiles_per_image": cfg.tile_grid.count,
            "build_seconds": round(seconds, 1), "memory_rows": len(model.memory.tokens),
            "model_file_mb": round(file_size_mb(model, cfg, ["metal_plate"]), 1),
            "peak_rss_gib": round(peak_rss_gib(), 2), "_model": model, "_cfg": cfg, "_defect": defect}


def predict_large_part(args: argparse.Namespace) -> dict:
    """A 4.9 MP image predicted tiled, in a process that only loads the model file `--model`."""
    from mala.deploy.graph import load_graph

    graph, _ = load_graph(args.model)
    image = np.load(args.image)
    start = time.perf_counter()
    with torch.no_grad():
        score, anomaly_map = graph(torch.from_numpy(image))
    return {"part": "predict one large image, tiled", "seconds": round(time.perf_counter() - start, 1),
            "map_shape": list(anomaly_map.shape), "peak_rss_gib": round(peak_rss_gib(), 2)}


def run_part(part: str, args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, "--part", part, "--data", str(args.data), "--seed", str(args.seed),
               "--train-per-category", str(args.train_per_category), "--test-per-category", str(args.test_per_category),
               "--large", *map(str, args.large), "--large-images", str(args.large_images), *extra]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-category", type=int, default=300)
    parser.add_argument("--test-per-category", type=int, default=60)
    parser.add_argument("--large", type=int, nargs=2, default=[1920, 2560], metavar=("HEIGHT", "WIDTH"),
                        help="the large images' size [1920 2560: 4.9 MP]")
    parser.add_argument("--large-images", type=int, default=100)
    parser.add_argument("--part", choices=["categories", "tiled", "predict"])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--image", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.part == "categories":
        print(json.dumps(categories_part(args)))
    elif args.part == "tiled":
        result = tiled_part(args)
        model, cfg, defect = result.pop("_model"), result.pop("_cfg"), result.pop("_defect")
        save_checkpoint(args.model, {"kind": "model", "config": cfg.to_dict(), "data": {"categories": ["metal_plate"]},
                                     "model": model.state_dict()})
        np.save(args.image, defect)
        print(json.dumps(result))
    elif args.part == "predict":
        print(json.dumps(predict_large_part(args)))
    else:
        with tempfile.TemporaryDirectory() as folder:
            files = ["--model", f"{folder}/large.safetensors", "--image", f"{folder}/defect.npy"]
            results = [run_part("categories", args), run_part("tiled", args, *files), run_part("predict", args, *files)]
        text = json.dumps(results, indent=1)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)


if __name__ == "__main__":
    main()
