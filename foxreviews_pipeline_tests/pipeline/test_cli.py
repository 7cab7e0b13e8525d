"""The README's commands, as a newcomer runs them."""

import os
import subprocess
import sys

import psycopg
import pytest

from foxreviews_pipeline.lib.db.server import with_database
from foxreviews_pipeline.lib.settings import PROJECT_ROOT

from .conftest import load_reference


def _env():
    return dict(os.environ)


@pytest.mark.slow
def test_the_main_command_runs_a_day_end_to_end(platform_env, dagster_storage_db, database_url):
    result = subprocess.run(
        [sys.executable, "-m", "foxreviews_pipeline.cli", "run-day", "--date", "2026-11-20"],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Day 2026-11-20: done in" in out
    assert "landed         35000 records" in out
    assert "checks         14 passed" in out and "FAILED" not in out
    with psycopg.connect(database_url) as conn:
        entreprises, prolocs = conn.execute(
            "SELECT (SELECT count(*) FROM enterprise_entreprise), (SELECT count(*) FROM enterprise_prolocalisation)"
        ).fetchone()
        assert entreprises > 30_000 and prolocs > 10_000
    # The runs are in Dagster's PostgreSQL storage, so the web UI shows them.
    with psycopg.connect(with_database(database_url, dagster_storage_db)) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'").fetchone()[0] == 3


@pytest.mark.slow
def test_dagster_asset_materialize_works_from_the_project_folder(
    platform_env, dagster_storage_db, database_url, tmp_path
):
    load_reference(database_url)
    config = tmp_path / "in_process.yaml"
    config.write_text("execution:\n  config:\n    in_process: {}\n")
    env = _env()
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "foxreviews_pipeline.definitions",
         "--select", "etablissements_raw,entreprises,pro_localisations", "--partition", "2026-11-20",
         "-c", str(config)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0] > 30_000
    with psycopg.connect(with_database(database_url, dagster_storage_db)) as conn:
        statuses = conn.execute("SELECT status FROM runs").fetchall()
    assert statuses == [("SUCCESS",)]
