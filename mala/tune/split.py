"""The validation split on training images: per category, 20 % of the normal training images are held out of the
model, and each also appears with synthetic anomalies that stage 2 never trains on (`mala.synth.validation`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mala.config import SynthConfig
from mala.data.dataset import ImageCache
from mala.data.images import to_uint8, unit_range
from mala.data.samples import Sample, category_seed
from mala.errors import DataError
from mala.sizes import ImageShape
from mala.synth import AnomalySynthesizer
from mala.synth.validation import CRACK_CONTRAST, SPECK_AREA, crack, cut_paste, shade, visible

VALIDATION_SHARE = 0.2
MIN_HELD_OUT = 2  # validation normals of a category at least
MIN_IMAGES = 2 * MIN_HELD_OUT  # training images a category needs to be split
VALIDATION_ANOMALIES = ("large", "small", "broad")
# large in turn, small in turn, broad; a sample's name ends in it
VALIDATION_KINDS = ("draem", "cut-paste", "crack", "speck", "shade")
SEED = 0


def held_out_count(images: int) -> int:
    """How many of a category's `images` normal training images the split holds out."""
    return max(MIN_HELD_OUT, int(round(VALIDATION_SHARE * images)))


def category_generators(category: str) -> tuple[np.random.Generator, ...]:
    """The split's three generators for one category (the split and large anomalies, small ones, broad ones)."""
    return tuple(np.random.default_rng([SEED, stream, category_seed(category)]) for stream in range(3))


def validation_split(train: ImageCache, size: int | ImageShape, anomalies: tuple[str, ...] = ("large",),
                     crack_contrast: tuple[float, float] = CRACK_CONTRAST) -> tuple[ImageCache, ImageCache]:
    """Per category: the model's training images and a validation cache of normals plus synthetic anomalies of each:
    `large`, one of self-texture DRAEM and cut-paste in turn; `small`, one of a thin crack (of `crack_contrast`) and a
    pasted speck in turn; `broad`, a shade. The split is the same whichever anomalies are drawn (the small and the broad
    ones draw from generators of their own). Each category draws from generators seeded by its name, so its split
    does not depend on which other categories are trained beside it."""
    synthesizer = AnomalySynthesizer(SynthConfig(texture_dir=None), size)
    fit, samples, images, masks = [], [], [], {}
    for category, indices in train.indices_by_category().items():
        if len(indices) < MIN_IMAGES:
            raise DataError(f"category '{category}' has {len(indices)} normal training image(s): a validation split "
                            f"needs at least {MIN_IMAGES}")
        rng, small_rng, broad_rng = category_generators(category)
        shuffled = rng.permutation(indices)
        held = shuffled[:held_out_count(len(indices))]
        rest = shuffled[len(held):]
        fit += sorted(rest.tolist())
        for k, index in enumerate(held):
            normal = train.images[index]
            if k % 2:
                large = cut_paste(normal, train.images[rng.choice(rest)], rng)
            else:
                synthetic, soft = synthesizer(unit_range(normal), rng, anomalous=True)
                large = to_uint8(synthetic), soft > 0
            drawn = {"large": (VALIDATION_KINDS[k % 2], *large)}
            if "small" in anomalies:
                drawn["small"] = (VALIDATION_KINDS[2 + k % 2], *visible(lambda: cut_paste(
                    normal, train.images[small_rng.choice(rest)], small_rng, SPECK_AREA) if k % 2 else crack(
                    normal, small_rng, crack_contrast)))
            if "broad" in anomalies:
                drawn["broad"] = (VALIDATION_KINDS[4], *visible(lambda: shade(normal, broad_rng)))
            pictures = [("normal", normal, None)] + [drawn[a] for a in VALIDATION_ANOMALIES if a in anomalies]
            for kind, picture, mask in pictures:
                if mask is not None:
                    masks[len(images)] = mask
                samples.append(Sample(category, Path(f"validation/{category}/{k}_{kind}.png"), "test",
                                      int(mask is not None), mask_path=None if mask is None else Path("synthetic")))
                images.append(picture)
    return train.subset(np.array(fit)), ImageCache(samples, np.stack(images), masks)
