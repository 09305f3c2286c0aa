"""The config is checked when it is built: every bad value is one ConfigError naming its `section.key`, before any
work (issue 23, item 6)."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from mala.cli import main
from mala.config import (PRECISIONS, MalaConfig, ModelConfig, Stage2Config, apply_overrides, config_from_dict,
                         load_config)
from mala.errors import ConfigError

BAD_VALUES = [  # (--set assignment on the tiny preset, the key the error must name)
    # names and choices
    ("model.backbone=resnet50", "model.backbone"),
    ("model.tbm_tokens=decoder", "model.tbm_tokens"),
    ("stage1.target=depth", "stage1.target"),
    ("run.pipeline=fast", "run.pipeline"),
    ("run.precision=8-mixed", "run.precision"),
    ("run.precision=bf16-true-ish", "run.precision"),
    ("run.strategy=[ddp]", "run.strategy"),
    ("run.accelerator=1", "run.accelerator"),
    # types
    ("model.depth=2.5", "model.depth"),
    ("model.depth=true", "model.depth"),
    ("stage1.batch_size='8'", "stage1.batch_size"),
    ("model.mlp_ratio=true", "model.mlp_ratio"),
    ("model.mlp_ratio=four", "model.mlp_ratio"),
    ("stage1.base_lr=.inf", "stage1.base_lr"),
    ("stage2.lr=.nan", "stage2.lr"),
    ("model.use_tbm=1", "model.use_tbm"),
    ("stage1.enabled=0", "stage1.enabled"),
    ("run.compile=maybe", "run.compile"),
    ("model.backbone_stages=2", "model.backbone_stages"),
    ("model.backbone_stages=[2.5, 4]", "model.backbone_stages"),
    ("stage1.betas=[0.9]", "stage1.betas"),
    ("stage1.betas=0.9", "stage1.betas"),
    ("synth.object_categories=metal_plate", "synth.object_categories"),
    ("synth.object_categories=[1]", "synth.object_categories"),
    ("synth.texture_dir=3", "synth.texture_dir"),
    # ranges: model
    ("model.patch_size=0", "model.patch_size"),
    ("model.embed_dim=0", "model.embed_dim"),
    ("model.depth=-1", "model.depth"),
    ("model.memory_stride=32", "model.memory_stride"),
    ("model.memory_stride=5", "model.memory_stride"),
    ("model.score_memory_stride=32", "model.score_memory_stride"),  # coarser than the image size's multiple, 16
    ("model.score_memory_stride=-8", "model.score_memory_stride"),
    ("model.memory_sigma=-1", "model.memory_sigma"),
    ("model.memory_pool=2", "model.memory_pool"),
    ("model.num_heads=0", "model.num_heads"),
    ("model.decoder_embed_dim=0", "model.decoder_embed_dim"),
    ("model.decoder_depth=0", "model.decoder_depth"),
    ("model.decoder_num_heads=0", "model.decoder_num_heads"),
    ("model.mlp_ratio=0", "model.mlp_ratio"),
    ("model.plpm_width=0", "model.plpm_width"),
    ("model.memory_weight=3", "model.memory_weight"),
    ("model.memory_weight=-0.5", "model.memory_weight"),
    ("model.score_memory_weight=2", "model.score_memory_weight"),
    ("model.score_map_share=1.5", "model.score_map_share"),
    ("model.score_memory=maybe", "model.score_memory"),
    ("model.memory_size=0", "model.memory_size"),
    ("model.memory_section_size=-1", "model.memory_section_size"),
    ("model.memory_radius=-1", "model.memory_radius"),
    # ranges: stage 1
    ("stage1.epochs=-1", "stage1.epochs"),
    ("stage1.images_per_category=0", "stage1.images_per_category"),
    ("stage1.batch_size=0", "stage1.batch_size"),
    ("stage1.base_lr=-1e-3", "stage1.base_lr"),
    ("stage1.weight_decay=-0.05", "stage1.weight_decay"),
    ("stage1.betas=[0.9, 1.0]", "stage1.betas"),
    ("stage1.warmup_epochs=-1", "stage1.warmup_epochs"),
    ("stage1.mask_ratio=1", "stage1.mask_ratio"),
    ("stage1.mask_ratio=-0.1", "stage1.mask_ratio"),
    ("stage1.l1_weight=-1", "stage1.l1_weight"),
    ("stage1.ssim_weight=-1", "stage1.ssim_weight"),
    ("stage1.adv_weight=-1", "stage1.adv_weight"),
    ("stage1.feature_weight=-1", "stage1.feature_weight"),
    # ranges: stage 2
    ("stage2.epochs=-1", "stage2.epochs"),
    ("stage2.images_per_category=0", "stage2.images_per_category"),
    ("stage2.anomalous_per_category=-1", "stage2.anomalous_per_category"),
    ("stage2.batch_size=0", "stage2.batch_size"),
    ("stage2.lr=-1e-4", "stage2.lr"),
    ("stage2.weight_decay=-1", "stage2.weight_decay"),
    ("stage2.l1_weight=-1", "stage2.l1_weight"),
    ("stage2.focal_weight=-1", "stage2.focal_weight"),
    ("stage2.focal_gamma=-2", "stage2.focal_gamma"),
    # ranges: synthesis
    ("synth.self_texture_prob=1.5", "synth.self_texture_prob"),
    ("synth.local_prob=-0.1", "synth.local_prob"),
    ("synth.threshold=1", "synth.threshold"),
    ("synth.threshold=-0.5", "synth.threshold"),
    ("synth.max_blend=1.2", "synth.max_blend"),
    ("synth.perlin_min_exp=-1", "synth.perlin_min_exp"),
    ("synth.perlin_max_exp=-1", "synth.perlin_max_exp"),
    ("synth.num_augmentations=-1", "synth.num_augmentations"),
    # ranges: run
    ("run.devices=0", "run.devices"),
    ("run.num_nodes=0", "run.num_nodes"),
    ("run.accumulate=0", "run.accumulate"),
    ("run.clip_grad=-1", "run.clip_grad"),
    ("run.num_workers=-1", "run.num_workers"),
    ("run.seed=-1", "run.seed"),
    ("run.checkpoint_every=0", "run.checkpoint_every"),
    ("run.checkpoint_every_steps=-1", "run.checkpoint_every_steps"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints"),
    ("run.score_kernel=0", "run.score_kernel"),
    # backbone stages: indices 0..6 of STAGE_STRIDES, distinct, and (hybrid) fitting the token grid's stride
    ("model.backbone_stages=[7]", "model.backbone_stages"),
    ("model.backbone_stages=[-1]", "model.backbone_stages"),
    ("model.backbone_stages=[]", "model.backbone_stages"),
    ("model.backbone_stages=[2, 2]", "model.backbone_stages"),
    ("model.patch_size=14", "model.backbone_stages"),  # tiny is a hybrid: strides 8 and 16 do not fit 14
    # cross-field rules
    ("model.embed_dim=100", "model.num_heads"),  # tiny: 3 heads
    ("model.decoder_embed_dim=130", "model.decoder_num_heads"),  # tiny: 4 heads
    ("stage2.anomalous_per_category=500", "stage2.images_per_category"),
    ("synth.perlin_min_exp=7", "synth.perlin_max_exp"),  # tiny: max 6
]


@pytest.mark.parametrize("assignment,key", BAD_VALUES, ids=[assignment for assignment, _ in BAD_VALUES])
def test_a_bad_value_is_one_config_error_naming_its_key(assignment, key):
    with pytest.raises(ConfigError) as error:
        apply_overrides(load_config("tiny"), [assignment])
    message = str(error.value)
    assert key in message and "must be" in message and "\n" not in message, message


def test_the_message_says_what_is_allowed():
    cases = {
        "model.backbone=resnet50": "model.backbone must be one of none, efficientnet_lite0, efficientnet_lite1, "
                                   "efficientnet_lite2, got 'resnet50'",
        "model.memory_weight=3": "model.memory_weight must be from 0 to 1, got 3.0",
        "model.memory_norm=token model.score_memory_stride=8": "model.score_memory must be false while "
                                                               "model.memory_norm is token on the memory's grid (the "
                                                               "score memory holds the memory's tokens layer-normed: "
                                                               "the two would be one), got True",
        "model.depth=2.5": "model.depth must be an integer, got 2.5",
        "model.backbone_stages=[7]": "model.backbone_stages must be a non-empty list of distinct stage indices from 0 "
                                     "to 6, got [7]",
        "model.patch_size=14": "model.backbone_stages must be stages whose stride divides or is a multiple of "
                               "model.patch_size 14 (stride by stage: 0: 2, 1: 4, 2: 8, 3: 16, 4: 16, 5: 32, 6: 32), "
                               "got [1, 2, 4]",
        "stage2.anomalous_per_category=500": "stage2.anomalous_per_category must be at most "
                                             "stage2.images_per_category (80), got 500",
        "stage1.mask_ratio=1": "stage1.mask_ratio must be at least 0 and below 1, got 1.0",
    }
    for assignments, message in cases.items():
        with pytest.raises(ConfigError) as error:
            apply_overrides(load_config("tiny"), assignments.split())
        assert str(error.value) == message


@pytest.mark.parametrize("assignments", [
    ["stage1.epochs=0"],  # a stage of 0 epochs is skipped
    ["stage2.epochs=0"],
    ["stage1.enabled=false", "stage1.epochs=0"],
    ["stage1.epochs=2", "stage1.warmup_epochs=5"],  # the lr then never reaches its peak: allowed
    ["model.memory_weight=0", "model.memory_radius=0", "synth.threshold=0", "stage1.mask_ratio=0"],
    ["model.memory_weight=1", "synth.max_blend=1", "synth.self_texture_prob=1", "synth.local_prob=0"],
    ["synth.perlin_min_exp=3", "synth.perlin_max_exp=3", "synth.num_augmentations=0"],
    ["model.patch_size=8"],  # the hybrid's stage strides 8 and 16 fit a grid of stride 8 (tiny's score memory: 16)
    # two memories of layer-normed tokens on two grids are two memories
    ["model.memory_norm=token", "model.memory_stride=8", "model.score_memory_stride=16"],
    ["model.backbone=none", "model.patch_size=14", "model.backbone_stages=[6]"],  # the pixel ViT has no stages
    ["model.backbone=none"],  # a pixel ViT from tiny: its memory keys are ignored, not errors
    ["model.backbone=none", "model.depth=12"],  # README's pixel ViT from tiny
    ["run.checkpoint_every_steps=0", "run.num_workers=0", "run.clip_grad=0", "run.strategy=ddp"],
    ["stage2.anomalous_per_category=80", "stage2.lr=1"],
])
def test_values_at_the_edges_are_accepted(assignments):
    cfg = apply_overrides(load_config("tiny"), assignments)
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()  # and a saved run config reads back


def test_numbers_are_read_as_floats_and_precision_as_fabric_names():
    cfg = apply_overrides(load_config("tiny"), ["stage2.lr=1", "stage1.base_lr=1e-3", "run.precision=16"])
    assert cfg.stage2.lr == 1.0 and isinstance(cfg.stage2.lr, float) and cfg.stage1.base_lr == 1e-3
    assert cfg.run.precision == "16"  # YAML's int 16, as Fabric's alias "16" (16-mixed)


def test_precisions_are_those_lightning_fabric_takes():
    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT

    assert set(PRECISIONS) == {str(value) for literal in get_args(_PRECISION_INPUT) for value in get_args(literal)}


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="model.memory_weight must be from 0 to 1, got 3"):
        ModelConfig(memory_weight=3)
    with pytest.raises(ConfigError, match="stage2.anomalous_per_category must be at most"):
        Stage2Config(images_per_category=8, anomalous_per_category=9)
    with pytest.raises(ConfigError, match="model.backbone must be one of"):
        MalaConfig(model=ModelConfig(backbone="resnet50"))


@pytest.mark.parametrize("preset", ["tiny", "base", "paper"])
def test_every_preset_loads(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, MalaConfig) and cfg.model.image_shape == (224, 224)
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_the_config_module_stays_free_of_torch():
    code = "import sys, mala.config; assert 'torch' not in sys.modules, 'mala.config imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_train_with_a_bad_value_stops_before_any_work(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    assert main(["train", "--data", str(data), "--set", "model.memory_weight=3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mala: error: model.memory_weight "), err
    assert "from 0 to 1" in lines[0] and "Traceback" not in err
    assert not out.exists() and list(data.iterdir()) == []
