"""Filling the normal-feature memory: the epsilon-net keeps every token within its radius, and thins repeats."""

import numpy as np
import torch

from mala.model.memory import FeatureMemory
from mala.train.fill_memory import cover, held_out_scale


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
