"""Rotated 2-D Perlin noise thresholded into binary anomaly masks, as in DRAEM.

Rather than rendering the noise on a grid and rotating the picture (DRAEM uses an imgaug affine
warp), the noise is evaluated directly at rotated pixel coordinates: the result is the same rotated
field, without interpolation blur or empty corners, and any image size works because the lattice
is sized to cover whatever the rotated image spans (no padding to a multiple of the period).
"""

from __future__ import annotations

import numpy as np

from mala.config import SynthConfig
from mala.errors import ConfigError

MAX_TRIES = 100  # even the coarsest scale is empty only ~55 % of the time; this guards a bad threshold
# Rows are evaluated in blocks of about this many pixels: the temporaries then stay small enough to
# reuse heap memory instead of fresh pages from the OS, which makes the noise 2-3x faster.
BLOCK_PIXELS = 8192


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic smoothstep 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6 - 15) + 10)


class _RotatedLattice:
    """Maps pixels to coordinates (>= 0) on a lattice of cells[0] x cells[1] cells per image, rotated."""

    def __init__(self, shape: tuple[int, int], cells: tuple[int, int], angle_deg: float) -> None:
        self.height, self.width = shape
        angle = np.deg2rad(angle_deg)
        self.cos, self.sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        self.row_scale = np.float32(cells[0] / self.height)
        self.col_scale = np.float32(cells[1] / self.width)
        # An affine map takes its extremes at the image corners; one spare cell on each side.
        corner_u, corner_v = self._rotated(np.array([0, self.height - 1]), np.array([0, self.width - 1]))
        self.origin = (np.floor(corner_u.min()) - 1, np.floor(corner_v.min()) - 1)
        self.size = (int(corner_u.max() - self.origin[0]) + 3, int(corner_v.max() - self.origin[1]) + 3)

    def _rotated(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotated pixel grid rows x cols, in cells, before shifting to the lattice origin."""
        centred_rows = rows.astype(np.float32)[:, None] - np.float32(self.height / 2)
        centred_cols = cols.astype(np.float32)[None, :] - np.float32(self.width / 2)
        u = (self.cos * centred_rows - self.sin * centred_cols + np.float32(self.height / 2)) * self.row_scale
        v = (self.sin * centred_rows + self.cos * centred_cols + np.float32(self.width / 2)) * self.col_scale
        return u, v

    def coords(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lattice coordinates (u down, v across) of the pixel grid rows x cols."""
        u, v = self._rotated(rows, cols)
        return u - self.origin[0], v - self.origin[1]


def _gradient_noise(u: np.ndarray, v: np.ndarray, grad_u: np.ndarray, grad_v: np.ndarray) -> np.ndarray:
    """Perlin noise at lattice coordinates u, v (>= 0) with unit gradients grad_u/v[node row, node col]."""
    u_floor, v_floor = np.floor(u), np.floor(v)
    frac_u, frac_v = u - u_floor, v - v_floor
    lattice_cols = grad_u.shape[1]
    # Flat indices: a 1-D take is several times faster than 2-D fancy indexing.
    flat_index = u_floor.astype(np.intp) * lattice_cols + v_floor.astype(np.intp)

    def corner(du: int, dv: int) -> np.ndarray:
        """Dot product of the corner's gradient with the offset from that corner."""
        index = flat_index + (du * lattice_cols + dv)
        return grad_u.take(index) * (frac_u - du) + grad_v.take(index) * (frac_v - dv)

    fade_u, fade_v = _fade(frac_u), _fade(frac_v)
    n00, n01, n10, n11 = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    top = n00 + fade_v * (n01 - n00)
    bottom = n10 + fade_v * (n11 - n10)
    return top + fade_u * (bottom - top)


def perlin_noise(
    shape: tuple[int, int], cells: tuple[int, int], angle_deg: float, rng: np.random.Generator
) -> np.ndarray:
    """Perlin noise (within [-1, 1]) with cells[0] x cells[1] lattice cells across the image, rotated."""
    lattice = _RotatedLattice(shape, cells, angle_deg)
    angles = rng.uniform(0, 2 * np.pi, size=lattice.size).astype(np.float32)
    grad_u, grad_v = np.cos(angles), np.sin(angles)
    height, width = shape
    noise = np.empty(shape, dtype=np.float32)
    block_rows = max(1, BLOCK_PIXELS // width)
    cols = np.arange(width)
    for start in range(0, height, block_rows):
        u, v = lattice.coords(np.arange(start, min(start + block_rows, height)), cols)
        noise[start : start + block_rows] = _gradient_noise(u, v, grad_u, grad_v)
    # sqrt(2) scales the noise to [-1, 1], as DRAEM does, so its 0.5 threshold means the same.
    return noise * np.float32(np.sqrt(2))


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """A non-empty float32 {0, 1} mask: rotated Perlin noise at scales 2**a x 2**b above cfg.threshold."""
    for _ in range(MAX_TRIES):
        exp_rows, exp_cols = rng.integers(cfg.perlin_min_exp, cfg.perlin_max_exp + 1, size=2)
        angle = rng.uniform(-90, 90)
        noise = perlin_noise(shape, (2**exp_rows, 2**exp_cols), angle, rng)
        mask = noise > cfg.threshold
        if mask.any():
            return mask.astype(np.float32)
    raise ConfigError(
        f"synth.threshold={cfg.threshold} gave an empty Perlin mask {MAX_TRIES} times; "
        "the noise stays within about [-1, 1], use a threshold such as 0.5"
    )
