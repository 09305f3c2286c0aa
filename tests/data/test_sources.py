"""`--data` values, data-config files, dataset names and category prefixes, and one scan over several datasets."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from mala.data.sources import scan_roots, scan_sources
from mala.data.specs import DataSource, data_sources, parse_data_arg, read_data_config
from mala.errors import ConfigError, DataError
from tests.conftest import shared_data
from tests.data import layouts


def test_the_three_forms_of_a_data_value():
    assert parse_data_arg("/data/mvtec") == DataSource(root=Path("/data/mvtec"))
    assert parse_data_arg("visa:/data/VisA") == DataSource(kind="visa", root=Path("/data/VisA"))
    assert parse_data_arg("kind=folder,normal=n,test=t/good;t/scratch,masks=m,name=w,categories=a;b") == DataSource(
        kind="folder", normal=Path("n"), test=(Path("t/good"), Path("t/scratch")), masks=Path("m"), name="w",
        categories=("a", "b"),
    )
    assert parse_data_arg("kind=mt,root=/mt,seed=3").seed == 3
    assert parse_data_arg("other:/x") == DataSource(root=Path("other:/x"))  # not a kind: a path


@pytest.mark.parametrize("value, message", [
    ("kind=nope,root=/x", "unknown kind 'nope'; known: mvtec, visa, ksdd2, mt, folder"),
    ("kind=visa,root=/x,seed=1", "unknown option(s) seed; visa takes kind, name, categories, root, split_csv"),
    ("root=/x,seed=1", "unknown option(s) seed; here takes kind, name, categories, root (layout options need an "
                       "explicit kind)"),
    ("kind=folder,test=/t", "normal is missing"),
    ("kind=mt,root=/x,seed=one", "seed must be an integer, got 'one'"),
    ("kind=mt,root=/x,root=/y", "expected KEY=VALUE items separated by commas, each key once; got 'root=/y'"),
])
def test_bad_data_values_name_the_value(value, message):
    with pytest.raises(ConfigError) as error:
        parse_data_arg(value)
    assert str(error.value) == f"--data {value!r}: {message}"


def test_a_data_config_resolves_paths_from_its_folder(tmp_path):
    config = tmp_path / "configs" / "data.yaml"
    config.parent.mkdir()
    config.write_text(
        "datasets:\n"
        "  - root: ../mvtec\n"
        "    categories: [bottle]\n"
        "  - {kind: folder, name: widgets, normal: w/normal, test: [w/test/good, w/test/dent], masks: w/masks}\n"
        "  - {kind: mt, root: /data/MT, seed: 2}\n"
    )
    first, second, third = read_data_config(config)
    assert first == DataSource(root=config.parent / "../mvtec", categories=("bottle",))
    assert second.test == (config.parent / "w/test/good", config.parent / "w/test/dent") and second.name == "widgets"
    assert third == DataSource(kind="mt", root=Path("/data/MT"), seed=2)


@pytest.mark.parametrize("text, message", [
    ("- root: /x\n", "expected one key, `datasets:`, holding a list of datasets"),
    ("datasets: []\n", "`datasets:` is empty"),
    ("datasets:\n  - {kind: visa, root: /v, masks: /m}\n", "datasets[0]: unknown option(s) masks"),
    ("datasets: [\n", "not valid YAML"),
])
def test_bad_data_configs_name_the_file(tmp_path, text, message):
    config = tmp_path / "data.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config))}: .*{re.escape(message)}"):
        read_data_config(config)


def test_data_values_and_a_config_add_up_and_none_is_an_error(tmp_path):
    config = tmp_path / "data.yaml"
    config.write_text("datasets:\n  - root: /b\n")
    assert [s.root for s in data_sources(["/a"], config)] == [Path("/a"), Path("/b")]
    with pytest.raises(ConfigError, match="no data: give --data PATH ... or --data-config FILE"):
        data_sources(None, None)


def test_unified_scan_over_real_roots_and_a_visa_copy_prefixes_the_shared_category(tmp_path):
    visa = layouts.visa_root(tmp_path / "visa")
    samples = scan_roots([shared_data("magnetic_tile"), shared_data("metal_plate"), visa])
    counts = Counter((s.dataset, s.category, s.split, s.label) for s in samples)
    assert counts == {
        ("magnetic_tile", "magnetic_tile", "train", 0): 714,
        ("magnetic_tile", "magnetic_tile", "test", 0): 238,
        ("magnetic_tile", "magnetic_tile", "test", 1): 392,
        ("metal_plate", "metal_plate/metal_plate", "train", 0): 54,
        ("metal_plate", "metal_plate/metal_plate", "test", 0): 26,
        ("metal_plate", "metal_plate/metal_plate", "test", 1): 81,
        ("visa", "visa/metal_plate", "train", 0): 3,
        ("visa", "visa/metal_plate", "test", 0): 1,
        ("visa", "visa/metal_plate", "test", 1): 2,
    }
    chosen = scan_roots([shared_data("metal_plate"), visa], ["visa/metal_plate"])
    assert {s.category for s in chosen} == {"visa/metal_plate"}
    with pytest.raises(DataError, match=r"categories not found: metal_plate \(found: metal_plate/metal_plate, visa/"):
        scan_roots([shared_data("metal_plate"), visa], ["metal_plate"])


def test_a_data_config_names_datasets_and_picks_categories(tmp_path):
    layouts.mvtec_category(tmp_path / "mvtec", "plate")
    layouts.mvtec_category(tmp_path / "mvtec", "bolt")
    layouts.visa_root(tmp_path / "VisA", name="plate")
    config = tmp_path / "data.yaml"
    config.write_text("datasets:\n"
                      "  - {root: mvtec, name: mv, categories: [plate]}\n"
                      "  - {kind: visa, root: VisA}\n")
    samples = scan_roots(data_sources(None, config))
    assert {(s.dataset, s.category) for s in samples} == {("mv", "mv/plate"), ("VisA", "VisA/plate")}


def test_two_datasets_of_one_name_and_missing_categories_are_problems(tmp_path):
    layouts.mvtec_category(tmp_path / "a" / "data")
    layouts.mvtec_category(tmp_path / "b" / "data")
    first, second = tmp_path / "a" / "data", tmp_path / "b" / "data"
    assert scan_sources([first, second]).problems == [
        f"{second}: dataset name 'data' is also that of {first}; name one of them (name=... in --data or a data config)"
    ]
    assert not scan_sources([first, f"root={second},name=other"]).problems
    assert scan_sources([f"kind=mvtec,root={first},categories=plate;nut"]).problems == [
        f"{first}: categories not found: nut (found: plate)"
    ]
