"""Deploying a tiled model: the ONNX graph cuts, runs and stitches the tiles as torch does, its description gives
the source size callers resize to, and predict and serve answer at each image's own size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from mala.config import TilingConfig
from mala.deploy.backends import OnnxBackend, TorchBackend
from mala.deploy.graph import export_onnx, load_graph
from mala.deploy.predict import Predictor
from mala.deploy.serve import create_app
from mala.model import image_score
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model
from tests.deploy.test_graph import real_images

TILE, SOURCE, STRIDE = 32, (48, 112), 24  # 2 x 5 tiles, overlapping in both directions; stride 16 fits the hybrid


@pytest.fixture(scope="module", params=[False, True], ids=["pixel_vit", "hybrid"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiled")
    stride = 16 if request.param else STRIDE
    checkpoint = save_random_model(folder / "model.safetensors", ["metal_plate"], hybrid=request.param,
                                   image_size=TILE, tiling=TilingConfig(source_size=list(SOURCE), stride=stride))
    return checkpoint, export_onnx(checkpoint, folder / "model.onnx")


def test_onnx_matches_torch_on_the_stitched_map(exported):
    checkpoint, path = exported
    graph, description = load_graph(checkpoint)
    assert description["image_size"] == list(SOURCE) and description["tiling"]["tile"] == TILE
    images = real_images(SOURCE, 3)
    onnx_backend = OnnxBackend(path)
    assert onnx_backend.image_shape == SOURCE and onnx_backend.description["tiling"] == description["tiling"]
    with torch.no_grad():
        expected = [t.numpy() for t in graph(torch.from_numpy(images))]
    if graph.model.hybrid:  # the file, as torch on a CPU, searches the memory through its int8 shortlist
        graph.model.set_memory_search("exact")
        with torch.no_grad():
            exact = graph(torch.from_numpy(images))[1].numpy()
        assert float(np.abs(exact - expected[1]).mean()) < 1e-3
    assert expected[1].shape == (3, *SOURCE)
    for got, want in zip(onnx_backend.run(images), expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    # the batch size stays dynamic
    np.testing.assert_allclose(onnx_backend.run(images[:1])[1], expected[1][:1], atol=1e-4)


def test_the_score_is_eq_7_on_the_stitched_map(exported):
    checkpoint, _ = exported
    graph, _ = load_graph(checkpoint)
    with torch.no_grad():
        scores, maps, _ = graph(torch.from_numpy(real_images(SOURCE, 2)))
    torch.testing.assert_close(scores, image_score(maps, graph.cfg.run.score_kernel))


def _test_images() -> list[Image.Image]:
    paths = [sorted(shared_data("metal_plate", "test", "defect").glob("*.png"))[0],
             sorted(shared_data("magnetic_tile", "test").rglob("*.jpg"))[0]]
    return [Image.open(path).convert("RGB") for path in paths]


def test_predictions_come_back_at_each_image_own_size(exported):
    checkpoint, path = exported
    images = _test_images()
    for backend in (TorchBackend(checkpoint), OnnxBackend(path)):
        for image, prediction in zip(images, Predictor(backend)(images)):
            assert prediction.anomaly_map.shape == (image.height, image.width)


def test_serve_answers_at_the_image_size_and_names_the_tiling(exported):
    _, path = exported
    client = TestClient(create_app(Predictor(OnnxBackend(path)), str(path)))
    health = client.get("/health").json()
    assert health["image_size"] == list(SOURCE) and health["tiling"]["tile"] == TILE
    image = _test_images()[1]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answer = client.post("/predict", content=buffer.getvalue()).json()
    assert (answer["height"], answer["width"]) == (image.height, image.width) and 0 <= answer["score"] <= 1
