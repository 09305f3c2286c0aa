"""Deploying a rectangular model: the ONNX export computes what torch computes at height x width, predictions come
back at each image's own size, and models saved with an int size (every one before rectangles) still load."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from mala.deploy.backends import OnnxBackend, TorchBackend, described_shape
from mala.deploy.contract import METADATA_KEY
from mala.deploy.graph import export_onnx, load_graph
from mala.deploy.predict import Predictor
from mala.deploy.serve import create_app
from mala.errors import ConfigError
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model
from tests.deploy.test_graph import real_images

SHAPE = (32, 80)  # height, width: a multiple of the hybrid's stride 16 as well


@pytest.fixture(scope="module", params=[False, True], ids=["pixel_vit", "hybrid"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rectangular")
    checkpoint = save_random_model(folder / "model.safetensors", ["metal_plate"], hybrid=request.param,
                                   image_size=list(SHAPE))
    return checkpoint, export_onnx(checkpoint, folder / "model.onnx")


def test_onnx_matches_torch_at_height_and_width(exported):
    checkpoint, path = exported
    graph, _ = load_graph(checkpoint)
    images = real_images(SHAPE, 3)
    assert images.shape == (3, *SHAPE, 3)
    onnx_backend = OnnxBackend(path)
    assert onnx_backend.image_shape == SHAPE and onnx_backend.description["image_size"] == list(SHAPE)
    with torch.no_grad():
        expected = [t.numpy() for t in graph(torch.from_numpy(images))]
    for got, want in zip(onnx_backend.run(images), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert expected[1].shape == (3, *SHAPE)


def test_predictions_come_back_at_each_image_own_size(exported):
    checkpoint, _ = exported
    predictor = Predictor(TorchBackend(checkpoint))
    paths = [sorted(shared_data("metal_plate", "test", "defect").glob("*.png"))[0],
             sorted(shared_data("magnetic_tile", "test").rglob("*.jpg"))[0]]
    images = [Image.open(path).convert("RGB") for path in paths]
    for image, prediction in zip(images, predictor(images)):
        assert prediction.anomaly_map.shape == (image.height, image.width)


def test_health_gives_height_and_width(exported):
    _, path = exported
    app = create_app(Predictor(OnnxBackend(path)), str(path))
    health = next(route.endpoint for route in app.routes if getattr(route, "path", None) == "/health")()
    assert health["image_size"] == list(SHAPE)


def test_an_int_size_model_and_export_still_load(checkpoint, onnx_model):
    """The deploy fixtures write `image_size: 64`, as every model and export did before rectangles."""
    assert onnx.load(str(onnx_model)).metadata_props[0].key == METADATA_KEY
    description = json.loads(onnx.load(str(onnx_model)).metadata_props[0].value)
    assert description["image_size"] == 64
    assert OnnxBackend(onnx_model).image_shape == TorchBackend(checkpoint).image_shape == (64, 64)


@pytest.mark.parametrize("stored,shape", [(64, (64, 64)), ([32, 80], (32, 80))])
def test_a_described_size_is_read_in_either_form(stored, shape, tmp_path):
    assert described_shape({"image_size": stored}, tmp_path / "model.onnx") == shape


def test_a_description_without_a_size_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"model.onnx: image_size: expected an integer"):
        described_shape({}, tmp_path / "model.onnx")
