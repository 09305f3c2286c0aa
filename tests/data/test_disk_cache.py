"""The on-disk image cache: a second build skips decoding; a changed file invalidates it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mala.data import dataset
from mala.data.dataset import ImageCache, upscaled_note
from mala.data.sources import scan_roots
from tests.data import layouts


def _no_decoding(*_args, **_kwargs):
    raise AssertionError("decoded although the disk cache holds these images")


def test_a_second_build_reads_the_disk_cache(tmp_path, monkeypatch):
    layouts.mvtec_category(tmp_path / "data")
    samples = scan_roots([tmp_path / "data"])
    first = ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".npy", ".npz"]  # images, masks
    monkeypatch.setattr(dataset, "open_rgb", _no_decoding)
    second = ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")
    assert np.array_equal(first.images, second.images)
    assert first.masks.keys() == second.masks.keys() and all(np.array_equal(first.masks[i], second.masks[i])
                                                              for i in first.masks)
    with pytest.raises(AssertionError, match="decoded although"):  # another size is another cache file
        ImageCache.build(samples, 16, workers=1, cache_dir=tmp_path / "cache")


def test_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    layouts.mvtec_category(tmp_path / "data")
    samples = scan_roots([tmp_path / "data"])
    ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")
    changed = samples[0].path
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    monkeypatch.setattr(dataset, "open_rgb", _no_decoding)
    with pytest.raises(AssertionError, match="decoded although"):
        ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    layouts.mvtec_category(tmp_path / "data")
    samples = scan_roots([tmp_path / "data"])
    first = ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")
    (images_file,) = (tmp_path / "cache").glob("*.npy")
    images_file.write_bytes(b"garbage")
    again = ImageCache.build(samples, 32, workers=1, cache_dir=tmp_path / "cache")
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(np.load(images_file), first.images)


def test_images_read_from_the_disk_cache_still_count_as_enlarged(tmp_path, monkeypatch):
    """The count comes from the image headers, so a run on cached images warns as the first did."""
    layouts.mvtec_category(tmp_path / "data")
    samples = scan_roots([tmp_path / "data"])
    taller = [600, 16]  # taller than every image: all are enlarged
    first = ImageCache.build(samples, taller, workers=1, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(dataset, "open_rgb", _no_decoding)
    second = ImageCache.build(samples, taller, workers=1, cache_dir=tmp_path / "cache")
    assert first.upscaled == second.upscaled == len(samples)
    notes = [upscaled_note(cache.upscaled, len(cache.samples), cache.images.shape[1:3]) for cache in (first, second)]
    assert notes[0] == notes[1] is not None
