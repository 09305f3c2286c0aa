"""The tune protocol's candidates: the config's fusion first, then the grid; no share to choose without a score
memory, no global share without a trained global map."""

from __future__ import annotations

import dataclasses

import torch

from mala.model import MALA
from mala.tune.protocol import GLOBAL_SHARES, MEMORY_WEIGHTS, SCORE_MAP_SHARES, Fusion, candidates
from tests.model.test_hybrid import hybrid_config


def test_the_configs_fusion_comes_first_and_once_then_the_grid():
    model = MALA(hybrid_config(memory_weight=0.5, memory_norm="none", score_memory=True, score_map_share=0.33))
    fusions = candidates(model)
    assert fusions[0] == Fusion(0.5, 0.33) and len(fusions) == len(set(fusions))
    assert set(fusions) == {Fusion(w, s) for w in MEMORY_WEIGHTS for s in SCORE_MAP_SHARES}
    off_grid = MALA(dataclasses.replace(model.cfg, memory_weight=0.6))
    assert candidates(off_grid)[0] == Fusion(0.6, 0.33) and len(candidates(off_grid)) == 1 + len(fusions)


def test_without_a_score_memory_only_the_weight_is_chosen():
    model = MALA(hybrid_config(memory_weight=0.5, score_memory=False))
    assert candidates(model) == [Fusion(w, 0.0) for w in MEMORY_WEIGHTS]


def test_a_trained_global_map_adds_its_shares_to_the_grid_an_untrained_one_none():
    model = MALA(hybrid_config(memory_weight=0.5, memory_norm="none", score_memory=True, score_map_share=0.33,
                               global_map=True))
    assert {f.global_share for f in candidates(model)} == {0.0}  # untrained: no global map to share with
    model.global_map.scales = torch.ones(1)
    fusions = candidates(model)
    assert fusions[0] == Fusion(0.5, 0.33, 0.0) and len(fusions) == len(set(fusions))
    assert set(fusions) == {Fusion(w, s, g) for w in MEMORY_WEIGHTS for s in SCORE_MAP_SHARES for g in GLOBAL_SHARES}
