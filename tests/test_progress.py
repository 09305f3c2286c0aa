"""Progress in logs: plain lines, bounded in number, at every call site; a live bar only on a terminal."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


from mala import progress as progress_module
from mala.progress import STEPS, LineProgress, progress
from tests.conftest import shared_data

PACKAGE = Path(__file__).resolve().parents[1] / "mala"

LOOP = """
import time
from mala.progress import progress
for _ in progress(range(2000), desc="work", unit="item"):
    time.sleep(0.0005)
with progress(total=300, desc="manual", unit="img") as bar:
    for _ in range(300):
        bar.update(1)
        bar.set_postfix(loss="0.1234")
"""


def _lines(stderr: str) -> list[str]:
    assert "\r" not in stderr
    return stderr.splitlines()


def test_off_a_terminal_progress_is_a_few_plain_lines():
    result = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True, timeout=120, check=True)
    lines = _lines(result.stderr)
    work = [line for line in lines if line.startswith("work: ")]
    manual = [line for line in lines if line.startswith("manual: ")]
    assert len(work) == STEPS and len(manual) == STEPS and len(lines) == 2 * STEPS
    assert work[0].startswith("work: 200/2000 item (10%), ") and "item/s" in work[0] and " left" in work[0]
    assert work[-1].startswith("work: 2000/2000 item (100%), ")
    assert manual[-1].startswith("manual: 300/300 img (100%), ") and manual[-1].endswith("loss=0.1234")


def test_a_loop_of_unknown_length_writes_a_line_at_each_heartbeat_and_at_the_end(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "HEARTBEAT_S", 0.0)
    assert list(progress(iter(range(3)), desc="stream", unit="batch")) == [0, 1, 2]
    assert [line.split(",")[0] for line in _lines(capsys.readouterr().err)] == [
        "stream: 1 batch", "stream: 2 batch", "stream: 3 batch"]


def test_disabled_progress_writes_nothing(capsys):
    bar = progress(total=5, desc="other rank", disable=True)
    assert isinstance(bar, LineProgress)
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_check_data_writes_a_bounded_log():
    result = subprocess.run([sys.executable, "-m", "mala.cli", "check-data", "--data", str(shared_data("metal_plate"))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = _lines(result.stderr)
    assert 1 <= len(lines) <= STEPS + 1 and lines[-1].startswith("reading images: ") and "(100%)" in lines[-1]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_every_progress_bar_goes_through_the_helper():
    direct = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                    if path.name != "progress.py" and any(m.split(".")[0] == "tqdm" for m in _imported_modules(path)))
    assert direct == []


def test_the_helper_imports_no_torch():
    code = "import sys, mala.progress; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
