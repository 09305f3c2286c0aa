"""`mala demo`: procedural data, a short `tiny` training run on this CPU, and its test results."""

from __future__ import annotations

from pathlib import Path

from mala import engine
from mala.config import apply_overrides, load_config
from mala.data.procedural import make_demo_dataset
from mala.eval.metrics import MetricsTable

DEMO_SIZE = 128
# Epochs that take about this many minutes on a 2-core CPU; --minutes scales them.
REFERENCE_MINUTES = 4.0
STAGE1_EPOCHS = 3  # a short stage 1: on this little data most of the gain comes from stage 2
STAGE2_EPOCHS = 40
GLOBAL_MAP_STEPS = 600  # the global map's autoencoder (`tiny` trains 3,000 steps on real data)


def demo_overrides(minutes: float) -> list[str]:
    scale = max(minutes, 0.05) / REFERENCE_MINUTES
    stage1, stage2 = max(1, round(STAGE1_EPOCHS * scale)), max(1, round(STAGE2_EPOCHS * scale))
    return [
        f"model.image_size={DEMO_SIZE}",
        f"stage1.epochs={stage1}",
        f"stage1.warmup_epochs={max(1, stage1 // 6)}",
        "stage1.images_per_category=60",
        f"stage2.epochs={stage2}",
        "stage2.images_per_category=48",
        "stage2.anomalous_per_category=38",
        "run.score_kernel=9",
        f"global_map.steps={max(50, round(GLOBAL_MAP_STEPS * scale))}",
    ]


def run_demo(out: Path, minutes: float = REFERENCE_MINUTES, seed: int = 0) -> MetricsTable:
    """Generate the demo data under `out/data`, train into `out/run`, choose the decision thresholds on validation
    images drawn with another seed (`out/validation`), test; returns per-category metrics."""
    data, validation = Path(out) / "data", Path(out) / "validation"
    categories = make_demo_dataset(data, image_size=DEMO_SIZE, n_train=60, n_test_good=12, n_test_defect=6, seed=seed)
    print(f"demo dataset: {', '.join(categories)} in {data}")
    cfg = apply_overrides(load_config("tiny"), demo_overrides(minutes))
    model = engine.train(cfg, [data], Path(out) / "run")
    # the validation set's own `test` images: labelled, and none of them in training or test
    make_demo_dataset(validation, image_size=DEMO_SIZE, n_train=1, n_test_good=12, n_test_defect=3, seed=seed + 1)
    engine.calibrate(model, roots=[validation])
    return engine.test(model, [data], out=Path(out) / "run" / "test")
