"""Image sizes: an int (square) or [height, width] in YAML, --set and --image-size; every bad form is one line."""

from __future__ import annotations

import pytest

from mala.cli import main
from mala.config import MalaConfig, apply_overrides, config_from_dict, load_config
from mala.errors import ConfigError
from mala.sizes import aspect_shape, describe_shape, image_shape, median_aspect_ratio, parse_size_option


@pytest.mark.parametrize("value,shape", [(224, (224, 224)), ([320, 128], (320, 128)), ((96, 64), (96, 64)),
                                         ([64], (64, 64)), (64.0, (64, 64))])
def test_a_size_is_read_as_height_and_width(value, shape):
    assert image_shape(value) == shape


@pytest.mark.parametrize("value", [0, -16, [320, 0], [320, 128, 3], [], "224", "320x128", True, 12.5, None])
def test_a_malformed_size_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"model\.image_size: expected an integer \(square\) or \[height, width\]"):
        image_shape(value)


def test_yaml_takes_a_square_or_height_and_width(tmp_path):
    path = tmp_path / "rect.yaml"
    path.write_text("model:\n  image_size: [320, 128]\n")
    model = load_config(str(path)).model
    assert model.image_size == [320, 128] and model.image_shape == (320, 128) and model.token_grid == (20, 8)
    assert load_config("tiny").model.image_shape == (224, 224)


def test_set_parses_a_list_and_a_saved_config_reads_back(tmp_path):
    cfg = apply_overrides(MalaConfig(), ["model.image_size=[320,128]"])
    assert cfg.model.image_shape == (320, 128)
    cfg.save(tmp_path / "config.yaml")
    assert "image_size:\n  - 320\n  - 128" in (tmp_path / "config.yaml").read_text()
    assert load_config(str(tmp_path / "config.yaml")).model.image_shape == (320, 128)


def test_a_square_pair_is_stored_as_one_number_as_before():
    assert apply_overrides(MalaConfig(), ["model.image_size=[96, 96]"]).model.image_size == 96
    assert config_from_dict({"model": {"image_size": 224}}).model.image_size == 224  # configs saved before


def test_set_with_a_malformed_size_is_one_line(capsys, tmp_path):
    assert main(["train", "--dry-run", "--data", str(tmp_path), "--set", "model.image_size=[320,x]"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mala: error: model.image_size: expected an integer (square) or [height, width] of positive integers, "
        "got [320, 'x']"]


@pytest.mark.parametrize("text,stored", [("224", 224), ("320x128", [320, 128]), ("320 X 128", [320, 128]),
                                         ("96,64", [96, 64]), ("64x64", 64)])
def test_image_size_option_forms(text, stored):
    assert parse_size_option(text) == stored


@pytest.mark.parametrize("text", ["", "x128", "320x", "320x128x3", "big", "0x128", "-5"])
def test_a_malformed_image_size_option_is_refused_by_the_parser(text, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--image-size", text, "--dry-run"])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mala train: error: argument --image-size:") and "Traceback" not in last


@pytest.mark.parametrize("preset,size,message", [
    ("base", "100", "model.image_size 100 px: each side must be a multiple of 16 (the patch size); e.g. 96 px"),
    ("base", "64x36", "model.image_size 64 x 36 px (height x width): each side must be a multiple of 16 (the patch "
                      "size); e.g. 64 x 32 px (height x width)"),
    ("tiny", "64x84", "model.image_size 64 x 84 px (height x width): each side must be a multiple of 16 (patch size "
                      "16 and the backbone's strides); e.g. 64 x 80 px (height x width)"),
])
def test_sides_off_the_patch_grid_are_one_line(preset, size, message, capsys):
    assert main(["cost", "--presets", preset, "--image-size", size, "--repeats", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"mala: error: {message}"


def test_image_size_with_resume_is_refused(tmp_path, capsys):
    assert main(["train", "--resume", "--image-size", "aspect", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--image-size cannot change them" in capsys.readouterr().err


def test_describe_shape_names_the_order():
    assert describe_shape((224, 224)) == "224 px"
    assert describe_shape((320, 128)) == "320 x 128 px (height x width)"


def test_median_aspect_ratio_of_image_shapes():
    # Pillow gives (width, height): two line-scan strips 1:2.5 tall and one square
    assert median_aspect_ratio([(250, 100), (500, 200), (64, 64)]) == pytest.approx(2.5)
    assert median_aspect_ratio([(200, 100), (50, 100)]) == pytest.approx(1.0)  # even count: geometric middle
    with pytest.raises(ConfigError, match="no images"):
        median_aspect_ratio([])


@pytest.mark.parametrize("ratio,shape", [(1.0, (224, 224)), (2.5, (352, 144)), (0.4, (144, 352)),
                                         (0.5, (160, 320)), (100.0, (2240, 16))])
def test_aspect_shape_keeps_the_pixel_count_on_the_grid(ratio, shape):
    chosen = aspect_shape(ratio, 224 * 224, 16)
    assert chosen == shape
    assert all(side % 16 == 0 for side in chosen)
    if ratio < 10:
        assert abs(chosen[0] * chosen[1] / 224**2 - 1) < 0.1


def test_aspect_in_the_config_points_to_the_option(tmp_path, capsys):
    assert main(["train", "--set", "model.image_size=aspect", "--data", str(tmp_path), "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("got 'aspect' (the aspect is chosen from the training images: "
                                                    "`--image-size aspect`)")
