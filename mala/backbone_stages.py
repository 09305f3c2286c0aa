"""The strides of EfficientNet-Lite's 7 stages and which of them fit a token grid, without torch: the config checks
`model.backbone_stages` with them before any model is built."""

from __future__ import annotations

from collections.abc import Iterable

STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)  # image pixels per feature-map cell at the end of stage 0..6


def unfit_stages(stages: Iterable[int], stride: int) -> list[int]:
    """The stages whose stride neither divides nor is a multiple of the token grid's `stride` (the patch size)."""
    return [s for s in stages if stride % STAGE_STRIDES[s] and STAGE_STRIDES[s] % stride]
