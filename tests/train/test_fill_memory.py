"""Filling the normal-feature memory: a section per category that does not depend on the others, routing by image
features, and an epsilon-net that keeps every token within its radius and thins repeats."""

import numpy as np
import torch

from mala.data.dataset import ImageCache
from mala.data.images import read_rgb
from mala.data.sources import scan_roots, train_samples
from mala.model import MALA
from mala.model.memory import FeatureMemory, MemorySection
from mala.train.fill_memory import (cover, fill_memory, held_out_scale, thin_sections, thinned, with_scales,
                                   within_size)
from tests.conftest import shared_data
from tests.model.test_hybrid import hybrid_config


def _nearest(queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    memory = FeatureMemory(tokens.shape[1])
    memory.fill(tokens, 1.0)
    return memory.nearest_distance(queries)


def test_cover_keeps_every_token_within_the_radius_and_drops_repeats():
    torch.manual_seed(0)
    centres = torch.randn(50, 16) * 10
    tokens = (centres.repeat_interleave(100, dim=0) + 0.05 * torch.randn(5000, 16))  # 50 tight clusters
    kept = cover(tokens, radius=1.0, seed=0)
    assert 50 <= len(kept) <= 60  # about one token per cluster
    assert _nearest(tokens, kept).max() <= 1.0 + 1e-4  # the covering guarantee
    assert (torch.cdist(kept, kept) + 1e9 * torch.eye(len(kept))).min() > 1.0  # kept tokens lie apart
    # a query's distance to the net is within the radius of its distance to all tokens
    queries = torch.randn(200, 16) * 10
    assert (_nearest(queries, kept) - _nearest(queries, tokens)).max() <= 1.0 + 1e-4


def test_cover_of_radius_zero_keeps_distinct_tokens_and_is_seeded():
    tokens = torch.randn(3000, 8)
    assert len(cover(tokens, radius=0.0, seed=0)) == 3000
    assert torch.equal(cover(tokens, 0.5, seed=3), cover(tokens, 0.5, seed=3))


def test_the_scale_and_the_net_show_their_progress(capsys):
    tokens = torch.randn(20, 500, 8)
    assert held_out_scale(tokens, np.random.default_rng(0)) > 0
    assert len(cover(tokens.flatten(0, 1), radius=1.0, seed=0)) > 0
    err = capsys.readouterr().err
    assert "memory scale" in err and "memory epsilon-net: 10000/10000 token (100%)" in err


def _real_cache(categories: list[str], count: int = 5) -> ImageCache:
    samples = [s for category in categories for s in train_samples(scan_roots([shared_data(category)]))[:count]]
    return ImageCache.build(samples, 64, desc="decoding")


def _filled(cache: ImageCache) -> MALA:
    model = MALA(hybrid_config(memory_weight=1.0, memory_radius=0.5)).eval()
    fill_memory(model, cache, seed=0)
    return model


def _section(model: MALA, k: int) -> tuple[torch.Tensor, float, torch.Tensor]:
    memory = model.memory
    return memory.section_rows(k), float(memory.scales[k]), memory.image_features[memory.image_sections == k]


def test_each_category_gets_its_own_section_whatever_else_the_model_holds():
    both = _filled(_real_cache(["magnetic_tile", "metal_plate"]))
    alone = _filled(_real_cache(["metal_plate"]))
    assert both.memory.section_count == 2 and alone.memory.section_count == 1
    for got, want in zip(_section(both, 1), _section(alone, 0)):  # metal_plate comes second in sorted order
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(want))
    assert _section(both, 0)[1] != _section(both, 1)[1]  # each its own scale
    assert len(both.memory.image_features) == 10  # one routing feature per training image


def test_test_images_are_routed_to_their_own_category():
    model = _filled(_real_cache(["magnetic_tile", "metal_plate"]))
    for place, category in enumerate(["magnetic_tile", "metal_plate"]):
        files = sorted(shared_data(category, "test").rglob("*.*"))[::25][:6]
        images = torch.from_numpy(np.stack([read_rgb(path, 64) for path in files])).permute(0, 3, 1, 2) / 255
        with torch.no_grad():
            assert model.memory.route(model.memory_features(images)).tolist() == [place] * len(files), category


def test_a_category_of_one_image_takes_the_median_scale_and_the_size_limit_cuts_every_section_alike():
    sections = [MemorySection(torch.randn(n, 4), scale, torch.zeros(1, 4))
                for n, scale in [(100, 1.0), (300, float("nan")), (600, 3.0)]]
    scaled = with_scales(sections)
    assert [s.scale for s in scaled] == [1.0, 2.0, 3.0]
    cut = within_size(scaled, 500, np.random.default_rng(0))
    assert [len(s.tokens) for s in cut] == [50, 150, 300]
    assert within_size(scaled, 1000, np.random.default_rng(0)) is scaled


def test_a_cut_section_keeps_a_row_near_every_row_it_drops_where_a_random_cut_leaves_rare_parts_uncovered():
    generator = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(20, 16, generator=generator)  # one common part and 19 rare ones of 10 rows each
    sizes = [1810] + [10] * 19
    tokens = torch.cat([c + 0.1 * torch.randn(n, 16, generator=generator) for c, n in zip(centres, sizes)])
    section = MemorySection(tokens, 1.0, torch.zeros(1, 16))
    cut = thinned(section, 100, np.random.default_rng(0))
    assert len(cut.tokens) == 100
    rows = {tuple(row.tolist()) for row in tokens}
    assert all(tuple(row.tolist()) in rows for row in cut.tokens)  # rows of the section, not new ones
    part = torch.cdist(cut.tokens, centres).argmin(dim=1)
    assert set(part.tolist()) == set(range(20))  # every part keeps a row
    farthest = torch.cdist(tokens, cut.tokens).amin(dim=1).max()
    at_random = tokens[torch.from_numpy(np.random.default_rng(0).permutation(len(tokens))[:100])]
    assert farthest < 0.5 * torch.cdist(tokens, at_random).amin(dim=1).max()


def test_the_section_limit_cuts_only_the_sections_above_it_to_a_subset_of_their_rows_before_the_total_limit():
    sections = [MemorySection(torch.arange(n * 4, dtype=torch.float32).reshape(n, 4), 1.0, torch.zeros(1, 4))
                for n in (100, 300, 600)]
    cut = within_size(sections, 10_000, np.random.default_rng(0), section_limit=250)
    assert [len(s.tokens) for s in cut] == [100, 250, 250]
    assert cut[0] is sections[0]
    for kept, whole in zip(cut[1:], sections[1:]):  # distinct rows of the section, in their order
        first = kept.tokens[:, 0].long() // 4
        assert bool((first[1:] > first[:-1]).all()) and int(first.max()) < len(whole.tokens)
        torch.testing.assert_close(kept.tokens, whole.tokens[first])
    assert [len(s.tokens) for s in within_size(sections, 400, np.random.default_rng(0), section_limit=250)] == [
        66, 166, 166]  # then the total limit: 600 rows cut to 400, each by the same share


def test_the_scale_searched_block_by_block_equals_the_quantile_over_all_other_images(monkeypatch):
    import mala.train.fill_memory as fill

    tokens = torch.randn(40, 50, 8)
    monkeypatch.setattr(fill, "SCALE_BLOCK_ROWS", 120)  # blocks of 2 images
    scale = held_out_scale(tokens, np.random.default_rng(5))
    held_out = np.random.default_rng(5).permutation(40)[:4]
    others = np.setdiff1d(np.arange(40), held_out)
    nearest = torch.cdist(tokens[held_out].flatten(0, 1), tokens[others].flatten(0, 1)).amin(1)
    assert abs(scale - float(torch.quantile(nearest, fill.SCALE_QUANTILE))) < 1e-4


def test_thinning_a_filled_memory_keeps_each_section_within_its_own_radius():
    torch.manual_seed(0)
    sections = [MemorySection(torch.randn(800, 4) * (k + 1), 0.5 * (k + 1), torch.randn(3, 4)) for k in range(2)]
    memory = FeatureMemory(4)
    memory.fill_sections(sections)
    thin_sections(memory, radius=1.0, seed=0)
    assert memory.section_count == 2 and len(memory.tokens) < 1600
    for k, section in enumerate(sections):
        assert memory.nearest_distance(section.tokens, k).max() <= 1.0 * section.scale + 1e-4
        assert torch.equal(memory.image_features[memory.image_sections == k], section.image_features)
