import numpy as np
import pytest
from scipy import ndimage

from mala.config import SynthConfig
from mala.errors import ConfigError
from mala.synth import perlin_mask, perlin_noise


@pytest.mark.parametrize("shape", [(224, 224), (97, 131), (300, 64)])
def test_mask_is_binary_float32_non_empty_at_any_size(shape):
    for seed in range(20):
        mask = perlin_mask(shape, np.random.default_rng(seed), SynthConfig())
        assert mask.shape == shape and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert mask.any()


def test_coarsest_scale_is_retried_until_non_empty():
    # At 1 x 1 cells about half the noise fields stay below the threshold everywhere.
    cfg = SynthConfig(perlin_min_exp=0, perlin_max_exp=0)
    assert all(perlin_mask((64, 64), np.random.default_rng(seed), cfg).any() for seed in range(50))


def test_same_rng_same_mask_and_different_seeds_differ():
    cfg = SynthConfig()
    first = perlin_mask((224, 224), np.random.default_rng([3, 1, 7]), cfg)
    again = perlin_mask((224, 224), np.random.default_rng([3, 1, 7]), cfg)
    other = perlin_mask((224, 224), np.random.default_rng([3, 1, 8]), cfg)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_scale_exponents_set_blob_size():
    def blob_count(exp: int, seed: int) -> int:
        cfg = SynthConfig(perlin_min_exp=exp, perlin_max_exp=exp)
        return ndimage.label(perlin_mask((224, 224), np.random.default_rng(seed), cfg))[1]

    assert max(blob_count(0, seed) for seed in range(5)) <= 2
    assert min(blob_count(6, seed) for seed in range(5)) >= 500


def test_noise_stays_in_unit_range():
    for exp_rows in range(7):
        for exp_cols in range(7):
            rng = np.random.default_rng(exp_rows * 7 + exp_cols)
            noise = perlin_noise((100, 150), (2**exp_rows, 2**exp_cols), 37.0, rng)
            assert noise.shape == (100, 150)
            assert np.abs(noise).max() <= 1.0 + 1e-5


def test_rotation_turns_the_noise():
    def roughness_rows_vs_cols(angle: float) -> tuple[float, float]:
        noise = perlin_noise((224, 224), (1, 32), angle, np.random.default_rng(0))
        return np.abs(np.diff(noise, axis=0)).mean(), np.abs(np.diff(noise, axis=1)).mean()

    along_rows, along_cols = roughness_rows_vs_cols(0.0)
    assert along_cols > 10 * along_rows  # 32 cells across the columns, 1 down the rows
    along_rows, along_cols = roughness_rows_vs_cols(90.0)
    assert along_rows > 10 * along_cols


def test_unreachable_threshold_raises_config_error():
    cfg = SynthConfig()
    cfg.threshold = 1.5  # set in code, past the config's own check (tests/test_config.py)
    with pytest.raises(ConfigError, match="synth.threshold=1.5 gave an empty Perlin mask"):
        perlin_mask((16, 16), np.random.default_rng(0), cfg)
