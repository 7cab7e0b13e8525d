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


# The directory's tables, which only `lib/directory/`, `lib/reference/` and `lib/uploads/` read
# or write: the SIRENE layer lands and stages INSEE's data and stops there.
DIRECTORY_TABLES = ("enterprise_", "location_", "ref_naf_", "category_", "subcategory_", "ville_stats")


def test_the_sirene_layer_never_touches_the_directory_tables():
    modules = sorted((LIB / "sirene").glob("*.py"))
    assert len(modules) > 5
    offending = []
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                is_sql = any(w in text for w in ("SELECT", "INSERT", "UPDATE", "DELETE", "FROM"))
                if is_sql and any(table in text for table in DIRECTORY_TABLES):
                    offending.append(f"{path.name}:{node.lineno}")
    assert offending == []
