"""docs/configuration.md lists every environment variable the code reads, and only those.

The code is read, not run: every ``env_str/env_int/env_float/env_bool/env_list("NAME")``
(agentflow/server/env.py), ``os.environ.get("NAME")``, ``os.environ["NAME"]``,
``os.getenv("NAME")`` and ``env.get("NAME")`` on a copy of the environment (the run
command) with a literal upper-case name, in every package of the project.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agentflow", "tenants", "hitl", "governance", "learning", "frontend", "manage.py")
READERS = {"env_str", "env_int", "env_float", "env_bool", "env_list"}
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")
DOC = ROOT / "docs" / "configuration.md"


def _is_environ(node: ast.expr) -> bool:
    """``os.environ``, or a name holding the environment (``env``, ``environ``)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in {"env", "environ"}


def _variable_read(node: ast.AST) -> str | None:
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        key = node.slice
        return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
    if not isinstance(node, ast.Call) or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    func = node.func
    if isinstance(func, ast.Name) and func.id in READERS:
        return first.value
    if isinstance(func, ast.Attribute) and (
        (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv"
    ):
        return first.value
    return None


def _python_files() -> list[Path]:
    files: list[Path] = []
    for name in PACKAGES:
        path = ROOT / name
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return [path for path in files if "migrations" not in path.parts]


def variables_read() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = _variable_read(node)
            if name and VARIABLE.match(name):
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def variables_documented() -> set[str]:
    """The names in the first column of the document's tables (``A`` / ``B`` name two)."""
    names: set[str] = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def test_the_scanner_finds_reads_of_every_kind() -> None:
    found = variables_read()
    assert "agentflow/server/settings.py" in found["SECRET_KEY"]  # env_str
    assert "agentflow/server/run.py" in found["PORT"]  # os.environ.get
    assert "agentflow/server/run.py" in found["RUN_CONCURRENCY"]  # env.get on a copy
    assert "frontend/demo.py" in found["DEMO_PASSWORD"]
    assert len(found) > 90


def test_every_variable_read_is_documented() -> None:
    missing = variables_read()
    for name in variables_documented():
        missing.pop(name, None)
    assert not missing, f"read but not in docs/configuration.md: {missing}"


def test_every_documented_variable_is_read() -> None:
    stale = variables_documented() - set(variables_read())
    assert not stale, f"documented in docs/configuration.md but read nowhere: {sorted(stale)}"
