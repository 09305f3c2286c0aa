"""--init: official MAE checkpoint files land in the right parameters; mismatches and pickled objects are refused.

The files are built from random tensors under the official names and shapes of `mae_pretrain_vit_base.pth` (encoder)
and `mae_visualize_vit_base.pth` (encoder and decoder), written as the MAE release writes them:
torch.save({"model": sd}).
The key list is spelled out here, not taken from our model, so a renamed parameter of ours would fail the test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mala.config import load_config
from mala.errors import CheckpointError
from mala.model import MALA
from mala.model.starting_weights import initialise
from mala.model.vit import sincos_pos_embed

WIDTH, DEPTH, MLP, PATCH, GRID = 768, 12, 3072, 16, 14  # ViT-B/16 at 224 px
DECODER_WIDTH, DECODER_DEPTH = 512, 8


def _block_shapes(prefix: str, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.norm1.weight": (width,), f"{prefix}.norm1.bias": (width,),
        f"{prefix}.attn.qkv.weight": (3 * width, width), f"{prefix}.attn.qkv.bias": (3 * width,),
        f"{prefix}.attn.proj.weight": (width, width), f"{prefix}.attn.proj.bias": (width,),
        f"{prefix}.norm2.weight": (width,), f"{prefix}.norm2.bias": (width,),
        f"{prefix}.mlp.fc1.weight": (hidden, width), f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (width, hidden), f"{prefix}.mlp.fc2.bias": (width,),
    }


def mae_pretrain_vit_base_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"cls_token": (1, 1, WIDTH), "pos_embed": (1, GRID * GRID + 1, WIDTH),
              "patch_embed.proj.weight": (WIDTH, 3, PATCH, PATCH), "patch_embed.proj.bias": (WIDTH,)}
    for i in range(DEPTH):
        shapes.update(_block_shapes(f"blocks.{i}", WIDTH, MLP))
    return {**shapes, "norm.weight": (WIDTH,), "norm.bias": (WIDTH,)}


def mae_visualize_vit_base_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {**mae_pretrain_vit_base_shapes(), "mask_token": (1, 1, DECODER_WIDTH),
              "decoder_pos_embed": (1, GRID * GRID + 1, DECODER_WIDTH),
              "decoder_embed.weight": (DECODER_WIDTH, WIDTH), "decoder_embed.bias": (DECODER_WIDTH,)}
    for i in range(DECODER_DEPTH):
        shapes.update(_block_shapes(f"decoder_blocks.{i}", DECODER_WIDTH, 4 * DECODER_WIDTH))
    return {**shapes, "decoder_norm.weight": (DECODER_WIDTH,), "decoder_norm.bias": (DECODER_WIDTH,),
            "decoder_pred.weight": (PATCH * PATCH * 3, DECODER_WIDTH), "decoder_pred.bias": (PATCH * PATCH * 3,)}


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}


class NotATensor:
    """Stands for the argparse namespaces and other objects some training scripts pickle into checkpoints."""


@pytest.fixture(scope="module")
def base_model() -> MALA:
    return MALA(load_config("base").model)


@pytest.fixture(scope="module")
def official_files(tmp_path_factory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    folder = tmp_path_factory.mktemp("mae")
    files = {}
    for seed, (name, shapes) in enumerate([("mae_pretrain_vit_base.pth", mae_pretrain_vit_base_shapes()),
                                           ("mae_visualize_vit_base.pth", mae_visualize_vit_base_shapes())]):
        state = random_state(shapes, seed)
        torch.save({"model": state}, folder / name)
        files[name] = (folder / name, state)
    return files


def _assert_loaded(model: MALA, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, tensor in state.items():
        if key not in ("pos_embed", "decoder_pos_embed"):
            assert torch.equal(own[key], tensor), key
    grid = model.grid
    assert torch.equal(own["pos_embed"], sincos_pos_embed(model.cfg.embed_dim, grid))
    assert torch.equal(own["decoder_pos_embed"], sincos_pos_embed(model.cfg.decoder_embed_dim, grid))


def _decoder_state(model: MALA) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("decoder_", "mask_token"))}


def test_pretrain_file_fills_the_encoder_and_leaves_the_decoder(base_model, official_files):
    path, state = official_files["mae_pretrain_vit_base.pth"]
    decoder_before = _decoder_state(base_model)
    report = initialise(base_model, path)
    _assert_loaded(base_model, state)
    assert all(torch.equal(base_model.state_dict()[k], v) for k, v in decoder_before.items())
    assert report.parts == ["encoder"] and "holds no decoder" in report.summary()


def test_visualize_file_fills_encoder_and_decoder(base_model, official_files):
    path, state = official_files["mae_visualize_vit_base.pth"]
    report = initialise(base_model, path)
    _assert_loaded(base_model, state)
    assert report.parts == ["encoder", "decoder"] and "regenerated for 224 px" in report.summary()


def test_a_256_px_model_loads_them_with_regenerated_position_embeddings(official_files):
    cfg = load_config("base").model
    model = MALA(dataclasses.replace(cfg, image_size=256))
    path, state = official_files["mae_visualize_vit_base.pth"]
    initialise(model, path)
    assert model.pos_embed.shape == (1, 257, WIDTH)
    _assert_loaded(model, state)


def test_a_rectangular_model_loads_them_with_position_embeddings_for_its_grid(official_files):
    model = MALA(dataclasses.replace(load_config("base").model, image_size=[352, 144]))
    path, state = official_files["mae_visualize_vit_base.pth"]
    report = initialise(model, path)
    assert model.pos_embed.shape == (1, 22 * 9 + 1, WIDTH)
    _assert_loaded(model, state)
    assert "regenerated for 352 x 144 px (height x width)" in report.summary()


def test_timm_state_dict_loads_and_its_classifier_is_ignored(base_model, official_files, tmp_path):
    _, state = official_files["mae_pretrain_vit_base.pth"]
    timm_extra = {"head.weight": torch.zeros(1000, WIDTH), "head.bias": torch.zeros(1000),
                  "fc_norm.weight": torch.ones(WIDTH), "fc_norm.bias": torch.zeros(WIDTH)}
    torch.save({"state_dict": {**state, **timm_extra}}, tmp_path / "timm.pth")
    report = initialise(base_model, tmp_path / "timm.pth")
    _assert_loaded(base_model, state)
    assert "ignored timm's classifier: head.bias, head.weight" in report.summary()


def test_renamed_key_and_wrong_shape_fail_listing_both_and_load_nothing(base_model, official_files, tmp_path):
    _, state = official_files["mae_visualize_vit_base.pth"]
    broken = dict(state)
    broken["blocks.3.mlp.fc_1.weight"] = broken.pop("blocks.3.mlp.fc1.weight")
    broken["decoder_embed.weight"] = torch.zeros(DECODER_WIDTH, WIDTH - 1)
    torch.save({"model": broken}, tmp_path / "broken.pth")
    before = base_model.state_dict()["blocks.0.attn.qkv.weight"].clone()
    with pytest.raises(CheckpointError) as failure:
        initialise(base_model, tmp_path / "broken.pth")
    message = str(failure.value)
    assert "\n" not in message
    assert "missing: blocks.3.mlp.fc1.weight" in message
    assert "unexpected: blocks.3.mlp.fc_1.weight" in message
    assert "wrong shape: decoder_embed.weight 512x767 (model 512x768)" in message
    assert torch.equal(base_model.state_dict()["blocks.0.attn.qkv.weight"], before)


def test_checkpoint_of_another_size_is_refused_with_a_count(small_config, official_files):
    path, _ = official_files["mae_pretrain_vit_base.pth"]
    with pytest.raises(CheckpointError, match=r"does not fit the model \(unexpected: .* \(\+\d+ more\); wrong shape"):
        initialise(MALA(small_config.model), path)


def test_file_that_needs_pickle_is_refused(small_config, tmp_path):
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 64)}, "args": NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="pickled.pth: holds Python objects besides tensors; refused"):
        initialise(MALA(small_config.model), tmp_path / "pickled.pth")
