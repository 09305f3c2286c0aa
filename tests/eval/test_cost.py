"""`mala cost`: parameter counts, FLOPs against a hand count, and the printed table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mala.checkpoint import load_checkpoint, save_checkpoint
from mala.cli import main
from mala.config import MalaConfig, TilingConfig
from mala.eval.cost import inference_flops, measure_cost, measure_trained_cost, parameter_counts, view_flops
from mala.model import MALA, PseudoLabelPredictor
from mala.model.load import load_trained_model
from tests.deploy.conftest import save_random_model, small_model_config


def numel(*modules) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def test_parameter_counts_are_sums_over_the_model(small_config: MalaConfig):
    model = MALA(small_config.model)
    counts = parameter_counts(model, small_config)
    frozen_position_embeddings = model.pos_embed.numel() + model.decoder_pos_embed.numel()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    # stage 2 trains decoder and TBM; stage 1 everything but the TBM; neither the fixed position embeddings
    decoder = numel(model.decoder_embed, *model.decoder_blocks, model.decoder_norm)
    assert counts["stage2_trainable"] == decoder + numel(model.tbm)
    assert counts["stage1_trainable"] == counts["total"] - numel(model.tbm) - frozen_position_embeddings
    assert counts["plpm"] == numel(PseudoLabelPredictor(small_config.model.plpm_width))


def test_no_plpm_parameters_without_plpm(small_config: MalaConfig):
    small_config.stage1.use_plpm = False
    assert parameter_counts(MALA(small_config.model), small_config)["plpm"] == 0


def hand_counted_flops(image: int, patch: int, width: int, depth: int, dec_width: int, dec_depth: int) -> int:
    """2 FLOPs per multiply-add of the matrix products of one forward on one image (biases, norms, softmax left out)."""
    patches = (image // patch) ** 2
    tokens = patches + 1  # with the class token

    def block(dim: int) -> int:
        linear = tokens * dim * (3 * dim + dim + 4 * dim + 4 * dim)  # qkv, attention output, MLP in and out
        attention = 2 * tokens * tokens * dim  # Q K^T and attention x V, all heads together
        return 2 * (linear + attention)

    patch_embed = 2 * patches * (3 * patch * patch) * width
    decoder_embed = 2 * tokens * width * dec_width
    tbm = 2 * patches * (2 * width * dec_width + 2 * dec_width * 2 * patch * patch)  # LP1, then LP2 to 2 p x p maps
    return patch_embed + depth * block(width) + decoder_embed + dec_depth * block(dec_width) + tbm


def test_flops_match_a_hand_count(small_config: MalaConfig):
    cfg = small_config.model
    expected = hand_counted_flops(cfg.image_size, cfg.patch_size, cfg.embed_dim, cfg.depth,
                                  cfg.decoder_embed_dim, cfg.decoder_depth)
    assert inference_flops(MALA(cfg)) == pytest.approx(expected, rel=0.2)


@pytest.fixture
def config_file(tmp_path, small_config: MalaConfig) -> Path:
    path = tmp_path / "small.yaml"
    small_config.save(path)
    return path


def test_cost_is_measured_at_the_asked_size(config_file: Path):
    cost = measure_cost(str(config_file), image_size=32, repeats=1)  # the config says 64
    assert cost.gflops == pytest.approx(hand_counted_flops(32, 8, 64, 2, 32, 1) / 1e9, rel=1e-9)
    assert cost.images_per_second > 0


def test_cost_command_prints_a_table(config_file: Path, capsys):
    assert main(["cost", "--presets", f"{config_file},{config_file}", "--image-size", "32", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["config", "stage-1", "trainable", "(M)", "PLPM", "(M)", "stage-2", "trainable", "(M)",
                                "total", "(M)", "GFLOPs/image", "images/s"]
    for line in lines[1:3]:
        row = line.split()
        assert row[0] == str(config_file) and len(row) == 7
        assert all(float(cell) >= 0 for cell in row[1:])
    assert "32 x 32" in lines[3] and "cpu" in lines[3] and "threads" in lines[3]


def test_image_size_must_fit_the_patches(config_file: Path, capsys):
    assert main(["cost", "--presets", str(config_file), "--image-size", "30", "--repeats", "1"]) == 2
    assert "each side must be a multiple of 8 (the patch size)" in capsys.readouterr().err


def test_cost_at_a_rectangular_size(config_file: Path, capsys):
    square = measure_cost(str(config_file), image_size=32, repeats=1)
    wide = measure_cost(str(config_file), image_size=[32, 64], repeats=1)
    assert 1.8 < wide.gflops / square.gflops < 2.6  # twice the tokens; attention grows faster
    assert main(["cost", "--presets", str(config_file), "--image-size", "16x32", "--repeats", "1"]) == 0
    assert "at 16 x 32 (height x width)" in capsys.readouterr().out



def test_a_trained_model_is_costed_with_its_memory_and_tiles(tmp_path):
    plain = save_random_model(tmp_path / "plain.safetensors", ["a"], hybrid=True)
    tiled = save_random_model(tmp_path / "tiled.safetensors", ["a"], hybrid=True,
                              tiling=TilingConfig(source_size=[64, 112], stride=48))  # 64 px tiles: 1 x 2
    without_memory = inference_flops(MALA(small_model_config(hybrid=True).model).eval())
    plain_cost, tiled_cost = measure_trained_cost(plain, repeats=1), measure_trained_cost(tiled, repeats=1)
    # the search: each of the 4 x 4 tokens against the 32 stored ones (2 images' 4 x 4), 2 FLOPs per multiply-add,
    # in the int8 shortlist's 160 columns (152 channels, then the rows' norms, padded to a multiple of 8); then the
    # map's Gaussian blur (sigma 4 px: 33 taps, rows then columns, 64 x 64 pixels)
    search, blur = 2 * 16 * 32 * 160, 2 * (2 * 64 * 64 * 33)
    assert plain_cost.gflops * 1e9 == pytest.approx(without_memory + search + blur, rel=1e-9)
    assert tiled_cost.gflops == pytest.approx(2 * plain_cost.gflops, rel=1e-6)
    memory = "with a memory of 32 tokens, searched through int8 shortlists"
    assert plain_cost.input == f"64 x 64 (height x width), {memory}"
    assert tiled_cost.input == f"64 x 112 (height x width), as 2 tiles of 64 x 64 (height x width), {memory}"
    assert plain_cost.images_per_second > 0 and tiled_cost.images_per_second > 0


def test_cost_command_takes_trained_models(tmp_path, capsys):
    checkpoint = save_random_model(tmp_path / "run" / "model.safetensors", ["a"], hybrid=True)
    assert main(["cost", "--checkpoint", str(checkpoint.parent), "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == str(checkpoint.parent) and "with a memory of 32 tokens" in lines[2]
    assert "searched through int8 shortlists" in lines[2]
    assert main(["cost", "--checkpoint", str(checkpoint.parent), "--repeats", "1", "--memory-search", "exact"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "with a memory of 32 tokens" in lines[2] and "int8" not in lines[2]
    assert main(["cost", "--checkpoint", str(checkpoint), "--image-size", "32"]) == 2
    assert "--config and --image-size cannot be given with it" in capsys.readouterr().err
    assert main(["cost", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_a_named_category_is_costed_in_its_own_section(tmp_path, capsys):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["a", "b"], hybrid=True)
    without_memory = inference_flops(MALA(small_model_config(hybrid=True).model).eval())
    known = measure_trained_cost(checkpoint, repeats=1, category="b")
    # the search of section b alone: 4 x 4 tokens against its 32 (2 images' 4 x 4) in 160 int8 columns; then the
    # blur (as above)
    assert known.gflops * 1e9 == pytest.approx(without_memory + 2 * 16 * 32 * 160 + 2 * (2 * 64 * 64 * 33), rel=1e-9)
    shortlisted = ", searched through int8 shortlists"
    assert known.input.endswith(f"in 2 category sections, each image read in section 1 (32 tokens){shortlisted}")
    state = load_checkpoint(checkpoint)
    state["model"]["section_mirrors"] = torch.tensor([0, 1])  # b's images also mapped mirrored left-right
    save_checkpoint(checkpoint, state)
    mirrored = measure_trained_cost(checkpoint, repeats=1, category="b")
    assert mirrored.input.endswith(f"each image read in section 1 (32 tokens) and in 1 mirror view of it{shortlisted}")
    one_view = view_flops(load_trained_model(checkpoint)[0].eval(), 1)  # the fusion and the blur are made once
    assert mirrored.gflops * 1e9 == pytest.approx(known.gflops * 1e9 + one_view, rel=1e-9)
    assert main(["cost", "--checkpoint", str(checkpoint), "--category", "c", "--repeats", "1"]) == 2
    assert "no memory section for category 'c' (trained on: a, b)" in capsys.readouterr().err
    assert main(["cost", "--category", "a"]) == 2
    assert "--category and --memory-search are about a trained model's memory" in capsys.readouterr().err
