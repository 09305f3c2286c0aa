"""Pseudo Label Prediction Module: a small convolutional discriminator (0 = original, 1 = reconstruction)."""

from __future__ import annotations

import torch
from torch import nn


class PseudoLabelPredictor(nn.Module):
    """Strided 4x4 convolutions (PatchGAN-like) pooled to one logit per image.

    No batch norm, so the discriminator behaves the same under DDP and for any batch size.
    """

    def __init__(self, width: int = 32, levels: int = 4, in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_chans
        for level in range(levels):
            out = width * 2**level
            layers += [nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) to logits (B,)."""
        pooled = self.features(images * 2 - 1).mean(dim=(2, 3))
        return self.classifier(pooled).squeeze(1)
