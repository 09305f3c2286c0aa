import re

import numpy as np
import torch

from mala.config import MalaConfig, load_config
from mala.model import MALA
from mala.model.mala import visible_patch_count
from mala.train.plan import stage_plans
from mala.model.vit import sincos_pos_embed

# The key patterns of facebookresearch/mae `mae_visualize_vit_*.pth` (encoder + decoder), one per kind of tensor.
MAE_KEY_PATTERNS = [
    r"cls_token", r"pos_embed", r"mask_token", r"decoder_pos_embed",
    r"patch_embed\.proj\.(weight|bias)",
    r"(decoder_)?blocks\.\d+\.(norm1|norm2)\.(weight|bias)",
    r"(decoder_)?blocks\.\d+\.attn\.(qkv|proj)\.(weight|bias)",
    r"(decoder_)?blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)",
    r"norm\.(weight|bias)", r"decoder_norm\.(weight|bias)",
    r"decoder_embed\.(weight|bias)", r"decoder_pred\.(weight|bias)",
]


def test_base_preset_has_official_mae_names_and_shapes():
    model = MALA(load_config("base").model)
    state = model.state_dict()
    mae_keys = {k for k in state if not k.startswith("tbm.")}
    for key in mae_keys:
        assert any(re.fullmatch(p, key) for p in MAE_KEY_PATTERNS), key
    # ViT-B/16 shapes as in mae_visualize_vit_base.pth
    assert state["pos_embed"].shape == (1, 197, 768)
    assert state["blocks.11.attn.qkv.weight"].shape == (2304, 768)
    assert state["blocks.11.mlp.fc1.weight"].shape == (3072, 768)
    assert state["decoder_embed.weight"].shape == (512, 768)
    assert state["decoder_blocks.7.attn.qkv.weight"].shape == (1536, 512)
    assert state["decoder_pred.weight"].shape == (768, 512)
    assert "blocks.12.norm1.weight" not in state and "decoder_blocks.8.norm1.weight" not in state


def _mae_reference_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def test_sincos_matches_mae_formula():
    dim, grid = 16, 4
    h, w = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32), indexing="ij")
    reference = np.concatenate([_mae_reference_1d(dim // 2, w), _mae_reference_1d(dim // 2, h)], axis=1)
    ours = sincos_pos_embed(dim, (grid, grid))[0]
    assert torch.all(ours[0] == 0)  # cls position
    np.testing.assert_allclose(ours[1:].numpy(), reference, atol=1e-6)


def test_random_masking_keeps_exact_count_per_image(small_config):
    tokens = torch.randn(5, 64, 8)
    kept, mask, ids_restore = MALA.random_masking(tokens, 0.75)
    assert kept.shape == (5, 16, 8)
    assert torch.all(mask.sum(dim=1) == 48)
    # the kept tokens are exactly the unmasked ones, in some order
    for b in range(5):
        visible = tokens[b][mask[b] == 0]
        assert torch.equal(visible.sort(dim=0).values, kept[b].sort(dim=0).values)
    assert torch.equal(ids_restore.sort(dim=1).values, torch.arange(64).expand(5, -1))


def test_visible_patch_count_rounds_instead_of_truncating():
    # 196 x 0.3 is 58.8 (58.79... in floating point): MAE's int() keeps 58, one patch fewer than the ratio says
    assert visible_patch_count(196, 0.7) == 59
    assert MALA.random_masking(torch.randn(2, 196, 4), 0.7)[0].shape == (2, 59, 4)
    assert visible_patch_count(196, 0.75) == 49 and visible_patch_count(64, 0.0) == 64


def test_dry_run_plan_counts_visible_patches_as_the_model_does():
    cfg = MalaConfig()
    cfg.stage1.mask_ratio = 0.7
    plan = stage_plans(cfg, num_categories=1)[0]
    assert "(59 of 196 visible)" in plan.sampling


def test_patchify_roundtrip(small_config):
    model = MALA(small_config.model)
    images = torch.rand(2, 3, 64, 64)
    patches = model.patchify(images)
    assert patches.shape == (2, 64, 8 * 8 * 3)
    assert torch.equal(model.unpatchify(patches, 3), images)
    # MAE's order: patch (row 0, col 1) holds pixels [0:8, 8:16]
    assert torch.equal(patches[0, 1].reshape(8, 8, 3), images[0, :, 0:8, 8:16].permute(1, 2, 0))
