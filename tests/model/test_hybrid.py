"""The hybrid encoder: backbone features become tokens, the backbone never trains, the memory finds neighbours."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mala.checkpoint import save_checkpoint
from mala.model.load import load_trained_model
from mala.config import MalaConfig, ModelConfig
from mala.data.dataset import ImageCache
from mala.data.samples import Sample
from mala.errors import ConfigError
from mala.model import MALA
from mala.model.backbone import TokenRecipe, layer_normed
from mala.model.mala import MapParts
from mala.model.memory import FeatureMemory
from mala.train.fill_memory import fill_memory


def hybrid_config(**changes) -> ModelConfig:
    base = ModelConfig(image_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=2, decoder_embed_dim=32,
                       decoder_depth=1, decoder_num_heads=2, plpm_width=8, backbone="efficientnet_lite0")
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("stride,tbm_tokens", [(16, "encoder"), (8, "backbone")])
def test_tokens_on_the_grid_and_maps_at_image_size(stride, tbm_tokens):
    model = MALA(hybrid_config(patch_size=stride, tbm_tokens=tbm_tokens)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.feature_tokens(images)
        assert tokens.shape == (2, (64 // stride) ** 2, 40 + 112)
        assert model.reconstruct(images, 0.75).image.shape == images.shape
        maps = model(images)
    assert maps.shape == (2, 64, 64) and 0 <= float(maps.min()) and float(maps.max()) <= 1


def test_the_memory_reads_its_own_finer_grid_from_the_same_backbone_pass():
    model = MALA(hybrid_config(memory_stride=8, memory_weight=0.5)).eval()
    fine = MALA(hybrid_config(patch_size=8)).eval()  # the same frozen backbone, its tokens on the stride-8 grid
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        on_grid, for_memory, for_score = model.backbone_tokens(images)
        assert for_score is None  # no score memory
        torch.testing.assert_close(on_grid, model.feature_tokens(images))
        torch.testing.assert_close(for_memory, fine.feature_tokens(images))
        model.memory.fill(for_memory.flatten(0, 1), 1.0)
        assert float(model.memory_map(for_memory).max()) < 0.05  # its own tokens are in the memory (float32 search)
        assert model(images).shape == (2, 64, 64)


def test_the_memory_can_read_raw_unpooled_features_while_the_vit_keeps_its_tokens():
    model = MALA(hybrid_config(memory_stride=8, memory_pool=1, memory_norm="none", memory_weight=0.5)).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        on_grid, for_memory, _ = model.backbone_tokens(images)
        stage2, stage4 = model.feature_tokens.backbone.features(images, (2, 4))
        torch.testing.assert_close(on_grid, model.feature_tokens(images))  # the ViT's tokens do not change
        # stride 8: the stage-2 map's own cells, raw; the stage-4 map upsampled to them
        torch.testing.assert_close(for_memory[..., :40], stage2.flatten(2).transpose(1, 2))
        assert for_memory.shape == (2, 64, 40 + 112)
        norms = for_memory.norm(dim=-1)
        assert not torch.allclose(norms, torch.full((2, 64), 152**0.5), rtol=0.1)  # not layer-normed
        model.memory.fill(for_memory.flatten(0, 1), float(norms.mean()) / 10)  # raw features need their own scale
        assert float(model.memory_map(for_memory).max()) < 0.05
        assert model(images).shape == (2, 64, 64)


def test_an_encoder_of_depth_0_gives_maps_and_trains_its_decoder():
    model = MALA(hybrid_config(depth=0, tbm_tokens="backbone"))
    assert len(model.blocks) == 0
    model.set_stage(2)
    model.train()
    logits = model.map_logits(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 2, 64, 64)
    logits.mean().backward()
    assert model.decoder_blocks[0].attn.qkv.weight.grad is not None


def test_the_backbone_never_trains_and_never_changes():
    model = MALA(hybrid_config())
    before = {k: v.clone() for k, v in model.feature_tokens.state_dict().items()}
    for stage in (1, 2):
        model.set_stage(stage)
        model.train()
        assert not any(p.requires_grad for p in model.feature_tokens.parameters())
        assert not model.feature_tokens.backbone.training
    model.set_stage(1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images = torch.rand(2, 3, 64, 64)
    (model.reconstruct(images, 0.75).image - images).abs().mean().backward()
    optimizer.step()
    assert model.patch_embed.proj.weight.grad is not None
    for key, value in model.feature_tokens.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_an_image_size_off_the_backbone_stride_is_refused():
    with pytest.raises(ConfigError, match="a multiple of 16 .patch size 8 and the backbone's strides"):
        MALA(hybrid_config(image_size=72, patch_size=8))


def test_memory_distances_match_brute_force():
    memory = FeatureMemory(channels=5)
    rows = torch.randn(40_000, 5)  # more than one chunk
    memory.fill(rows, 1.0)
    queries = torch.randn(3, 7, 5)
    expected = torch.cdist(queries.reshape(-1, 5), rows).amin(1).reshape(3, 7)
    torch.testing.assert_close(memory.nearest_distance(queries), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("memory_stride", [0, 8])
def test_a_normal_image_is_far_from_the_memory_only_where_it_was_changed(memory_stride):
    model = MALA(hybrid_config(memory_weight=1.0, memory_stride=memory_stride)).eval()
    memory_stride_share = 4 if memory_stride == 8 else 1  # tokens an image has on the memory's grid, per 16 x 16
    cache = gradient_cache(6)
    fill_memory(model, cache, seed=0)
    assert model.memory.tokens.shape == (6 * 16 * memory_stride_share, 152) and float(model.memory.scales[0]) > 0
    test = torch.from_numpy(cache.images[:1]).permute(0, 3, 1, 2).float() / 255
    changed = test.clone()
    changed[:, :, 16:32, 16:32] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        normal_map, changed_map = model(test), model(changed)
    assert float(changed_map[0, 16:32, 16:32].mean()) > 2 * float(normal_map[0, 16:32, 16:32].mean())
    assert float(changed_map[0, 16:32, 16:32].mean()) > float(changed_map[0, 48:, 48:].mean())


def gradient_cache(count: int) -> ImageCache:
    """`count` noisy copies of a horizontal gray ramp (64 px), as training images of one category."""
    rng = np.random.default_rng(0)
    base = (np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3))).astype(np.uint8)
    images = [np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
              for _ in range(count)]
    return ImageCache([Sample("gradient", Path(f"n{i}.png"), "train", 0) for i in range(count)], np.stack(images), {})


def test_a_score_memory_holds_the_layer_normed_tokens_and_changes_the_score_not_the_map(tmp_path):
    cfg = MalaConfig(model=hybrid_config(memory_pool=1, memory_norm="none", memory_weight=0.5, score_memory=True))
    model = MALA(cfg.model).eval()
    cache = gradient_cache(6)
    fill_memory(model, cache, seed=0)
    raw, normed = model.memory.tokens, model.score_memory.tokens
    assert len(raw) and len(normed) and not torch.allclose(raw.std(dim=1), torch.ones(len(raw)), atol=0.05)
    torch.testing.assert_close(normed.std(dim=1, unbiased=False), torch.ones(len(normed)), atol=1e-3, rtol=0)
    assert float(model.score_memory.scales[0]) != float(model.memory.scales[0])  # a scale of its own
    one_memory = MALA(dataclasses.replace(cfg.model, score_memory=False)).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("score_memory.")}
    one_memory.prepare_to_load(state)
    one_memory.load_state_dict(state)
    test = torch.from_numpy(cache.images[:1]).permute(0, 3, 1, 2).float() / 255
    changed = test.clone()
    changed[:, :, 16:32, 16:32] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        maps = model.maps(torch.cat([test, changed]))
        torch.testing.assert_close(maps[:, 0], one_memory(torch.cat([test, changed])))  # the map: the raw memory's
        learned = torch.softmax(model.map_logits(torch.cat([test, changed])), dim=1)[:, 0]
    assert not torch.allclose(maps[:, 1], maps[:, 0])
    # the score's map: stage 2 plus the layer-normed memory, which sees the changed square
    normal, anomalous = (maps[:, 1] - (1 - 0.75) * learned) / 0.75
    assert float(anomalous[16:32, 16:32].mean()) > 2 * float(normal[16:32, 16:32].mean())
    assert float(anomalous[16:32, 16:32].mean()) > float(anomalous[48:, 48:].mean())
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded, _, _ = load_trained_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(changed), maps[1:])


def test_a_score_memory_on_its_own_coarser_grid_holds_that_grids_tokens_and_leaves_the_map_alone():
    cfg = hybrid_config(memory_stride=8, memory_pool=1, memory_norm="none", memory_weight=0.5, score_memory=True,
                        score_memory_stride=16)
    model, one_grid = MALA(cfg).eval(), MALA(dataclasses.replace(cfg, score_memory_stride=0)).eval()
    one_grid.load_state_dict(model.state_dict(), strict=False)  # the same stage-2 weights; memories filled below
    cache = gradient_cache(6)
    fill_memory(model, cache, seed=0)
    fill_memory(one_grid, cache, seed=0)
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # every token kept (radius 0), in image order: the stride-16 grid's raw tokens layer-normed
        coarse = model.feature_tokens.at_strides(images, ((16, TokenRecipe(1, "none")),))[0]
    assert model.memory.tokens.shape[0] == 6 * 8 * 8 and model.score_memory.tokens.shape[0] == 6 * 4 * 4
    torch.testing.assert_close(model.score_memory.tokens, layer_normed(coarse).flatten(0, 1))
    torch.testing.assert_close(model.memory.tokens, one_grid.memory.tokens)
    changed = images[:1].clone()
    changed[:, :, 16:32, 16:32] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        maps, same_map = model.maps(torch.cat([images[:1], changed])), one_grid.maps(torch.cat([images[:1], changed]))
    torch.testing.assert_close(maps[:, 0], same_map[:, 0])  # the anomaly map does not depend on the score's grid
    assert not torch.allclose(maps[:, 1], same_map[:, 1])
    assert float(maps[1, 1, 16:32, 16:32].mean()) > float(maps[0, 1, 16:32, 16:32].mean())  # the score sees it


def test_a_score_map_share_mixes_the_coarse_grids_distances_into_the_anomaly_map():
    cfg = hybrid_config(memory_stride=8, memory_pool=1, memory_norm="none", memory_weight=0.5, score_memory=True,
                        score_memory_stride=16, score_memory_weight=0.5, memory_sigma=0)
    fine_only, mixed, coarse_only = (MALA(dataclasses.replace(cfg, score_map_share=share)).eval()
                                     for share in (0.0, 0.33, 1.0))
    cache = gradient_cache(6)
    fill_memory(fine_only, cache, seed=0)
    for model in (mixed, coarse_only):
        state = fine_only.state_dict()
        model.prepare_to_load(state)
        model.load_state_dict(state)
    images = torch.from_numpy(cache.images[:1]).permute(0, 3, 1, 2).float() / 255
    changed = images.clone()
    changed[:, :, 16:32, 16:32] = torch.rand(1, 3, 16, 16)
    batch = torch.cat([images, changed])
    with torch.no_grad():
        learned = torch.softmax(fine_only.map_logits(batch), dim=1)[:, 0]
        _, fine_tokens, coarse_tokens = fine_only.backbone_tokens(batch)
        fine = fine_only.memory.scaled_distance(fine_tokens, 0).reshape(2, 1, 8, 8)
        coarse = fine_only.score_memory.scaled_distance(coarse_tokens, 0).reshape(2, 1, 4, 4)
        maps = {share: model.maps(batch) for share, model in ((0.0, fine_only), (0.33, mixed), (1.0, coarse_only))}
    up = [torch.nn.functional.interpolate(d, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
          for d in (fine, coarse)]
    torch.testing.assert_close(maps[0.33][:, 0], 0.5 * learned + 0.5 * (1 - torch.exp(-(0.67 * up[0] + 0.33 * up[1]))))
    torch.testing.assert_close(maps[0.0][:, 0], 0.5 * learned + 0.5 * (1 - torch.exp(-up[0])))
    torch.testing.assert_close(maps[1.0][:, 0], maps[1.0][:, 1])  # all coarse, at the score's weight: the score's map
    for share in maps:  # the score's map never depends on the share, and every mix sees the changed square
        torch.testing.assert_close(maps[share][:, 1], maps[0.0][:, 1])
        assert float(maps[share][1, 0, 16:32, 16:32].mean()) > float(maps[share][0, 0, 16:32, 16:32].mean()) + 0.05


def two_category_cache() -> ImageCache:
    """`gradient_cache`'s ramp as category `a` and the same ramp mirrored as category `b`."""
    ramps = gradient_cache(6)
    images = np.concatenate([ramps.images, ramps.images[:, :, ::-1]])
    samples = [Sample(c, Path(f"{c}{i}.png"), "train", 0) for c in "ab" for i in range(6)]
    return ImageCache(samples, np.ascontiguousarray(images), {})


def two_category_model() -> tuple[MalaConfig, MALA]:
    """A hybrid with both memories and a memory section for each category of `two_category_cache`, and its config."""
    cfg = MalaConfig(model=hybrid_config(memory_stride=8, memory_pool=1, memory_norm="none", memory_weight=0.5,
                                         score_memory=True, score_memory_stride=16, score_map_share=0.33))
    model = MALA(cfg.model).eval()
    fill_memory(model, two_category_cache(), seed=0)
    return cfg, model


def test_each_section_fuses_its_map_with_its_own_tuned_weight_and_share(tmp_path):
    cfg, model = two_category_model()
    cache = two_category_cache()
    tuned = {0: (0.75, 0.0, 0.0), 1: (0.5, 0.5, 0.0)}  # no global map: its share changes nothing
    references = {}
    for section, (weight, share, _) in tuned.items():  # the same weights and memories, the fusion in the config
        references[section] = MALA(dataclasses.replace(cfg.model, memory_weight=weight, score_map_share=share)).eval()
        state = model.state_dict()
        references[section].prepare_to_load(state)
        references[section].load_state_dict(state)
    images = torch.from_numpy(cache.images[[1, 7]]).permute(0, 3, 1, 2).float() / 255
    images[:, :, 16:32, 16:32] = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        untuned = model.maps(images, torch.tensor([0, 1]))
        model.section_fusion = torch.tensor([tuned[0], tuned[1]])
        both = model.maps(images, torch.tensor([0, 1]))
        routed = model.maps(images)
        for section, reference in references.items():
            alone = reference.maps(images[section:section + 1], section)
            torch.testing.assert_close(both[section:section + 1], alone)
            torch.testing.assert_close(model.maps(images[section:section + 1], section), alone)
    torch.testing.assert_close(routed, both)  # each image routed to its own category, read with its fusion
    assert not torch.allclose(both[:, 0], untuned[:, 0])
    torch.testing.assert_close(both[:, 1], untuned[:, 1])  # the score's map has its own weight and no share
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded, _, _ = load_trained_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, torch.tensor([0, 1])), both)
    untuned_state = {k: v for k, v in model.state_dict().items() if k != "section_fusion"}  # saved before tuning
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": untuned_state})
    loaded, _, _ = load_trained_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, torch.tensor([0, 1])), untuned)


def test_each_sections_map_is_divided_by_its_normal_level_and_keeps_its_order(tmp_path):
    cfg = MalaConfig(model=hybrid_config(memory_stride=8, memory_pool=1, memory_norm="none", memory_weight=0.5,
                                         score_memory=True, score_memory_stride=16))
    model = MALA(cfg.model).eval()
    cache = two_category_cache()
    fill_memory(model, cache, seed=0)
    images = torch.from_numpy(cache.images[[1, 7]]).permute(0, 3, 1, 2).float() / 255
    images[:, :, 16:32, 16:32] = torch.rand(2, 3, 16, 16)
    sections = torch.tensor([0, 1])
    with torch.no_grad():
        plain = model.maps(images, sections)
        model.section_map_levels = torch.tensor([0.2, 0.6])
        levelled = model.maps(images, sections)
        swapped = model.maps(images, torch.tensor([1, 0]))  # each image read in the other category's section
    for image, level in enumerate((0.2, 0.6)):
        torch.testing.assert_close(levelled[image, 0], plain[image, 0] / (plain[image, 0] + level))
        ranks = plain[image, 0].flatten().argsort()  # the same order of pixels within the image's category
        assert bool((levelled[image, 0].flatten()[ranks].diff() >= 0).all())
    torch.testing.assert_close(levelled[:, 1], plain[:, 1])  # the image score's map is not levelled
    assert float(levelled[:, 0].max()) < 1 and float(levelled[:, 0].min()) >= 0
    assert not torch.allclose(swapped[:, 0], levelled[:, 0])  # the section read sets the level
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded, _, _ = load_trained_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, sections), levelled)
    older = {k: v for k, v in model.state_dict().items() if k != "section_map_levels"}  # saved before the levels
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": older})
    loaded, _, _ = load_trained_model(path)
    assert loaded.section_map_levels.numel() == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, sections), plain)


def test_a_saved_hybrid_with_its_memory_loads_back(tmp_path):
    cfg = MalaConfig(model=hybrid_config(memory_weight=0.5))
    model = MALA(cfg.model).eval()
    model.memory.fill(torch.randn(123, 152), 2.5)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded, _, _ = load_trained_model(path)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert loaded.memory.tokens.shape == (123, 152) and float(loaded.memory.scales[0]) == 2.5


def test_a_hybrid_saved_before_the_stage1_feature_head_still_loads(tmp_path):
    cfg = MalaConfig(model=hybrid_config(memory_weight=0.5))
    model = MALA(cfg.model).eval()
    model.memory.fill(torch.randn(10, 152), 1.0)
    older = {k: v for k, v in model.state_dict().items() if not k.startswith("decoder_feature_pred.")}
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": older})
    loaded, _, _ = load_trained_model(path)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_the_memory_blur_smooths_a_spike_and_sigma_0_leaves_the_map_as_it_is():
    from mala.model.maps import distance_map

    distance = torch.zeros(1, 1, 8, 8)
    distance[0, 0, 4, 4] = 5.0
    sharp, smooth = distance_map(distance, (64, 64), 0), distance_map(distance, (64, 64), 4)
    torch.testing.assert_close(sharp, 1 - torch.exp(-torch.nn.functional.interpolate(
        distance, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]))
    assert float(smooth.max()) < float(sharp.max()) and float((smooth > 0.01).sum()) > float((sharp > 0.01).sum())


def test_mapparts_flip_back_and_average_each_view_where_an_input_takes_it():
    learned, distance = torch.arange(20.0).reshape(1, 4, 5), torch.arange(6.0).reshape(1, 1, 2, 3)
    parts = MapParts(learned, torch.zeros(1, dtype=torch.long), distance)
    columns = parts.flipped((-1,))
    assert torch.equal(columns.learned[0, :, 0], learned[0, :, -1])
    assert torch.equal(columns.distance[..., 0], distance[..., -1])
    assert torch.equal(parts.flipped((-2,)).learned[0, 0], learned[0, -1])
    assert torch.equal(parts.averaged_with([columns], [1.0]).learned, (learned + learned.flip(-1)) / 2)
    two = MapParts(torch.cat([learned, learned]), torch.zeros(2, dtype=torch.long), torch.cat([distance, distance]))
    mixed = two.averaged_with([two.flipped((-1,))], [torch.tensor([1.0, 0.0])])  # only the first input takes it
    assert torch.equal(mixed.learned[0], (learned[0] + learned[0].flip(-1)) / 2)
    assert torch.equal(mixed.learned[1], learned[0]) and torch.equal(mixed.distance[1], distance[0])


def test_each_section_averages_its_maps_over_the_mirror_views_it_takes(tmp_path):
    cfg, model = two_category_model()
    cache = two_category_cache()
    images = torch.from_numpy(cache.images[[1, 7]]).permute(0, 3, 1, 2).float() / 255
    images[:, :, 16:32, 8:24] = torch.rand(2, 3, 16, 16)  # off the centre: a mirror view moves it
    sections = torch.tensor([0, 1])
    with torch.no_grad():
        plain = model.maps(images, sections)
        model.set_section_mirrors(torch.tensor([2, 0]))
        mirrored = model.maps(images, sections)
        alone = model.maps(images[:1], 0)
        routed = model.maps(images)  # each image routed to its own category, with its views
        parts = model.map_parts(images[:1], 0)
        views = [model.map_parts(images[:1].flip(dims), 0).flipped(dims) for dims in ((-1,), (-2,))]
        averaged = dataclasses.replace(parts.averaged_with(views, [1.0, 1.0]), plain=parts)
        by_hand = model.fused_maps(averaged, *model.fusion_of(0))
    torch.testing.assert_close(mirrored[:1], by_hand)  # section 0: its parts averaged over three views, then fused
    assert not torch.allclose(mirrored[0, 0], plain[0, 0])
    torch.testing.assert_close(mirrored[:, 1], plain[:, 1])  # the image score's map reads one view
    torch.testing.assert_close(mirrored[1], plain[1])  # section 1 takes no view
    torch.testing.assert_close(mirrored[:1], alone)  # the same in a batch of mixed sections as alone
    torch.testing.assert_close(routed, mirrored)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": model.state_dict()})
    loaded, _, _ = load_trained_model(path)
    assert loaded.mirror_counts == (2, 0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, sections), mirrored)
    older = {k: v for k, v in model.state_dict().items() if k != "section_mirrors"}  # saved before mirror views
    save_checkpoint(path, {"kind": "model", "config": cfg.to_dict(), "data": {}, "model": older})
    loaded, _, _ = load_trained_model(path)
    assert loaded.mirror_counts == ()
    with torch.no_grad():
        torch.testing.assert_close(loaded.maps(images, sections), plain)
