import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from mala.config import Stage2Config
from mala.train.losses import discriminator_loss, focal_loss, ssim, stage2_loss


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. SSIM, Gaussian sigma 1.5 truncated to 11x11, zero padding: per channel then averaged."""
    values = []
    for a, b in zip(x, y):
        blur = lambda t: gaussian_filter(t, 1.5, truncate=5 / 1.5, mode="constant")  # noqa: E731
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        values.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_matches_reference_and_is_one_for_identical_images():
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, 40))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ours = ssim(torch.tensor(x[None]), torch.tensor(y[None])).item()
    assert abs(ours - _reference_ssim(x, y)) < 1e-6
    assert abs(ssim(torch.tensor(x[None]), torch.tensor(x[None])).item() - 1) < 1e-6


def test_focal_loss_matches_formula():
    probs_anomaly = torch.tensor([[[0.9, 0.2]]])
    probs = torch.stack([probs_anomaly, 1 - probs_anomaly], dim=1)
    target = torch.tensor([[[1.0, 0.0]]])
    p_true = torch.tensor([0.9, 0.8])
    expected = (-(1 - p_true) ** 2 * torch.log(p_true)).mean()
    assert torch.allclose(focal_loss(probs, target, 2.0), expected)


def test_stage2_loss_is_small_for_right_and_large_for_wrong_maps():
    target = torch.zeros(1, 8, 8)
    target[0, 2:5, 2:5] = 1
    right = torch.stack([target * 20 - 10, -(target * 20 - 10)], dim=1)
    assert stage2_loss(right, target, Stage2Config()).total < 1e-3
    assert stage2_loss(-right, target, Stage2Config()).total > 1.0


def test_discriminator_loss_labels_original_zero_reconstruction_one():
    good = discriminator_loss(torch.tensor([-10.0]), torch.tensor([10.0]))
    bad = discriminator_loss(torch.tensor([10.0]), torch.tensor([-10.0]))
    assert good < 1e-3 < 5 < bad
