"""The project's static contracts hold: import boundaries, lint and types."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


CONTRACTS = [
    "The agent kernel never imports Django",
    "The API client is a pure HTTP client: never Django, never the platform",
    "Layers: imports run one way",
    "HITL's domain imports neither learning's nor governance's",
    "Learning's domain imports neither HITL's nor governance's",
    "Governance's domain imports neither HITL's nor learning's",
]


def test_import_contracts_hold() -> None:
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


def _layered_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [m.strip() for layer in layers for m in layer.replace("|", ":").split(":")]


def test_every_production_module_has_a_layer() -> None:
    """A module no layer names escapes the contract: a new module must be placed."""
    layered = _layered_modules()
    unplaced = []
    for package in TYPED_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts or (parts[-1] == "__init__" and len(parts) == 2):
                continue
            module = ".".join(p for p in parts if p != "__init__")
            if not any(module == m or module.startswith(m + ".") for m in layered):
                unplaced.append(module)
    assert unplaced == []


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:]


# What `make lint` type-checks; the dev extra pins mypy and the stubs to one verdict.
TYPED_PACKAGES = ["agentflow", "tenants", "hitl", "governance", "learning", "frontend"]


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    # The repository's (git-ignored) cache: a rerun checks only what changed.
    cache = ROOT / ".mypy_cache"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), *TYPED_PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def test_ruff_format_is_clean() -> None:
    # Markdown is excluded in [tool.ruff.format]: the docs' examples keep their hand layout.
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


# A function longer than a screen is read in pieces; split it into named steps instead.
MAX_FUNCTION_LINES = 80


def _production_functions() -> list[tuple[int, str]]:
    """(length in lines, "path:name") of every function in the typed packages."""
    found: list[tuple[int, str]] = []
    for package in TYPED_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    found.append((length, f"{path.relative_to(ROOT)}:{node.name}"))
    return found


def test_no_production_function_exceeds_80_lines() -> None:
    functions = _production_functions()
    assert len(functions) > 500  # the walk found the code it is meant to measure
    too_long = sorted((item for item in functions if item[0] > MAX_FUNCTION_LINES), reverse=True)
    assert not too_long, "\n".join(f"{length} {where}" for length, where in too_long)


def test_no_module_imports_itself_through_others() -> None:
    """Issue 14: no import cycle between project modules, lazy imports inside functions
    included (grimp sees those too), so no cycle can hide behind a function-level import."""
    import grimp

    graph = grimp.build_graph(*TYPED_PACKAGES, include_external_packages=False)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    try:
        tuple(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")
