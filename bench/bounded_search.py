"""Could the map memory's exact search skip most rows? A lower bound from each section's first principal components
(|q - r|^2 >= |q_p - r_p|^2 + (|q_res| - |r_res|)^2, one matrix product of d + 1 columns) picks each query's k
likeliest rows; their exact distances are the answer where the best of them is under the (k+1)-th bound (certified),
and the full search answers the rest. Exact either way: the bench prints how many queries the bound certifies and
the time per image against the full search (`FeatureMemory.nearest_distance`), on one category's test images.

    python bench/bounded_search.py runs/s15_seed0 --category magnetic_tile \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mala.data.dataset import ImageCache, to_tensor  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.memory import FeatureMemory  # noqa: E402


class BoundedSearch:
    """The exact nearest distance, rows ruled out by a principal-component bound."""

    def __init__(self, memory: FeatureMemory, section: int, components: int, k: int):
        self.memory, self.section, self.k = memory, section, k
        self.rows = memory.section_rows(section)
        self.mean = self.rows.mean(0)
        centred = self.rows - self.mean
        self.basis = torch.linalg.svd(centred, full_matrices=False)[2][:components].T.contiguous()
        self.bound_rows = self.augmented(centred)
        self.bound_norms = (self.bound_rows ** 2).sum(1)

    def augmented(self, centred: torch.Tensor) -> torch.Tensor:
        """Each vector's components and the length of its residual, as one row."""
        projected = centred @ self.basis
        return torch.cat([projected, (centred - projected @ self.basis.T).norm(dim=1, keepdim=True)], 1)

    def __call__(self, queries: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Distances (Q,) of queries (Q, C) and the fraction the bound certified."""
        bound_queries = self.augmented(queries - self.mean)
        bounds = torch.addmm(self.bound_norms, bound_queries, self.bound_rows.T, alpha=-2)
        lowest, rows = bounds.topk(self.k + 1, dim=1, largest=False)
        lowest = lowest + (bound_queries ** 2).sum(1, keepdim=True)
        exact = ((self.rows[rows[:, :self.k]] - queries[:, None]) ** 2).sum(-1).amin(1)
        certified = exact <= lowest[:, self.k]
        distance = exact.clamp_min(0).sqrt()
        if not bool(certified.all()):
            distance[~certified] = self.memory.nearest_distance(queries[~certified], self.section)
        return distance, float(certified.float().mean())


def per_image_seconds(search: Callable[[torch.Tensor], object], queries: list[torch.Tensor], rounds: int = 3
                      ) -> float:
    """The median over `rounds` of the mean time per image."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for image_queries in queries:
            search(image_queries)
        times.append((time.perf_counter() - start) / len(queries))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--category", required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--components", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--k", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg, info = load_trained_model(args.run)
    section = info["categories"].index(args.category)
    samples = [s for s in test_samples(scan_roots(args.data, info["categories"])) if s.category == args.category]
    cache = ImageCache.build(samples[:args.images], cfg.input_shape)
    with torch.no_grad():
        queries = [model.logits_and_features(to_tensor(image)[None])[1][0] for image in cache.images]
    memory = model.memory
    full = per_image_seconds(lambda q: memory.nearest_distance(q, section), queries)
    print(f"{args.category}: {memory.section_rows(section).shape[0]} rows, {queries[0].shape[0]} queries an image; "
          f"full search {1000 * full:.1f} ms an image\n| components | k | certified | ms an image | speed-up |\n"
          "|---|---|---|---|---|")
    for components in args.components:
        for k in args.k:
            search = BoundedSearch(memory, section, components, k)
            certified = statistics.mean(search(q)[1] for q in queries)
            seconds = per_image_seconds(search, queries)
            print(f"| {components} | {k} | {100 * certified:.1f} % | {1000 * seconds:.1f} | {full / seconds:.2f} |")


if __name__ == "__main__":
    main()
