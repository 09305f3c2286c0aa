"""Rectangular models: an H x W image gives H x W maps, on an (H/p) x (W/p) token grid with matching position
embeddings, for the pixel ViT and the hybrid encoder alike."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mala.errors import ConfigError
from mala.model import MALA, image_score, reconstruction_map
from mala.model.backbone import pretrained_backbone
from mala.model.vit import sincos_pos_embed
from tests.model.test_hybrid import hybrid_config

HEIGHT, WIDTH = 96, 32  # 1:3, like a line-scan strip


def test_the_pixel_vit_maps_a_tall_image_at_its_size(small_config):
    model = MALA(dataclasses.replace(small_config.model, image_size=[HEIGHT, WIDTH])).eval()
    images = torch.rand(2, 3, HEIGHT, WIDTH)
    with torch.no_grad():
        recon = model.reconstruct(images, 0.75)
        maps = model(images)
    assert model.grid == (12, 4) and model.num_patches == 48
    assert recon.image.shape == images.shape and recon.mask.shape == (2, 48)
    assert maps.shape == (2, HEIGHT, WIDTH) and 0 <= float(maps.min()) and float(maps.max()) <= 1
    assert reconstruction_map(model, images, 0.75).shape == (2, HEIGHT, WIDTH)
    assert image_score(maps, 21).shape == (2,)  # the kernel shrinks to the short side


def test_patchify_follows_rows_then_columns(small_config):
    model = MALA(dataclasses.replace(small_config.model, image_size=[16, 32]))
    images = torch.zeros(1, 3, 16, 32)
    images[:, :, 8:, :8] = 1  # the patch in row 1, column 0 of a 2 x 4 grid
    patches = model.patchify(images)
    assert patches.shape == (1, 8, 8 * 8 * 3)
    assert patches[0].sum(dim=1).nonzero().flatten().tolist() == [4]
    assert torch.equal(model.unpatchify(patches, 3), images)


@pytest.mark.parametrize("stride", [16, 8])
def test_the_hybrid_maps_a_wide_image_at_its_size_with_its_memory(stride):
    model = MALA(hybrid_config(image_size=[32, 80], patch_size=stride, memory_weight=0.5)).eval()
    images = torch.rand(2, 3, 32, 80)
    with torch.no_grad():
        tokens = model.feature_tokens(images)
        model.memory.fill(tokens[0], 1.0)
        maps = model(images)
        remembered = model.memory_map(tokens)
    assert tokens.shape == (2, (32 // stride) * (80 // stride), 40 + 112)
    assert maps.shape == remembered.shape == (2, 32, 80)
    assert float(remembered[0].max()) < 0.05 < 0.5 < float(remembered[1].max())  # image 0 is the memory itself


def test_position_embeddings_follow_the_grid():
    """Rows and columns are encoded apart, so a 2 x 4 grid's embeddings are those of a 4 x 4 grid's first rows."""
    square, wide = sincos_pos_embed(16, (4, 4)), sincos_pos_embed(16, (2, 4))
    tall = sincos_pos_embed(16, (4, 2))
    assert wide.shape == tall.shape == (1, 9, 16)
    torch.testing.assert_close(wide[0, 1:], square[0, 1:9])
    torch.testing.assert_close(tall[0, 1:], square[0, 1:].reshape(4, 4, 16)[:, :2].reshape(8, 16))


def test_the_model_regenerates_them_for_its_grid(small_config):
    model = MALA(dataclasses.replace(small_config.model, image_size=[HEIGHT, WIDTH]))
    assert model.pos_embed.shape == (1, 12 * 4 + 1, 64) and model.decoder_pos_embed.shape == (1, 49, 32)
    torch.testing.assert_close(model.pos_embed, sincos_pos_embed(64, (12, 4)))


def test_sides_must_fit_the_patches_and_the_backbone_stride(small_config):
    with pytest.raises(ConfigError, match=r"96 x 36 px \(height x width\): each side must be a multiple of 8"):
        MALA(dataclasses.replace(small_config.model, image_size=[HEIGHT, 36]))
    assert hybrid_config(patch_size=8).size_multiple == 16  # stage 4's stride
    with pytest.raises(ConfigError, match="multiple of 16 .patch size 8 and the backbone's strides"):
        MALA(hybrid_config(image_size=[64, 40], patch_size=8))


def test_the_backbone_takes_any_multiple_of_its_stride():
    backbone = pretrained_backbone("efficientnet_lite0", last_stage=4)
    with torch.no_grad():
        eight, sixteen = backbone.features(torch.rand(1, 3, 48, 176), (2, 4))  # 176 = 11 x 16: not a power of two
    assert eight.shape == (1, 40, 6, 22) and sixteen.shape == (1, 112, 3, 11)
