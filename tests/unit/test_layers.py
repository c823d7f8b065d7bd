"""The import boundaries of STYLE.md section 3, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, set[str]] = {
    "raft/core": {"asyncio", "time", "os", "store", "v2api", "v3gateway", "app", "starlette", "httpx", "uvicorn"},
    "raft": {"store", "v2api", "v3gateway", "app", "starlette", "httpx", "uvicorn"},
    "store": {"raft", "v2api", "v3gateway", "app", "starlette", "httpx", "uvicorn", "asyncio", "time"},
    "v2api": {"raft", "app", "v3gateway"},
}


def imported_top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}"
    for path in files:
        bad = imported_top_level_names(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_raft_core_uses_no_module_level_random() -> None:
    for path in sorted((ROOT / "raft/core").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "random":
                assert node.attr in {"Random"}, f"{path.relative_to(ROOT)} calls random.{node.attr}"
