"""The exported ONNX graph computes what the torch graph computes, on real images, for any batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from mala.checkpoint import load_checkpoint, save_checkpoint
from mala.data.images import read_rgb
from mala.deploy.backends import OnnxBackend, TorchBackend
from mala.deploy.calibration import ALL, Calibration, Thresholds
from mala.deploy.contract import GRAPH_OUTPUTS, METADATA_KEY, OUTPUT_NAMES, UNKNOWN_CATEGORY
from mala.deploy.graph import export_onnx, load_graph, store_calibration
from mala.errors import CheckpointError, ConfigError
from mala.model.maps import image_score
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model


def real_images(size: int | tuple[int, int], count: int) -> np.ndarray:
    """Defective and good test images of both real categories, resized as the model sees them."""
    files = sorted(shared_data("metal_plate", "test").rglob("*.png"))[:count // 2]
    files += sorted(shared_data("magnetic_tile", "test").rglob("*.jpg"))[:count - len(files)]
    return np.stack([read_rgb(path, size) for path in files])


def assert_exported_like(session: onnxruntime.InferenceSession, images: np.ndarray, expected: list[np.ndarray]) -> None:
    """The exported file's score, map and category are the torch graph's (`expected`)."""
    exported = dict(zip(OUTPUT_NAMES, session.run(None, {"images": images})))
    for name, want in zip(GRAPH_OUTPUTS, expected, strict=True):
        assert exported[name].shape == want.shape, name
        np.testing.assert_allclose(exported[name], want, atol=1e-4, err_msg=name)


THRESHOLDS = Thresholds(0.45, 0.6, 0.3, 0.7, 0.05, 0.95, "F1-max", "F1-max over pixels", 10)
PLATE = Thresholds(0.5, 0.4, 0.2, 0.9, 0.0, 1.0, "F1-max", "F1-max over pixels", 5)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A calibrated checkpoint and its ONNX export (exported once: the exporter takes seconds)."""
    folder = tmp_path_factory.mktemp("calibrated")
    checkpoint = save_random_model(folder / "model.safetensors", ["metal_plate", "magnetic_tile"])
    store_calibration(checkpoint, Calibration({ALL: THRESHOLDS, "metal_plate": PLATE}, "mala calibrate"))
    return checkpoint, export_onnx(checkpoint, folder / "model.onnx")


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_outputs_match_torch_on_real_images(calibrated, batch):
    checkpoint, path = calibrated
    graph, _ = load_graph(checkpoint)
    images = real_images(64, batch)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"images": images})
    with torch.no_grad():
        expected = [t.numpy() for t in graph(torch.from_numpy(images))]
    assert_exported_like(session, images, expected)
    assert (exported[4] == UNKNOWN_CATEGORY).all()  # the pixel ViT has no memory to route with
    np.testing.assert_allclose(exported[2], THRESHOLDS.normalized_score(exported[0]), atol=1e-5)
    np.testing.assert_allclose(exported[3], THRESHOLDS.normalized_map(exported[1]), atol=1e-5)


@pytest.mark.parametrize("memory_keys", [{}, {"memory_stride": 8, "memory_pool": 1, "memory_norm": "image"},
                                         {"memory_pool": 1, "memory_norm": "none"},
                                         {"memory_pool": 1, "memory_norm": "none", "score_memory": True},
                                         {"memory_stride": 8, "memory_pool": 1, "memory_norm": "none",
                                          "score_memory": True, "score_memory_stride": 16, "score_map_share": 0.33},
                                         {"memory_stride": 8, "memory_pool": 1, "memory_norm": "none",
                                          "score_memory": True, "score_memory_stride": 16, "global_map": True,
                                          "global_share": 0.5}])
def test_the_hybrid_with_its_memory_exports_to_the_same_outputs(tmp_path, memory_keys):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate"], hybrid=True, **memory_keys)
    graph, _ = load_graph(checkpoint)
    images = real_images(64, 3)
    session = onnxruntime.InferenceSession(str(export_onnx(checkpoint, tmp_path / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = [t.numpy() for t in graph(torch.from_numpy(images))]
    assert_exported_like(session, images, expected)


@pytest.mark.parametrize("memory_keys", [{}, {"memory_pool": 1, "memory_norm": "none", "score_memory": True}])
def test_a_hybrid_of_two_categories_routes_each_image_and_exports_to_the_same_outputs(tmp_path, memory_keys):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   **memory_keys)
    graph, _ = load_graph(checkpoint)
    images = real_images(64, 4)  # two of each category
    with torch.no_grad():
        expected = [t.numpy() for t in graph(torch.from_numpy(images))]
    assert expected[2].tolist() == [0, 0, 1, 1]  # each image routed to its own category
    own_scores = image_score(torch.from_numpy(expected[1]), graph.cfg.run.score_kernel).numpy()
    assert np.allclose(expected[0], own_scores) != bool(memory_keys)  # a score memory scores by a map of its own
    session = onnxruntime.InferenceSession(str(export_onnx(checkpoint, tmp_path / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    assert_exported_like(session, images, expected)
    # a graph for one category reads that section for every image: the routed images of that category agree
    plate_graph, _ = load_graph(checkpoint, "metal_plate")
    with torch.no_grad():
        plate = [t.numpy() for t in plate_graph(torch.from_numpy(images))]
    np.testing.assert_allclose(plate[1][:2], expected[1][:2], atol=1e-5)
    assert not np.allclose(plate[1][2:], expected[1][2:], atol=1e-3)
    assert plate[2].tolist() == [0, 0, 0, 0]  # its category for every image
    # it holds only its own section's rows, and so does its file (routing's image features stay)
    for kept, (whole, _) in zip(plate_graph.model.memories, graph.model.memories, strict=True):
        torch.testing.assert_close(kept[0].tokens, whole.section_rows(0))
    routed_file, plate_file = tmp_path / "model.onnx", export_onnx(checkpoint, tmp_path / "plate.onnx", "metal_plate")
    other_rows = sum(whole.section_rows(1).numel() * 4 for whole, _ in graph.model.memories)
    assert plate_file.stat().st_size < routed_file.stat().st_size - other_rows
    plate_session = onnxruntime.InferenceSession(str(plate_file), providers=["CPUExecutionProvider"])
    assert_exported_like(plate_session, images, plate)


def test_a_routed_image_takes_one_backbone_pass(tmp_path, monkeypatch):
    """Routing reads the tokens the maps are made of: no second pass of the backbone for the category."""
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   memory_pool=1, memory_norm="none", score_memory=True)
    graph, _ = load_graph(checkpoint)
    backbone, passes = graph.model.feature_tokens.backbone, []
    features = backbone.features
    monkeypatch.setattr(backbone, "features", lambda *args: passes.append(1) or features(*args))
    with torch.no_grad():
        categories = graph(torch.from_numpy(real_images(64, 4)))[2]
    assert categories.tolist() == [0, 0, 1, 1]
    assert len(passes) == 1


def test_a_category_the_model_has_no_memory_section_for_is_refused(tmp_path):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True)
    with pytest.raises(ConfigError, match="no memory section for category 'bottle'.*metal_plate, magnetic_tile"):
        load_graph(checkpoint, "bottle")


def test_backends_agree_and_the_export_describes_the_model(calibrated):
    checkpoint, path = calibrated
    onnx_backend, torch_backend = OnnxBackend(path), TorchBackend(checkpoint)
    images = real_images(64, 4)
    for got, want in zip(onnx_backend.run(images), torch_backend.run(images)):
        np.testing.assert_allclose(got, want, atol=1e-4)
    description = onnx_backend.description
    assert description["categories"] == ["metal_plate", "magnetic_tile"] and description["image_size"] == 64
    assert Calibration.from_dict(description["calibration"]).thresholds("metal_plate") == PLATE


def test_a_category_export_normalises_with_that_category_thresholds(calibrated, tmp_path):
    checkpoint, _ = calibrated
    backend = OnnxBackend(export_onnx(checkpoint, tmp_path / "plate.onnx", category="metal_plate"))
    score, anomaly_map, normalized, normalized_map, _ = backend.session.run(None, {"images": real_images(64, 2)})
    np.testing.assert_allclose(normalized, PLATE.normalized_score(score), atol=1e-6)
    np.testing.assert_allclose(normalized_map, PLATE.normalized_map(anomaly_map), atol=1e-6)
    assert backend.description["category"] == "metal_plate"


def test_a_routed_export_normalises_each_image_with_its_category_thresholds(tmp_path):
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True)
    store_calibration(checkpoint, Calibration({ALL: THRESHOLDS, "metal_plate": PLATE}, "mala calibrate"))
    backend = OnnxBackend(export_onnx(checkpoint, tmp_path / "model.onnx"))
    score, anomaly_map, normalized, normalized_map, category = backend.session.run(None, {"images": real_images(64, 4)})
    assert category.tolist() == [0, 0, 1, 1]  # two plates, then two tiles, each routed to its own
    # the plates with their own thresholds, the tiles (none of their own) with all categories'
    np.testing.assert_allclose(normalized[:2], PLATE.normalized_score(score[:2]), atol=1e-6)
    np.testing.assert_allclose(normalized_map[:2], PLATE.normalized_map(anomaly_map[:2]), atol=1e-6)
    np.testing.assert_allclose(normalized[2:], THRESHOLDS.normalized_score(score[2:]), atol=1e-6)
    np.testing.assert_allclose(normalized_map[2:], THRESHOLDS.normalized_map(anomaly_map[2:]), atol=1e-6)


def test_export_for_a_category_without_thresholds_keeps_the_raw_outputs(checkpoint, tmp_path):
    backend = OnnxBackend(export_onnx(checkpoint, tmp_path / "model.onnx", category="metal_plate"))
    score, anomaly_map, normalized, normalized_map, _ = backend.session.run(None, {"images": real_images(64, 2)})
    np.testing.assert_allclose(normalized, np.clip(score, 0, 1), atol=1e-6)
    np.testing.assert_allclose(normalized_map, np.clip(anomaly_map, 0, 1), atol=1e-6)
    assert backend.description["category"] == "metal_plate"


def test_an_onnx_file_from_elsewhere_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "other", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(CheckpointError, match=f"no '{METADATA_KEY}' metadata"):
        OnnxBackend(tmp_path / "other.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="cannot load as an ONNX model"):
        OnnxBackend(tmp_path / "broken.onnx")


def test_each_categorys_tuned_fusion_exports_with_the_routing_that_chooses_it(tmp_path):
    keys = {"memory_stride": 8, "memory_pool": 1, "memory_norm": "none", "score_memory": True,
            "score_memory_stride": 16, "score_map_share": 0.33, "global_map": True}
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   **keys)
    untuned, _ = load_graph(checkpoint)
    state = load_checkpoint(checkpoint)
    state["model"]["section_fusion"] = torch.tensor([[0.5, 0.33, 0.0], [0.9, 0.0, 0.5]])  # the plate as before
    save_checkpoint(checkpoint, state)
    graph, _ = load_graph(checkpoint)
    images = real_images(64, 4)  # two of each category, routed to their own
    with torch.no_grad():
        before, expected = ([t.numpy() for t in g(torch.from_numpy(images))] for g in (untuned, graph))
    np.testing.assert_allclose(expected[1][:2], before[1][:2], atol=1e-6)
    assert not np.allclose(expected[1][2:], before[1][2:], atol=1e-3)
    np.testing.assert_allclose(expected[0], before[0], atol=1e-6)  # the score has its own memory and weight
    session = onnxruntime.InferenceSession(str(export_onnx(checkpoint, tmp_path / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    assert_exported_like(session, images, expected)


def routed_outputs_before_and_after(tmp_path: Path, buffer: str, value: torch.Tensor
                                    ) -> tuple[Path, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A random hybrid of metal_plate and magnetic_tile, its per-section `buffer` then set to `value`: the checkpoint,
    two images of each category (routed to their own) and the routed graph's outputs before and after."""
    keys = {"memory_stride": 8, "memory_pool": 1, "memory_norm": "none", "score_memory": True,
            "score_memory_stride": 16, "score_map_share": 0.33}
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   **keys)
    plain, _ = load_graph(checkpoint)
    state = load_checkpoint(checkpoint)
    state["model"][buffer] = value
    save_checkpoint(checkpoint, state)
    routed, _ = load_graph(checkpoint)
    images = real_images(64, 4)
    with torch.no_grad():
        before, after = ([t.numpy() for t in g(torch.from_numpy(images))] for g in (plain, routed))
    return checkpoint, images, before, after


def test_each_categorys_map_level_exports_routed_and_per_category(tmp_path):
    checkpoint, images, before, expected = routed_outputs_before_and_after(tmp_path, "section_map_levels",
                                                                           torch.tensor([0.2, 0.7]))
    for rows, level in ((slice(0, 2), 0.2), (slice(2, 4), 0.7)):  # the map's output: each image's section's level
        np.testing.assert_allclose(expected[1][rows], before[1][rows] / (before[1][rows] + level), atol=1e-6)
    np.testing.assert_allclose(expected[0], before[0], atol=1e-6)  # the image score is not levelled
    session = onnxruntime.InferenceSession(str(export_onnx(checkpoint, tmp_path / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    assert_exported_like(session, images, expected)
    tile = export_onnx(checkpoint, tmp_path / "tile.onnx", category="magnetic_tile")
    assert_exported_like(onnxruntime.InferenceSession(str(tile), providers=["CPUExecutionProvider"]), images[2:],
                         [e[2:] for e in expected])


def test_each_categorys_mirror_views_export_routed_and_per_category(tmp_path):
    checkpoint, images, before, expected = routed_outputs_before_and_after(  # the tile takes both views, the plate none
        tmp_path, "section_mirrors", torch.tensor([0, 2]))
    np.testing.assert_allclose(expected[0], before[0], atol=1e-6)  # the image score reads one view
    np.testing.assert_allclose(expected[1][:2], before[1][:2], atol=1e-6)
    assert not np.allclose(expected[1][2:], before[1][2:], atol=1e-3)
    session = onnxruntime.InferenceSession(str(export_onnx(checkpoint, tmp_path / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    assert_exported_like(session, images, expected)
    for category, rows in (("magnetic_tile", slice(2, 4)), ("metal_plate", slice(0, 2))):
        alone = export_onnx(checkpoint, tmp_path / f"{category}.onnx", category=category)
        assert_exported_like(onnxruntime.InferenceSession(str(alone), providers=["CPUExecutionProvider"]),
                             images[rows], [e[rows] for e in expected])


def test_a_category_graph_leaves_out_a_global_map_its_fusion_gives_no_share(tmp_path):
    keys = {"memory_stride": 8, "memory_pool": 1, "memory_norm": "none", "score_memory": True,
            "score_memory_stride": 16, "score_map_share": 0.33, "global_map": True}
    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   **keys)
    state = load_checkpoint(checkpoint)
    state["model"]["section_fusion"] = torch.tensor([[0.5, 0.33, 0.0], [0.9, 0.0, 0.5]])  # the plate takes none
    save_checkpoint(checkpoint, state)
    routed, _ = load_graph(checkpoint)
    plate, _ = load_graph(checkpoint, "metal_plate")
    tile, _ = load_graph(checkpoint, "magnetic_tile")
    assert plate.model.global_map is None and tile.model.global_map is not None
    images = real_images(64, 4)[:2]  # the plate's two, routed to it
    with torch.no_grad():
        expected = [t.numpy() for t in routed(torch.from_numpy(images))]
    plate_file = export_onnx(checkpoint, tmp_path / "plate.onnx", category="metal_plate")
    tile_file = export_onnx(checkpoint, tmp_path / "tile.onnx", category="magnetic_tile")
    session = onnxruntime.InferenceSession(str(plate_file), providers=["CPUExecutionProvider"])
    assert_exported_like(session, images, expected)
    assert plate_file.stat().st_size < tile_file.stat().st_size  # the autoencoder's weights are not in it


def test_the_export_searches_the_memory_as_the_model_does_int8_through_onnxruntimes_integer_product(tmp_path):
    import onnx

    checkpoint = save_random_model(tmp_path / "model.safetensors", ["metal_plate", "magnetic_tile"], hybrid=True,
                                   memory_pool=1, memory_norm="none", score_memory=True)
    images = real_images(64, 4)
    for search, integer_products in (("int8", 2 * 2), ("exact", 0)):  # two memories x two sections, routed
        graph, _ = load_graph(checkpoint, memory_search=search)
        with torch.no_grad():
            expected = [t.numpy() for t in graph(torch.from_numpy(images))]
        path = export_onnx(checkpoint, tmp_path / f"{search}.onnx", memory_search=search)
        nodes = [node.op_type for node in onnx.load(str(path)).graph.node]
        assert nodes.count("MatMulInteger") == integer_products
        batch = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value  # the batch size stays dynamic
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert_exported_like(session, images, expected)
        single = session.run(list(GRAPH_OUTPUTS), {"images": images[:1]})
        np.testing.assert_allclose(single[1], expected[1][:1], atol=1e-4)
