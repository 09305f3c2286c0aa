"""Anomalies for validation on training images (`mala tune`, the benches' protocol), of kinds stage 2 never trains
on: a rectangle of another normal image pasted elsewhere (CutPaste), the small defects of real sets: a thin crack (a
solar cell's crack, a PCB's open) and a pasted speck (a blowhole, a spur), and a broad faint one: a shade (a solar
cell's dark inactive area, an uneven patch of a tile)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

CUT_AREA = (0.02, 0.08)  # share of the image a pasted rectangle covers
SPECK_AREA = (0.001, 0.005)  # the same for a pasted speck (7 to 16 px squares at 224 px)
CRACK_LENGTH = (20, 80)  # px: a crack, a random walk of one or three px width
CRACK_CONTRAST = (0.4, 0.8)  # share of the way to black (on bright ground) or to white (on dark) a crack goes
SHADE_AREA = (0.02, 0.08)  # share of the image a shade covers (inside its half-strength edge)
SHADE_CONTRAST = (0.2, 0.5)  # share of the way to black (or white) its middle goes
SHADE_EDGE = 0.15  # its edge's width, as a share of its radius: soft, as real shades are
MIN_CHANGED = 10  # px a small anomaly changes at least


def cut_paste(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
              area_range: tuple[float, float] = CUT_AREA) -> tuple[np.ndarray, np.ndarray]:
    """`image` (H, W, 3) with a rectangle of `donor` pasted at another place, and its mask."""
    height, width = image.shape[:2]
    area = rng.uniform(*area_range) * height * width
    aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
    h, w = min(height - 1, int(np.sqrt(area * aspect))), min(width - 1, int(np.sqrt(area / aspect)))
    y0, x0 = rng.integers(0, height - h), rng.integers(0, width - w)
    y1, x1 = rng.integers(0, height - h), rng.integers(0, width - w)
    out, mask = image.copy(), np.zeros((height, width), dtype=bool)
    out[y1:y1 + h, x1:x1 + w] = donor[y0:y0 + h, x0:x0 + w]
    mask[y1:y1 + h, x1:x1 + w] = (out[y1:y1 + h, x1:x1 + w] != image[y1:y1 + h, x1:x1 + w]).any(-1)
    return out, mask


def crack(image: np.ndarray, rng: np.random.Generator, contrast: tuple[float, float] = CRACK_CONTRAST
          ) -> tuple[np.ndarray, np.ndarray]:
    """`image` (H, W, 3) with a thin crack (a random walk of one or three px width, darkened or brightened by a
    `contrast` share), and its mask: a defect of the size of a solar cell's crack or a PCB's open, which the large
    anomalies are not."""
    height, width = image.shape[:2]
    steps = int(rng.integers(*CRACK_LENGTH))
    angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.15, steps))
    y = rng.uniform(0.2, 0.8) * height + np.cumsum(np.sin(angles))
    x = rng.uniform(0.2, 0.8) * width + np.cumsum(np.cos(angles))
    mask = np.zeros((height, width), dtype=bool)
    mask[np.clip(y.round().astype(int), 0, height - 1), np.clip(x.round().astype(int), 0, width - 1)] = True
    if rng.random() < 0.5:
        mask = ndimage.binary_dilation(mask)
    pixels = image.astype(np.float32)
    if pixels[mask].mean() > 127:  # against its surroundings: darker on bright ground, brighter on dark
        pixels[mask] *= rng.uniform(1 - contrast[1], 1 - contrast[0])
    else:
        pixels[mask] += (255 - pixels[mask]) * rng.uniform(*contrast)
    out = pixels.round().astype(np.uint8)
    return out, mask & (out != image).any(-1)


def shade(image: np.ndarray, rng: np.random.Generator, area_range: tuple[float, float] = SHADE_AREA,
          contrast: tuple[float, float] = SHADE_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """`image` (H, W, 3) with a broad, soft-edged ellipse darkened (on bright ground) or brightened (on dark) by a
    `contrast` share at its middle, and its mask (where the change reaches half its strength): a defect of no texture
    and low contrast, which neither the small anomalies nor stage 2's textured ones are."""
    height, width = image.shape[:2]
    area = rng.uniform(*area_range) * height * width
    aspect = np.exp(rng.uniform(np.log(0.4), np.log(2.5)))
    radii = np.sqrt(area * aspect / np.pi), np.sqrt(area / aspect / np.pi)
    centre = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    angle = rng.uniform(0, np.pi)
    rows, columns = np.mgrid[:height, :width].astype(np.float32)
    dy, dx = rows - centre[0], columns - centre[1]
    along, across = dy * np.cos(angle) + dx * np.sin(angle), dx * np.cos(angle) - dy * np.sin(angle)
    radius = np.sqrt((along / radii[0]) ** 2 + (across / radii[1]) ** 2)
    strength = 1 / (1 + np.exp((radius - 1) / SHADE_EDGE))  # 1 inside, 0.5 on the ellipse, 0 outside
    pixels = image.astype(np.float32)
    change = rng.uniform(*contrast) * strength[..., None]
    mask = strength >= 0.5
    if pixels[mask].mean() > 127:
        pixels *= 1 - change
    else:
        pixels += (255 - pixels) * change
    out = pixels.round().astype(np.uint8)
    return out, mask & (out != image).any(-1)


def visible(draw: Callable[[], tuple[np.ndarray, np.ndarray]], tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The first of `draw`'s anomalies that changes at least `MIN_CHANGED` pixels (a speck of black pasted on black
    changes none), else the last one."""
    for _ in range(tries):
        anomalous, mask = draw()
        if mask.sum() >= MIN_CHANGED:
            break
    return anomalous, mask
