"""The losses of both stages: paper eq. 3 (L1 + SSIM + adversarial PLPM) and eq. 6 (L1 + focal)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mala.config import Stage1Config, Stage2Config


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return torch.outer(kernel, kernel)


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (B, C, H, W), Gaussian window as in Wang et al. 2004."""
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x).expand(channels, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, padding=window_size // 2, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) of 2-channel probabilities (B, 2, H, W); target (B, H, W) is 1 = anomaly = channel 0."""
    p_true = torch.where(target > 0.5, probs[:, 0], probs[:, 1]).clamp_min(1e-6)
    return (-((1 - p_true) ** gamma) * torch.log(p_true)).mean()


@dataclass
class LossTerms:
    total: torch.Tensor
    parts: dict[str, float]


def stage1_reconstruction_loss(
    original: torch.Tensor, reconstruction: torch.Tensor, adversarial: torch.Tensor | None, cfg: Stage1Config
) -> LossTerms:
    """a1 * L1 + a2 * (1 - SSIM) [+ a3 * adversarial], all over the whole image."""
    l1 = (reconstruction - original).abs().mean()
    structure = 1 - ssim(reconstruction, original)
    total = cfg.l1_weight * l1 + cfg.ssim_weight * structure
    parts = {"l1": l1.item(), "ssim": structure.item()}
    if adversarial is not None:
        total = total + cfg.adv_weight * adversarial
        parts["adv"] = adversarial.item()
    return LossTerms(total, parts)


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side: push the discriminator's verdict on reconstructions toward 0 ("original")."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """PLPM side: originals -> 0, reconstructions -> 1."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.zeros_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return (real + fake) / 2


def stage2_loss(logits: torch.Tensor, target: torch.Tensor, cfg: Stage2Config) -> LossTerms:
    """b1 * L1(mask, softmax(Y)[0]) + b2 * focal(mask, softmax(Y))."""
    probs = torch.softmax(logits.float(), dim=1)
    l1 = (probs[:, 0] - target).abs().mean()
    focal = focal_loss(probs, target, cfg.focal_gamma)
    return LossTerms(cfg.l1_weight * l1 + cfg.focal_weight * focal, {"l1": l1.item(), "focal": focal.item()})
