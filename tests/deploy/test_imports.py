"""The deploy modules import each other without a cycle, and each one imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "mala" / "deploy"
MODULES = sorted(path.stem for path in DEPLOY.glob("*.py") if path.stem != "__init__")


def deploy_imports(module: str) -> set[str]:
    """The deploy modules that `module` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse((DEPLOY / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name.removeprefix("mala.deploy.") for name in names if name.startswith("mala.deploy.")}
    return found & set(MODULES)


def cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    paths = [[start]]
    while paths:
        path = paths.pop()
        for following in sorted(graph[path[-1]]):
            if following == start:
                return path + [start]
            if following not in path:
                paths.append(path + [following])
    return None


def test_no_import_cycle_between_the_deploy_modules():
    graph = {module: deploy_imports(module) for module in MODULES}
    assert "contract" in graph["graph"] and "contract" in graph["backends"]
    assert "backends" not in graph["graph"]
    cycles = {module: cycle_through(module, graph) for module in MODULES}
    assert not any(cycles.values()), {module: " -> ".join(path) for module, path in cycles.items() if path}


@pytest.mark.parametrize("module", MODULES)
def test_each_deploy_module_imports_alone(module):
    result = subprocess.run([sys.executable, "-c", f"import mala.deploy.{module}"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
