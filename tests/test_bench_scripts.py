"""bench/ablation.py and bench/peers.py: budgets, tables and failures, without training anything."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ablation import ROWS, row_plan, summarise  # noqa: E402
from bench.peers import table  # noqa: E402

RATES = {1: 42.0, 2: 53.0}


def images(plan: dict, n_categories: int = 2, s2_ipc: int = 80) -> tuple[int, int]:
    sets = dict(item.split("=", 1) for item in plan["sets"])
    stage1 = int(sets.get("stage1.images_per_category", 0)) * plan["stage1_epochs"] * n_categories
    stage2 = plan["stage2_epochs"] * n_categories * s2_ipc
    return stage1, stage2


@pytest.mark.parametrize("row", ["full", "no_plpm", "no_tbm", "single_class"])
def test_two_stage_rows_get_the_same_schedule(row):
    full = row_plan("full", 30, RATES, 2, 0.5, 200, 80, 12)
    plan = row_plan(row, 30, RATES, 2, 0.5, 200, 80, 12)
    assert images(plan) == images(full)
    assert abs(images(full)[0] - 30 * 0.5 * 42) < 10 and abs(images(full)[1] - 30 * 0.5 * 53) < 80


def test_single_stage_rows_spend_the_whole_budget_on_their_stage():
    recon = row_plan("reconstruction", 30, RATES, 2, 0.5, 200, 80, 12)
    assert "run.pipeline=reconstruction" in recon["sets"] and recon["stage2_epochs"] == 0
    assert abs(images(recon)[0] - 30 * 42) < 10
    no_s1 = row_plan("no_stage1", 30, RATES, 2, 0.5, 200, 80, 12)
    assert "stage1.enabled=false" in no_s1["sets"] and abs(images(no_s1)[1] - 30 * 53) < 80


def test_pretrained_row_splits_stage_one_between_pretraining_and_stage_one():
    plan = row_plan("pretrained", 30, RATES, 2, 0.5, 200, 80, 12)
    pre = dict(item.split("=", 1) for item in plan["pretrain_sets"])
    pretrain_images = int(pre["stage1.images_per_category"]) * plan["pretrain_epochs"] * 12
    full_stage1 = images(row_plan("full", 30, RATES, 2, 0.5, 200, 80, 12))[0]
    assert abs(pretrain_images + images(plan)[0] - full_stage1) < 30


def test_tables_show_failures_instead_of_gaps():
    metrics = {"a": {"image_auroc": 0.9, "pixel_auroc": 0.8, "pixel_aupro": 0.5}}
    text = summarise([{"row": "full", "seed": 0, "metrics": metrics, "wall_s": 10, "cpu_s": 20},
                      {"row": "full", "seed": 1, "error": "mala train failed: boom", "wall_s": 1, "cpu_s": 1}], ["a"])
    assert "90.0" in text and "FAILED" in text and "boom" in text
    assert set(ROWS) >= {"reconstruction", "no_stage1", "no_plpm", "no_tbm", "full", "single_class", "pretrained"}
    peers = table([{"method": "draem", "category": "a", "error": "RuntimeError: x", "peak_mib": 1.0}])
    assert "FAILED: RuntimeError: x" in peers
