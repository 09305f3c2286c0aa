"""The tune protocol's candidates: the config's fusion first, then the grid; no share to choose without a score
memory, no global share without a trained global map; mirror views within the budget, averaged as the model does."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mala.eval.cost import view_flops
from mala.model import MALA
from mala.tune.protocol import (GLOBAL_SHARES, MEMORY_WEIGHTS, SCORE_MAP_SHARES, Fusion, candidates,
                                mirror_allowance, validation_views)
from tests.model.test_hybrid import hybrid_config, two_category_cache, two_category_model


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


def test_a_category_takes_the_mirror_views_whose_passes_stay_within_the_budget():
    model = two_category_model()[1]
    costs = [view_flops(model, section) / 1e9 for section in (0, 1)]
    assert all(cost > 0 for cost in costs)
    assert mirror_allowance(model, ["a", "b"], 0.0) == {"a": 0, "b": 0}  # no budget: never
    assert mirror_allowance(model, ["a", "b"], 0.99 * min(costs)) == {"a": 0, "b": 0}  # one pass is always made
    assert mirror_allowance(model, ["a", "b"], 2.01 * max(costs)) == {"a": 1, "b": 1}
    assert mirror_allowance(model, ["a", "b"], 100 * max(costs)) == {"a": 2, "b": 2}  # no more views than there are


def test_validation_views_average_each_categorys_parts_as_the_model_does():
    model, cache = two_category_model()[1], two_category_cache()
    sections = np.repeat([0, 1], 6)
    views = validation_views(model, cache, sections, {"a": 2, "b": 1})
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2).float() / 255
    model.set_section_mirrors(torch.tensor([2, 1]))
    with torch.no_grad():
        expected = model.mirrored(images, model.map_parts(images, torch.from_numpy(sections)))
    for name, value in expected.maps().items():
        torch.testing.assert_close(getattr(views[2], name)[:6], value[:6])  # a: both views
        torch.testing.assert_close(getattr(views[1], name)[6:], value[6:])  # b: its one view
        torch.testing.assert_close(getattr(views[2], name)[6:], value[6:])  # no second view for b: its first kept
        torch.testing.assert_close(getattr(views[0], name), getattr(model.map_parts(images, torch.from_numpy(
            sections), every_part=True), name))
