"""The losses of both stages: paper eq. 3 (L1 + SSIM + adversarial PLPM) and eq. 6 (L1 + focal)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mala.config import Stage1Config, Stage2Config
from mala.model.filters import blur_zero_padded


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (B, C, H, W), Gaussian window as in Wang et al. 2004."""
    # the five local statistics in one blur call
    mu_x, mu_y, xx, yy, xy = blur_zero_padded(torch.cat([x, y, x * x, y * y, x * y], dim=1), window_size, sigma).chunk(5, 1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
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


def masked_feature_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error of predicted feature tokens (B, N, C) over the hidden tokens (mask 1): MAE's loss, with
    the hybrid's backbone features in place of pixels."""
    error = ((predicted - target) ** 2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp_min(1)


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
