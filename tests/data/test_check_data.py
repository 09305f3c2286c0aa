"""`mala check-data`: counts per dataset, category, split and label; every problem; exit code 0 or 2."""

from __future__ import annotations

from PIL import Image

from mala.cli import main
from tests.data import layouts


def _check(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["check-data", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_clean_data_prints_the_counts_and_exits_0(tmp_path, capsys):
    layouts.mvtec_category(tmp_path / "mvtec", normals=3, defects=2)
    config = tmp_path / "data.yaml"
    config.write_text(f"datasets:\n  - {{kind: ksdd2, root: {layouts.ksdd2_root(tmp_path / 'ksdd')}}}\n")
    code, lines, _ = _check(capsys, "--data", str(tmp_path / "mvtec"), "--data-config", str(config))
    assert code == 0
    assert [line.split() for line in lines] == [
        ["dataset", "category", "split", "normal", "anomalous", "no", "mask"],
        ["ksdd", "kolektorsdd2", "train", "3", "1", "0"],
        ["ksdd", "kolektorsdd2", "test", "2", "2", "0"],
        ["mvtec", "plate", "train", "3", "0", "0"],
        ["mvtec", "plate", "test", "1", "2", "0"],
        ["no", "problems", "found"],
    ]


def test_anomalies_without_masks_are_counted(tmp_path, capsys):
    folders = layouts.generic_folders(tmp_path / "widget")
    spec = layouts.generic_spec(folders)
    code, lines, _ = _check(capsys, "--data", spec)
    assert code == 0 and lines[2].split() == ["widget", "widget", "test", "1", "2", "1"]


def test_every_problem_is_listed_and_the_exit_code_is_2(tmp_path, capsys):
    category = layouts.mvtec_category(tmp_path / "mvtec", normals=3, defects=2)
    goods = sorted((category / "train" / "good").iterdir())
    goods[0].write_bytes(b"truncated")  # found only by decoding
    Image.open(goods[1]).save(goods[1].with_suffix(".bmp"))  # two images named alike
    masks = sorted((category / "ground_truth" / "defect").iterdir())
    Image.new("L", (100, 80)).save(masks[0])  # wrong size: found only by decoding
    masks[1].unlink()
    (category / "test" / "scratch").mkdir()
    code, lines, err = _check(capsys, "--data", str(tmp_path / "mvtec"), "--workers", "1")
    assert code == 2
    assert err.splitlines()[-1] == "mala: error: 5 problem(s) in the data, listed above"  # after the progress bar
    problems = lines[lines.index("5 problem(s):") + 1:]
    expected = [
        f"{goods[1].with_suffix('.png')}: same name as {goods[1].stem}.bmp",
        f"{category}/test/defect/{masks[1].name.replace('_mask', '')}: no mask found",
        f"{category}/test/scratch: no images",
        f"{goods[0]}: cannot read image",
        f"{masks[0]}: mask is 100x80 but its image {masks[0].name.replace('_mask', '')} is 512x512",
    ]
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected):
        assert problem.strip().startswith(start), (problem, start)


def test_no_data_at_all_is_one_problem(tmp_path, capsys):
    code, lines, _ = _check(capsys, "--data", str(tmp_path / "nowhere"))
    assert code == 2
    assert lines == ["no images found", "1 problem(s):", f"  {tmp_path / 'nowhere'}: data folder not found"]
