"""The imports point one way: tasks → stack → compose → common (and nothing back)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package → the packages of ours it must never import
FORBIDDEN = {
    "common": {"compose", "stack", "tasks", "extensions", "backups"},
    "compose": {"stack", "tasks"},
    "stack": {"tasks"},
}


def our_imports(path: Path) -> set[str]:
    """The top-level packages of ours a module imports (absolute or relative)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if node.level == 0 and parts[0] == "ollama_stack" and len(parts) > 1:
                found.add(parts[1])
            elif node.level >= 2:  # `from ..x import` leaves the package
                found.add(parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ollama_stack" and len(parts) > 1:
                    found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_back(package):
    bad = {
        str(path.relative_to(ROOT)): sorted(our_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_sees_imports():
    # the rule above would pass on an empty tree: make sure it reads this one
    assert "common" in our_imports(ROOT / "compose" / "client.py")
    assert "compose" in our_imports(ROOT / "stack" / "lifecycle.py")
