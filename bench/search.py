"""The normal-feature memory's nearest-neighbour search at scale: the exact torch search against faiss-cpu's exact,
inverted-file, graph and product-quantised indexes, on real backbone tokens (the issue "The search at scale").

    python bench/search.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        --extra ../shared/data/deeppcb/pcb ../shared/data/pv_el_cells/el_multi ../shared/data/pv_el_cells/el_mono \
        --synthetic-rows 700000 --tokens /tmp/search_tokens.pt --out search.json

The tokens are the `tiny` preset's untrained hybrid's `feature_tokens` (the frozen ImageNet backbone's, so training
would not change them). Banks searched, smallest first:
  section_300    an epsilon-net (radius `memory_radius` x held-out scale, as `mala.train.fill_memory`) of 300 training
                 images of the first --data category: one category's section of the users' 15 x 300-image model
  section_<cat>  each --data category's epsilon-net of all its training images, searched by its own test images:
                 the banks of the image and pixel AUROC columns
  sections       the epsilon-nets of every category (--data and --extra) together: a whole multi-category memory
  raw            every training token of every category, not thinned
  synthetic      `raw` stacked and jittered up to --synthetic-rows rows: how time and size grow
Per bank and method: build seconds, milliseconds per 224-px image (its 196 tokens searched at once, batch 1, the
median of timed calls, two threads), that time over the exact torch search's in the same run, the index's bytes,
recall (the returned neighbour is an exact nearest one) and mean relative error of the returned distance. Writes
JSON to --out and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.memory_sections import subset  # noqa: E402
from mala.config import load_config  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.memory import FeatureMemory  # noqa: E402
from mala.train.fill_memory import cover, held_out_scale  # noqa: E402

THREADS = 2
SECTION_IMAGES = 300  # images per category in the users' model (15 categories)
TIMING_SECONDS = 2.0  # timed calls per method stop after this long (at least MIN_CALLS)
MIN_CALLS = 5
RECALL_IMAGES = 10  # test images per category whose tokens measure recall on the large banks
SEED = 0
# queries (Q, C) -> (nearest distances, their rows: -1 where none was found; None from the torch search)
Search = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class Method:
    name: str
    factory: str  # faiss.index_factory's description; "" is the exact torch search
    params: str = ""  # faiss.ParameterSpace's query-time settings

    @property
    def exact_torch(self) -> bool:
        return not self.factory


def methods(rows: int, channels: int) -> list[Method]:
    """The searches compared on a bank of `rows` tokens: an inverted file of about sqrt(rows) lists (faiss's
    guideline is 4..16 x sqrt; fewer lists keep k-means short on two cores and the probed share the same), product
    quantisation of 4 and 8 dimensions per byte."""
    nlist = int(min(1024, max(16, 2 ** round(np.log2(np.sqrt(rows))))))
    ivf, pq4, pq8 = f"IVF{nlist},Flat", f"PQ{channels // 4}", f"PQ{channels // 8}"
    return [Method("exact torch", ""), Method("Flat", "Flat"),
            *[Method(f"{ivf} nprobe={probe}", ivf, f"nprobe={probe}") for probe in (4, 16, 64) if probe < nlist],
            *[Method(f"HNSW32 efSearch={ef}", "HNSW32", f"efSearch={ef}") for ef in (16, 64)],
            Method(pq4, pq4), Method(pq8, pq8),
            Method(f"IVF{nlist},{pq4} nprobe=16", f"IVF{nlist},{pq4}", "nprobe=16")]


def torch_search(bank: torch.Tensor) -> tuple[Search, int]:
    """The memory's exact search, and its bytes; it returns distances only, as the map needs no neighbour."""
    memory = FeatureMemory(bank.shape[1])
    memory.fill(bank, 1.0)

    def search(queries: np.ndarray) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            return memory.nearest_distance(torch.from_numpy(queries)).numpy(), None
    return search, bank.numel() * bank.element_size()


def faiss_search(index: faiss.Index, params: str) -> Search:
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)

    def search(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        squared, rows = index.search(queries, 1)
        return np.sqrt(np.maximum(squared[:, 0], 0)), rows[:, 0]  # L2 indexes return squared distances
    return search


def prepared(method: Method, bank: torch.Tensor, built: dict[str, tuple[faiss.Index, float]]) -> tuple[Search, int, float]:
    """`method`'s search on `bank`, its bytes and build seconds; `built` keeps the faiss indexes by factory, as the
    methods that differ only in query-time settings share one."""
    if method.exact_torch:
        start = time.perf_counter()
        search, size = torch_search(bank)
        return search, size, time.perf_counter() - start
    if method.factory not in built:
        start = time.perf_counter()
        index = faiss.index_factory(bank.shape[1], method.factory, faiss.METRIC_L2)
        if hasattr(index, "do_polysemous_training"):
            # the factory's PQ indexes also learn a Hamming-filter code order that plain searches never use: a minute
            # of 2 threads on a 3k-row bank, 40 x the quantiser itself
            index.do_polysemous_training = False
        array = bank.numpy()
        index.train(array)
        index.add(array)
        built[method.factory] = index, time.perf_counter() - start
    index, seconds = built[method.factory]
    return faiss_search(index, method.params), faiss.serialize_index(index).nbytes, seconds


def per_image_seconds(search: Search, images: list[np.ndarray]) -> float:
    """The median of timed batch-1 calls, cycling over `images` (N, C) until TIMING_SECONDS have passed."""
    search(images[0])  # warm-up: first-call allocations are not the steady state
    times: list[float] = []
    while len(times) < MIN_CALLS or sum(times) < TIMING_SECONDS:
        queries = images[len(times) % len(images)]
        start = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def accuracy(distances: np.ndarray, rows: np.ndarray | None, exact: np.ndarray, queries: np.ndarray,
             bank: np.ndarray) -> dict[str, float]:
    """Recall: the returned row's true distance equals the exact nearest one (ties count); the returned distance's
    mean relative error (product quantisation returns a distance to a compressed row)."""
    if rows is None:
        true = distances
    else:
        true = np.where(rows >= 0, np.linalg.norm(queries - bank[np.maximum(rows, 0)], axis=1), np.inf)
    error = np.abs(distances - exact) / np.maximum(exact, 1e-6)
    return {"recall": float(np.mean(true <= exact * (1 + 1e-4) + 1e-5)), "mean_relative_error": float(error.mean())}


def aurocs(distances: np.ndarray, grid: int, size: int, labels: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Image (map maximum) and pixel AUROC of the memory-only map: nearest distances (images x grid^2) on the
    token grid, upsampled bilinearly to `size`."""
    maps = F.interpolate(torch.from_numpy(distances).reshape(-1, 1, grid, grid), size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0].numpy()
    return {"image_auroc": float(roc_auc_score(labels, maps.reshape(len(maps), -1).max(1))),
            "pixel_auroc": float(roc_auc_score(masks.ravel(), maps.ravel()))}


@dataclass
class Category:
    name: str
    train: torch.Tensor  # (images, N, C)
    test: torch.Tensor  # (images, N, C)
    labels: np.ndarray  # (images,) 1 anomalous
    masks: np.ndarray  # (images, H, W) bool


@torch.no_grad()
def feature_tokens(model: MALA, cache: ImageCache, batch: int = 16) -> torch.Tensor:
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2)
    return torch.cat([model.feature_tokens(images[i:i + batch].float() / 255) for i in range(0, len(images), batch)])


def load_categories(roots: list[str], model: MALA, size: int, with_test: bool) -> list[Category]:
    samples = scan_roots(roots)
    train, test = ImageCache.build(train_samples(samples), size), None
    if with_test:
        test = ImageCache.build(test_samples(samples), size)
    categories = []
    for name, chosen in train.indices_by_category().items():
        test_chosen = test.indices_by_category()[name] if with_test else np.array([], dtype=int)
        categories.append(Category(
            name, feature_tokens(model, subset(train, chosen)), feature_tokens(model, subset(test, test_chosen))
            if with_test else torch.empty(0),
            np.array([test.samples[i].label for i in test_chosen]),
            np.stack([test.mask(i) for i in test_chosen]) if with_test else np.empty(0)))
    return categories


def cached_categories(args: argparse.Namespace) -> tuple[list[Category], list[Category]]:
    """The --data and --extra categories' tokens, from --tokens when an earlier run stored them there."""
    if args.tokens and Path(args.tokens).exists():
        stored = torch.load(args.tokens, weights_only=True)  # tensors only: a file never runs code when read
        return [stored_category(c) for c in stored["evaluated"]], [stored_category(c) for c in stored["extra"]]
    model = MALA(load_config(args.preset).model).eval()
    evaluated = load_categories(args.data, model, args.size, with_test=True)
    extra = load_categories(args.extra, model, args.size, with_test=False) if args.extra else []
    if args.tokens:  # plain dicts of tensors: the file loads with weights_only, as __main__ or as bench.search
        torch.save({"evaluated": [storable(c) for c in evaluated], "extra": [storable(c) for c in extra]}, args.tokens)
    return evaluated, extra


def storable(category: Category) -> dict:
    """A category as a dict of a string and tensors (numpy arrays would need unpickling)."""
    return {**asdict(category), "labels": torch.from_numpy(category.labels), "masks": torch.from_numpy(category.masks)}


def stored_category(stored: dict) -> Category:
    return Category(**{**stored, "labels": stored["labels"].numpy(), "masks": stored["masks"].numpy()})


def section(train: torch.Tensor, radius: float) -> tuple[torch.Tensor, float]:
    """A category's epsilon-net as `fill_memory` makes it, and the held-out scale it was made with."""
    scale = held_out_scale(train, np.random.default_rng(SEED))
    return cover(train.flatten(0, 1), radius * scale, SEED), scale


def synthetic(raw: torch.Tensor, rows: int, scale: float) -> torch.Tensor:
    """`raw` stacked to `rows`, each copy jittered by a quarter of the normal distance scale so no row repeats."""
    copies = -(-rows // len(raw))
    generator = torch.Generator().manual_seed(SEED)
    stacked = raw.repeat(copies, 1)[:rows]
    return stacked + torch.randn(stacked.shape, generator=generator) * (0.25 * scale / raw.shape[1] ** 0.5)


@dataclass
class Bank:
    name: str
    tokens: torch.Tensor  # (rows, C)
    queries: list[np.ndarray]  # per test image (N, C): timing and recall
    category: Category | None = None  # searched by all its test images for the AUROC columns


def banks(evaluated: list[Category], extra: list[Category], radius: float, synthetic_rows: int,
          section_rows: dict[str, int]) -> list[Bank]:
    """The banks of the module docstring; `section_rows` gets every category's 300-image section's rows."""
    timing = [image.numpy() for category in evaluated for image in category.test[:RECALL_IMAGES]]
    nets300, nets, scales = [], [], []
    for category in evaluated + extra:
        net, scale = section(category.train[:SECTION_IMAGES], radius)
        section_rows[category.name] = len(net)
        nets300.append(net)
        scales.append(scale)
        nets.append(net if len(category.train) <= SECTION_IMAGES else section(category.train, radius)[0])
    found = [Bank("section_300", nets300[0], timing)]
    found += [Bank(f"section_{c.name}", net, [image.numpy() for image in c.test], c) for c, net in zip(evaluated, nets)]
    raw = torch.cat([category.train.flatten(0, 1) for category in evaluated + extra])
    found += [Bank("sections", torch.cat(nets), timing), Bank("raw", raw, timing)]
    if synthetic_rows > len(raw):
        found.append(Bank("synthetic", synthetic(raw, synthetic_rows, float(np.median(scales))), timing))
    return found


def measure(bank: Bank, method: Method, built: dict[str, tuple[faiss.Index, float]],
            exact: np.ndarray, recall_queries: np.ndarray) -> dict:
    """One table row: build, time, size and accuracy of `method` on `bank`."""
    search, size, build_s = prepared(method, bank.tokens, built)
    row = {"bank": bank.name, "rows": len(bank.tokens), "method": method.name, "build_s": build_s,
           "ms_per_image": 1000 * per_image_seconds(search, bank.queries), "bytes": int(size),
           **accuracy(*search(recall_queries), exact, recall_queries, bank.tokens.numpy())}
    if bank.category is not None:
        distances = np.stack([search(image)[0] for image in bank.queries])
        masks = bank.category.masks
        row |= aurocs(distances, int(len(bank.queries[0]) ** 0.5), masks.shape[-1], bank.category.labels, masks)
    return row


def run_bank(bank: Bank) -> list[dict]:
    """Every method's row on `bank`, the exact torch search's first: the in-run reference of the time ratios."""
    recall_queries = np.concatenate(bank.queries[:2 * RECALL_IMAGES])
    exact = torch_search(bank.tokens)[0](recall_queries)[0]
    built: dict[str, tuple[faiss.Index, float]] = {}
    rows: list[dict] = []
    for method in methods(len(bank.tokens), bank.tokens.shape[1]):
        row = measure(bank, method, built, exact, recall_queries)
        row["time_over_exact"] = row["ms_per_image"] / (rows[0] if rows else row)["ms_per_image"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| bank | rows | method | build s | ms / image | x exact | MB | recall | rel. error | image AUROC "
             "| pixel AUROC |", "|" + "---|" * 11]
    for row in rows:
        auroc = [f"{100 * row[key]:.2f}" if key in row else "" for key in ("image_auroc", "pixel_auroc")]
        lines.append(f"| {row['bank']} | {row['rows']} | {row['method']} | {row['build_s']:.2f} | "
                     f"{row['ms_per_image']:.2f} | {row['time_over_exact']:.2f} | {row['bytes'] / 2**20:.1f} | "
                     f"{row['recall']:.3f} | {row['mean_relative_error']:.4f} | {auroc[0]} | {auroc[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="categories evaluated (their test images query)")
    parser.add_argument("--extra", nargs="*", default=[], help="more categories' training images, for the big banks")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--radius", type=float, default=None, help="epsilon-net radius (default: the preset's)")
    parser.add_argument("--synthetic-rows", type=int, default=0)
    parser.add_argument("--tokens", help="a .pt file storing the tokens between runs (outside the repository)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    faiss.omp_set_num_threads(THREADS)
    radius = args.radius if args.radius is not None else load_config(args.preset).model.memory_radius
    evaluated, extra = cached_categories(args)
    section_rows: dict[str, int] = {}
    found = banks(evaluated, extra, radius, args.synthetic_rows, section_rows)
    print(json.dumps({"section_300_rows": section_rows}), flush=True)
    rows = [row for bank in found for row in run_bank(bank)]
    result = {"date": time.strftime("%Y-%m-%d"), "command": sys.argv, "threads": THREADS, "radius": radius,
              "faiss": faiss.__version__, "torch": torch.__version__, "section_300_rows": section_rows,
              "methods_on_largest_bank": [asdict(m) for m in methods(len(found[-1].tokens), found[-1].tokens.shape[1])],
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
