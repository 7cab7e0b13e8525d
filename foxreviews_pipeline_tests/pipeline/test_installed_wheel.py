"""The package as a wheel: built from the project's sources, installed (not editable) into a
fresh virtual environment, and run from a folder outside the project. Migrations, reference
data and the instance template must come from the installed package, not the source tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest
import yaml

from foxreviews_pipeline.lib.db.migrations import discover
from foxreviews_pipeline.lib.db.server import database_name, with_database
from foxreviews_pipeline.lib.settings import PROJECT_ROOT
from foxreviews_pipeline_tests.conftest import drop_database

DAY = "2026-11-20"


def _uv() -> str:
    # scripts/setup.sh installs uv into the project's .venv; its cache holds every dependency.
    uv = Path(sys.executable).with_name("uv")
    found = str(uv) if uv.exists() else shutil.which("uv")
    assert found, "uv not found beside the test interpreter nor on PATH (scripts/setup.sh installs it)"
    return found


@pytest.fixture
def fresh_platform(new_database, pg_server_url, tmp_path):
    """An empty, unmigrated database (the installed package must migrate it from its own
    files) and the environment of a platform using it, its home in a temporary folder."""
    url = new_database(migrated=False)
    env = {
        name: value for name, value in os.environ.items()
        if not name.startswith(("FOXREVIEWS_", "DAGSTER_")) and name not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update({
        "FOXREVIEWS_DATABASE_URL": url,
        "FOXREVIEWS_HOME": str(tmp_path / "home"),
        "FOXREVIEWS_SIRENE_SOURCE": "sample",
        "FOXREVIEWS_PARTITIONS_START": os.environ["FOXREVIEWS_PARTITIONS_START"],
    })
    yield env
    drop_database(pg_server_url, database_name(url) + "_dagster")


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.slow
def test_the_installed_wheel_runs_a_day_from_any_folder(fresh_platform, tmp_path):
    env = fresh_platform
    database_url = env["FOXREVIEWS_DATABASE_URL"]
    # Only what a build reads, so that nothing else of the checkout can leak into the wheel.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "dagster.yaml"):
        shutil.copy(PROJECT_ROOT / name, src / name)
    shutil.copytree(PROJECT_ROOT / "sql", src / "sql")
    shutil.copytree(
        PROJECT_ROOT / "foxreviews_pipeline", src / "foxreviews_pipeline",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    uv = _uv()
    dist = tmp_path / "dist"
    _run([uv, "build", "--wheel", "--offline", "-o", str(dist), str(src)], cwd=tmp_path, env=env)
    (wheel,) = dist.glob("foxreviews_pipeline-*.whl")

    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = [m.name for m in discover()]
    assert migrations and {f"foxreviews_pipeline/sql/{name}" for name in migrations} <= names
    assert "foxreviews_pipeline/dagster.yaml" in names
    for name in ("naf_rev2.csv.gz", "communes.csv.gz", "trade_taxonomy.yaml"):
        assert f"foxreviews_pipeline/reference_data/{name}" in names

    venv = tmp_path / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)], cwd=tmp_path, env=env)
    python = str(venv / "bin" / "python")
    _run([uv, "pip", "install", "--offline", "--python", python, str(wheel)], cwd=tmp_path, env=env)

    work = tmp_path / "elsewhere"  # a folder outside the project, with no .env of its own
    work.mkdir()
    code = "import foxreviews_pipeline; print(foxreviews_pipeline.__file__)"
    where = _run([python, "-c", code], cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    # The instance template is package data: `foxreviews instance` copies it and records the
    # instance in the .env of the folder it starts in (an installed package has no checkout).
    home = Path(env["FOXREVIEWS_HOME"])
    _run([str(venv / "bin" / "foxreviews"), "instance"], cwd=work, env=env)
    template = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    assert yaml.safe_load((home / "dagster" / "dagster.yaml").read_text()) == template
    assert f"DAGSTER_HOME='{home / 'dagster'}'" in (work / ".env").read_text()

    result = _run([str(venv / "bin" / "foxreviews"), "run-day", "--date", DAY], cwd=work, env=env)
    out = result.stdout
    assert f"Day {DAY}: done in" in out
    assert re.search(r"^\s+reference\s+NAF codes 732 rév. 2 \+ 747 NAF 2025, villes 3\d{4}$", out, re.MULTILINE), out
    landed = r"^\s+landed\s+35000 records in \d+ API calls \(0 retries, 0 × 429\)$"
    assert re.search(landed, out, re.MULTILINE), out
    assert re.search(r"^\s+checks\s+17 passed$", out, re.MULTILINE), out
    inserted = int(re.search(r"entreprises\s+(\d+) inserted, 0 updated", out).group(1))
    assert _count(database_url, "SELECT count(*) FROM enterprise_entreprise") == inserted > 30_000
    applied = _count(database_url, "SELECT count(*) FROM foxreviews_schema_migrations")
    assert applied == len(migrations)
    dagster_url = with_database(database_url, database_name(database_url) + "_dagster")
    assert _count(dagster_url, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == 3
    # Nothing was written beside the installed package.
    assert not list(venv.rglob(".foxreviews")) and not list(venv.rglob(".env"))
