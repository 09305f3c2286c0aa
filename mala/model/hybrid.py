"""The hybrid ViT's patch embedding (Dosovitskiy et al., sec. 3.1): tokens read from a frozen CNN's feature maps.

Each token is the concatenation of the backbone's chosen stages at its grid cell, each map first 3 x 3
average-pooled (local context, as PatchCore's aggregation) and resampled to the token grid, then layer-normed
without parameters so that stages of different scales weigh alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mala.backbone_stages import STAGE_STRIDES, unfit_stages
from mala.model.backbone import EfficientNetLite


def resample(feature_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A feature map to the token grid: mean over the cells of a finer map, bilinear from a coarser one."""
    height, width = feature_map.shape[-2:]
    if (height, width) == grid:
        return feature_map
    if height > grid[0]:
        return F.avg_pool2d(feature_map, (height // grid[0], width // grid[1]))
    return F.interpolate(feature_map, size=grid, mode="bilinear", align_corners=False)


class FeatureTokens(nn.Module):
    """Images (B, 3, H, W) in [0, 1] to normalised backbone feature tokens (B, N, C) on a stride-`stride` grid."""

    def __init__(self, backbone: EfficientNetLite, stages: tuple[int, ...], stride: int):
        super().__init__()
        unfit = unfit_stages(stages, stride)
        if unfit:
            raise ValueError(f"backbone stages {unfit} (strides {[STAGE_STRIDES[s] for s in unfit]}) do not fit a "
                             f"token grid of stride {stride}")
        self.backbone, self.stages, self.stride = backbone, tuple(stages), stride
        self.channels = sum(backbone.stage_channels(s) for s in stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
        maps = self.backbone.features(images, self.stages)
        pooled = [resample(F.avg_pool2d(m, 3, 1, 1, count_include_pad=False), grid) for m in maps]
        tokens = torch.cat(pooled, dim=1).flatten(2).transpose(1, 2)
        return F.layer_norm(tokens.contiguous(), (self.channels,))


class FeatureEmbed(nn.Module):
    """Feature tokens (B, N, C) to encoder width; the hybrid's counterpart of `PatchEmbed`."""

    def __init__(self, channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Linear(channels, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)
