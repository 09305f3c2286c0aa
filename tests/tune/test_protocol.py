"""The tune protocol's candidates: the config's fusion first, then the grid; no share to choose without a score
memory, no global share without a trained global map; mirror views within the budget, averaged as the model does."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mala.eval.cost import search_flops, view_flops
from mala.model import MALA
from mala.tune.protocol import (GLOBAL_SHARES, MEMORY_WEIGHTS, SCORE_MAP_SHARES, CategoryChoice, Fusion, candidates,
                                choice_table, memory_growth, mirror_allowance, validation_views)
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
    # a section that will grow (twice the images in the model that ships) pays now for the search it will make
    searches = [search_flops(model, section) / 1e9 for section in (0, 1)]
    assert 0 < searches[0] < costs[0]
    grown = costs[0] + searches[0]
    assert mirror_allowance(model, ["a", "b"], 2.01 * grown, {"a": 2.0}) == {"a": 1, "b": 1}
    assert mirror_allowance(model, ["a", "b"], 1.99 * grown, {"a": 2.0})["a"] == 0


def test_a_sections_growth_counts_the_held_out_normal_images_the_final_memory_adds():
    model, cache = two_category_model()[1], two_category_cache()  # 6 images of each category in the memory
    held_out = cache.subset(np.array([0, 1, 6]))  # normal: two of a, one of b
    assert memory_growth(model, held_out, ["a", "b"]) == {"a": 8 / 6, "b": 7 / 6}


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


def test_the_choice_table_names_the_pick_its_views_and_how_many_the_budget_offered():
    choice = CategoryChoice({Fusion(0.5, 0.33): (90.0, 80.0), Fusion(0.5, 0.33, 0.0, 1): (91.0, 82.0)})
    row = choice_table({"a": choice}).splitlines()[-1]
    assert row == ("| a | memory weight 0.5, coarse share 0.33, mirrored left-right | 91.0 / 82.0 | memory weight 0.5, "
                   "coarse share 0.33 | 90.0 / 80.0 | 1 |")
