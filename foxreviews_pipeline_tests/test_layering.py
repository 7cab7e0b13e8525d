"""`lib/` is plain Python: it never imports Dagster, the wiring, or the sample package."""

from __future__ import annotations

import ast
from pathlib import Path

import foxreviews_pipeline

LIB = Path(foxreviews_pipeline.__file__).parent / "lib"
FORBIDDEN = ("dagster", "foxreviews_pipeline.defs", "foxreviews_pipeline.sample")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_lib_imports_neither_dagster_nor_the_wiring_nor_the_sample():
    modules = sorted(LIB.rglob("*.py"))
    assert len(modules) > 30
    offending = [
        f"{path.relative_to(LIB)}: {name}"
        for path in modules
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert offending == []
