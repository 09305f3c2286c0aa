"""The package's layout: dependencies point down and every module name is one concept."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mala"
# folder -> the folders of the package it must not import (the layers above it, or a sibling it must not know)
FORBIDDEN = {
    "model": {"train", "eval", "deploy", "data", "synth", "tune"},
    "data": {"model", "train", "eval", "deploy", "synth", "tune"},
    "synth": {"model", "train", "eval", "deploy", "tune"},
    "train": {"tune"},
    "eval": {"train", "tune"},
    "deploy": {"train", "eval", "tune"},
}


def imported_modules(path: Path) -> set[str]:
    """Every `mala...` module a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mala"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mala"))
    return found


def folder_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and (PACKAGE / parts[1]).is_dir() else None


def test_dependencies_point_down():
    wrong = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / folder).glob("*.py")):
            wrong += [f"{path.relative_to(PACKAGE)} imports {module}" for module in sorted(imported_modules(path))
                      if folder_of(module) in forbidden]
    assert wrong == []


def test_the_checkpoint_file_format_knows_no_model():
    assert not any(module.startswith("mala.model") for module in imported_modules(PACKAGE / "checkpoint.py"))


def test_no_two_modules_share_a_name():
    names = Counter(path.stem for path in PACKAGE.rglob("*.py") if path.stem != "__init__")
    assert [name for name, count in names.items() if count > 1] == []
