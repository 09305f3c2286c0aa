"""DRAEM-style synthetic anomalies: Perlin masks, augmented texture content, foreground masks."""

from mala.synth.anomaly import AnomalySynthesizer, list_texture_images
from mala.synth.augment import AUGMENTATIONS, random_augment
from mala.synth.foreground import foreground_mask, looks_like_object, object_categories, probe_samples
from mala.synth.perlin import perlin_mask, perlin_noise
from mala.synth.preview import write_preview_grid

__all__ = [
    "AUGMENTATIONS",
    "AnomalySynthesizer",
    "foreground_mask",
    "list_texture_images",
    "looks_like_object",
    "object_categories",
    "perlin_mask",
    "perlin_noise",
    "probe_samples",
    "random_augment",
    "write_preview_grid",
]
