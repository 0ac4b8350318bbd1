"""The imports point one way: tasks → stack → compose → common (and nothing back).

Inside stack/, the rooms a newcomer reads first stay below the machinery
that uses them: the service catalog (services/) and hosts (hosts/) never
import the runtime, lifecycle, update engine, doctor, uninstall or display.
Imports under ``if TYPE_CHECKING:`` are type hints, not dependencies.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "compose", "stack", "tasks", "extensions", "backups")
# folder → modules of ours (dotted, from the checkout root) it must never import
FORBIDDEN = {
    "common": ["compose", "stack", "tasks", "extensions", "backups"],
    "compose": ["stack", "tasks"],
    "stack": ["tasks", "backups", "extensions"],
    "backups": ["tasks", "extensions"],
    "extensions": ["tasks", "backups"],
    "stack/services": [
        "stack.runtime",
        "stack.lifecycle",
        "stack.update.engine",
        "stack.doctor",
        "stack.uninstall",
        "stack.display",
        "stack.links",
    ],
    "stack/hosts": [
        "stack.services",
        "stack.runtime",
        "stack.lifecycle",
        "stack.update",
        "stack.doctor",
        "stack.uninstall",
        "stack.display",
    ],
}


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            skipped |= set(ast.walk(node))
    return skipped


def our_imports(path: Path) -> set[str]:
    """The modules of ours a file imports, dotted from the checkout root."""
    package = list(path.relative_to(ROOT).parent.parts)
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = [*base, *(node.module.split(".") if node.module else [])]
            else:
                parts = (node.module or "").split(".")
                if parts[0] != "ollama_stack":
                    continue
                parts = parts[1:]
            found |= {".".join([*parts, alias.name]) for alias in node.names}
            found.add(".".join(parts))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ollama_stack":
                    found.add(".".join(parts[1:]))
    return {name for name in found if name.split(".")[0] in PACKAGES}


def breaks(imported: str, rule: str) -> bool:
    return imported == rule or imported.startswith(rule + ".")


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_import_points_back(folder):
    bad = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        wrong = sorted(
            name for name in our_imports(path) for rule in FORBIDDEN[folder] if breaks(name, rule)
        )
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    assert bad == {}


def test_the_check_sees_imports():
    # the rules above would pass on an empty tree: make sure it reads this one
    assert "common.errors" in our_imports(ROOT / "compose" / "client.py")
    assert "compose.client" in our_imports(ROOT / "stack" / "lifecycle.py")
    kinds = our_imports(ROOT / "stack" / "services" / "kinds.py")
    assert "stack.update.registry" in kinds  # a relative `..update` import, resolved
    assert "stack.runtime" not in kinds  # only under TYPE_CHECKING there
    assert "stack.services.kinds" in our_imports(ROOT / "stack" / "runtime.py")
