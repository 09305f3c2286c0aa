"""The int8 shortlist: real backbone tokens find their exact nearest row or one a few % farther, the int8 product
carries the rows' norms exactly, and what cannot use it (gradients, filling) searches exactly, while an exported
graph takes it too."""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch
from PIL import Image

from mala.model.backbone import FeatureTokens, TokenRecipe, pretrained_backbone
from mala.model.memory import FeatureMemory
from mala.model.search import (BLOCK, INT8_MAX, Int8Shortlist, exact_squared_distance, int8_search_available,
                               shortlisted_squared_distance)
from tests.conftest import shared_data

SIZE = 224


def metal_plate_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Raw stride-8 lite0 tokens (rows, C) of 8 normal training images, and those (queries, C) of 2 defective ones."""
    def load(paths: list) -> torch.Tensor:
        arrays = [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255 for p in paths]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    train = sorted((shared_data("metal_plate", "train", "good")).iterdir())[:8]
    test = sorted((shared_data("metal_plate", "test", "defect")).iterdir())[:2]
    tokens = FeatureTokens(pretrained_backbone("efficientnet_lite0", last_stage=4), (1, 2, 4), 16)
    with torch.no_grad():
        memory, queries = (tokens.at_strides(load(paths), ((8, TokenRecipe(1, "none")),))[0].flatten(0, 1)
                           for paths in (train, test))
    return memory, queries


def test_real_tokens_find_their_nearest_row_or_one_within_a_few_percent():
    # every token of 8 images, denser than the epsilon-net a model keeps (BENCHMARKS.md: 98.7 % exact, 1.1 % at most)
    rows, queries = metal_plate_tokens()
    assert len(rows) > 2 * BLOCK  # several blocks, each adding its own candidate
    exact = exact_squared_distance(queries, rows).sqrt()
    short = shortlisted_squared_distance(queries, rows, Int8Shortlist.of(rows)).sqrt()
    assert torch.allclose(exact, torch.cdist(queries, rows).amin(1), rtol=1e-4, atol=1e-3)
    assert bool((short >= exact * (1 - 1e-5)).all())  # always the distance to a real row
    assert float((short <= exact * (1 + 1e-5)).float().mean()) > 0.9
    assert float((short / exact).max()) < 1.05


def test_the_int8_product_holds_q_dot_r_less_half_the_rows_norm():
    torch.manual_seed(0)
    rows = torch.randn(300, 24) * torch.linspace(0.2, 40, 24)  # norms that need several norm columns
    shortlist = Int8Shortlist.of(rows)
    assert shortlist.norm_columns > 1
    queries = rows[:5] + 0.1
    product = torch._int_mm(shortlist.quantised_queries(queries), shortlist.blocks[0]).long()
    centred = rows - shortlist.mean
    quantised = lambda x: (x / shortlist.step).round().clamp(-INT8_MAX, INT8_MAX).long()  # noqa: E731
    half_norm = ((centred * centred).sum(1) / (2 * shortlist.step ** 2)).round().long()
    assert torch.equal(product, quantised(queries - shortlist.mean) @ quantised(centred).T - half_norm)


def test_a_memory_searches_exactly_where_the_shortlist_cannot_serve():
    torch.manual_seed(0)
    memory = FeatureMemory(16, int8_search=True)
    memory.fill(torch.randn(5000, 16), 2.0)
    queries = torch.randn(2, 50, 16)
    exact = torch.cdist(queries.flatten(0, 1), memory.tokens).amin(1).reshape(2, 50) / 2.0
    torch.testing.assert_close(memory.scaled_distance(queries, 0), exact, rtol=0.02, atol=0)
    assert int8_search_available(queries) and not int8_search_available(queries.requires_grad_())
    torch.testing.assert_close(memory.scaled_distance(queries, 0), exact, rtol=1e-4, atol=1e-4)
    with mock.patch("torch.compiler.is_exporting", return_value=True):  # an export's graph takes the shortlist too
        torch.testing.assert_close(memory.scaled_distance(queries.detach(), torch.tensor([0, 0])), exact,
                                   rtol=0.02, atol=0)
    memory.fill(torch.randn(100, 16), 1.0)  # a refilled memory builds its shortlist anew
    torch.testing.assert_close(memory.scaled_distance(queries.detach(), 0),
                               torch.cdist(queries.flatten(0, 1), memory.tokens).amin(1).reshape(2, 50),
                               rtol=0.02, atol=0)
