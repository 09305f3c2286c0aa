"""Object or texture per category: the automatic choice, the choice by hand (synth.objects), printed and stored."""

from pathlib import Path

import numpy as np
import pytest
from lightning_fabric import Fabric

from mala.checkpoint import read_metadata
from mala.config import SynthConfig, apply_overrides
from mala.data.dataset import ImageCache
from mala.data.sources import scan_roots
from mala.data.samples import Sample
from mala.errors import ConfigError
from mala.synth import AnomalySynthesizer, foreground_mask, looks_like_object
from mala.train.setup import training_data
from mala.train.trainer import Trainer
from tests.conftest import shared_data

SIZE = 64


def border_block(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright block that fills the left third of the image down from near the top (it touches three borders
    over a third of their length), on a dark background; and its true mask."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    block = (cols < 26) & (rows > 6)
    image = np.where(block, 0.8, 0.2)[..., None] + np.random.default_rng(seed).normal(0, 0.04, (SIZE, SIZE, 3))
    return np.clip(image, 0, 1).astype(np.float32), block


def border_block_cache(category: str = "blocks", count: int = 4) -> tuple[ImageCache, np.ndarray]:
    images = np.stack([np.round(border_block(seed)[0] * 255).astype(np.uint8) for seed in range(count)])
    samples = [Sample(category, Path(f"{category}/{i}.png"), "train", 0) for i in range(count)]
    return ImageCache(samples, images, {}), border_block(0)[1]


def test_objects_touching_the_border_are_misjudged_by_the_automatic_rule():
    images = [border_block(seed)[0] for seed in range(4)]
    assert not looks_like_object(images)
    assert foreground_mask(images[0]).all()
    known = foreground_mask(images[0], known_object=True)
    truth = border_block(0)[1]
    assert (known & truth).sum() / (known | truth).sum() > 0.9


def test_an_object_set_by_hand_gets_its_anomalies_on_the_foreground():
    cache, truth = border_block_cache()
    assert training_data(cache).object_categories == []  # the automatic rule says texture
    data = training_data(cache, by_hand={"blocks": True})
    assert data.object_categories == ["blocks"] and data.set_by_hand == ["blocks"]
    foregrounds = data.foregrounds()
    assert sorted(foregrounds) == [0, 1, 2, 3]
    assert not foregrounds[0].all()
    synthesizer = AnomalySynthesizer(SynthConfig(local_prob=1.0), SIZE)
    rng = np.random.default_rng(0)
    for index in range(4):
        _, mask = synthesizer(cache.images[index].astype(np.float32) / 255, rng, anomalous=True,
                              foreground=foregrounds[index])
        assert mask.any() and not (mask.astype(bool) & ~truth).any(), "anomaly off the object"


def test_by_hand_goes_before_the_configured_list_and_the_rule():
    cache, _ = border_block_cache()
    assert training_data(cache, configured=["blocks"], by_hand={"blocks": False}).object_categories == []
    assert training_data(cache, configured=[]).set_by_hand == []


def test_unknown_or_malformed_choices_are_one_line_errors(small_config):
    cache, _ = border_block_cache()
    with pytest.raises(ConfigError, match="synth.objects names metl_plate, not among the training categories"):
        training_data(cache, by_hand={"metl_plate": True})
    assert apply_overrides(small_config, ["synth.objects={blocks: true}"]).synth.objects == {"blocks": True}
    with pytest.raises(ConfigError, match="synth.objects: expected a mapping of names to true/false"):
        apply_overrides(small_config, ["synth.objects=[blocks]"])
    with pytest.raises(ConfigError, match="synth.objects: expected a mapping"):
        apply_overrides(small_config, ["synth.objects={blocks: maybe}"])


def test_the_choice_is_printed_at_the_start_and_stored_in_the_run(tmp_path, small_config, capsys):
    samples = [s for root in ("magnetic_tile", "metal_plate") for s in scan_roots([shared_data(root)])
               if s.split == "train"][::40]
    cfg = apply_overrides(small_config, ["synth.objects={magnetic_tile: false}", "stage1.enabled=false",
                                         "stage2.epochs=0"])
    data = training_data(ImageCache.build(samples, SIZE, workers=1), by_hand=cfg.synth.objects)
    model_file = Trainer(cfg, tmp_path, Fabric(accelerator="cpu", devices=1)).fit(data)
    printed = capsys.readouterr().err.splitlines()
    assert "mala: magnetic_tile: texture (anomalies anywhere), set in synth.objects" in printed
    assert "mala: metal_plate: object (anomalies on the foreground)" in printed
    stored = read_metadata(model_file)
    assert stored["data"]["object_categories"] == ["metal_plate"]
    assert stored["config"]["synth"]["objects"] == {"magnetic_tile": False}
    assert "magnetic_tile: false" in (tmp_path / "config.yaml").read_text()
