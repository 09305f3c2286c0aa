"""The `tiny` recipe (hybrid encoder, stage 2, normal-feature memory), ONE model over magnetic_tile + metal_plate, at
112 px and 12 epochs, tested on their real test sets (lite0 with w = 0.5 gave mean image / pixel AUROC 97.8 / 89.1)."""

import json

from mala import engine
from mala.config import apply_overrides, load_config
from tests.conftest import shared_data

SHORT_RUN = [
    "model.image_size=112",
    "stage1.epochs=2",
    "stage1.warmup_epochs=1",
    "stage1.images_per_category=32",
    "stage2.epochs=12",
    "stage2.images_per_category=48",
    "stage2.anomalous_per_category=38",
    "stage2.lr=1e-3",
    "run.score_kernel=11",
    "run.accelerator=cpu",
    "global_map.steps=300",
]


def test_short_unified_run_beats_chance_on_real_defects(tmp_path):
    cfg = apply_overrides(load_config("tiny"), SHORT_RUN)
    cfg.synth.texture_dir = str(shared_data("dtd", "images"))
    roots = [shared_data("magnetic_tile"), shared_data("metal_plate")]
    model = engine.train(cfg, roots, tmp_path / "run")
    results = engine.test(model, roots, out=tmp_path / "report")
    print(json.dumps(results, indent=1))  # the figures, for the record (pytest -s)
    written = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert written["trained_on"] == ["magnetic_tile", "metal_plate"]
    assert written["metrics"]["mean"]["image_auroc"] == results["mean"]["image_auroc"]
    assert results["metal_plate"]["image_auroc"] > 0.93
    assert results["metal_plate"]["pixel_auroc"] > 0.9
    assert results["magnetic_tile"]["image_auroc"] > 0.9
    assert results["mean"]["image_auroc"] > 0.92
    assert results["mean"]["pixel_auroc"] > 0.84
    # not told the categories, the model routes every test image to its own category's memory section
    routed = engine.test(model, roots, figures_per_category=0, route=True)
    assert routed["magnetic_tile"]["routing"] == routed["metal_plate"]["routing"] == 1.0
    assert abs(routed["mean"]["image_auroc"] - results["mean"]["image_auroc"]) < 1e-9
