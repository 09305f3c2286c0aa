"""Model files and ONNX exports written before the package was restructured load and give the same outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mala.deploy.backends import OnnxBackend
from mala.deploy.contract import UNKNOWN_CATEGORY
from mala.deploy.graph import export_onnx, load_graph, read_calibration

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
MODELS = ["pixel_vit", "hybrid", "hybrid_tiled"]
TOLERANCE = 2e-5  # float32 sums in another order
SHORTLIST_TOLERANCE = 2e-3  # the int8 shortlist: a few tokens up to 2 % off (tests/model/test_search.py)


def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(LEGACY / f"{name}.npz") as stored:
        return dict(stored)


@pytest.mark.parametrize("name", MODELS)
def test_an_old_model_file_gives_the_same_maps_and_normalised_outputs(name):
    old = expected(name)
    graph, description = load_graph(LEGACY / f"{name}.safetensors")
    if graph.model.hybrid:  # saved before the int8 shortlist, such a file now searches through it on a CPU
        with torch.no_grad():
            shortlisted = graph(torch.from_numpy(old["images"]))[1].numpy()
        np.testing.assert_allclose(shortlisted, old["anomaly_map"], atol=SHORTLIST_TOLERANCE)
        graph.model.set_memory_search("exact")  # the search the file was saved with
    with torch.no_grad():
        scores, maps, _ = (output.numpy() for output in graph(torch.from_numpy(old["images"])))
    assert maps.shape == old["anomaly_map"].shape and maps.std() > 0
    np.testing.assert_allclose(scores, old["score"], atol=TOLERANCE)
    np.testing.assert_allclose(maps, old["anomaly_map"], atol=TOLERANCE)
    thresholds = read_calibration(LEGACY / f"{name}.safetensors").thresholds("plate")
    np.testing.assert_allclose(thresholds.normalized_score(scores), old["normalized_score"], atol=TOLERANCE)
    np.testing.assert_allclose(thresholds.normalized_map(maps), old["normalized_map"], atol=TOLERANCE)
    assert description["categories"] == ["plate", "tile"]


@pytest.mark.parametrize("name", MODELS)
def test_an_old_onnx_export_runs_as_before(name):
    old = expected(name)
    scores, maps, categories = OnnxBackend(LEGACY / f"{name}.onnx").run(old["images"])
    assert (categories == UNKNOWN_CATEGORY).all()  # a file from before the category output cannot tell
    np.testing.assert_allclose(scores, old["onnx_score"], atol=TOLERANCE)
    np.testing.assert_allclose(maps, old["onnx_anomaly_map"], atol=TOLERANCE)


def test_a_new_export_of_an_old_model_has_the_old_outputs(tmp_path):
    old = expected("hybrid_tiled")
    keys = ("score", "anomaly_map", "normalized_score", "normalized_map")
    # exported today, such a file searches through the int8 shortlist (raw outputs within its tolerance; the
    # normalised ones stretch the difference by the thresholds' spread); with the exact search, as it was made
    for search, compared, tolerance in (("int8", keys[:2], SHORTLIST_TOLERANCE), ("exact", keys, TOLERANCE)):
        path = export_onnx(LEGACY / "hybrid_tiled.safetensors", tmp_path / f"{search}.onnx", "plate",
                           memory_search=search)
        outputs = OnnxBackend(path).session.run(None, {"images": old["images"]})
        for key, got in zip(compared, outputs):
            np.testing.assert_allclose(got, old[f"onnx_{key}"], atol=tolerance, err_msg=f"{search}: {key}")
