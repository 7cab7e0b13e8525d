"""The README's commands, as a newcomer runs them: `foxreviews run-day` and
`dagster asset materialize` from the project folder, on a real PostgreSQL, with Dagster's
runs kept in the `<data database>_dagster` database of the same server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.reference.definitions import REFERENCE_ASSETS
from foxreviews_pipeline.defs.resources import build_resources
from foxreviews_pipeline.lib.db.server import with_database
from foxreviews_pipeline.lib.settings import PROJECT_ROOT, load_settings

DAY = "2026-11-20"


def _env() -> dict[str, str]:
    env = dict(os.environ)  # platform_env has pointed FOXREVIEWS_* at the test database
    env.pop("DAGSTER_HOME", None)  # the project's dagster.yaml is what must be used
    return env


def _foxreviews() -> list[str]:
    script = Path(sys.executable).with_name("foxreviews")  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "foxreviews_pipeline.cli"]


def _count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.slow
def test_the_main_command_runs_a_day_end_to_end(platform_env, dagster_storage_db, database_url):
    result = subprocess.run(
        [*_foxreviews(), "run-day", "--date", DAY],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert f"Day {DAY}: done in" in out
    for label in ("reference", "landed", "entreprises", "ProLocalisations", "ville_stats", "checks"):
        assert re.search(rf"^\s+{label}\s", out, re.M), f"no {label!r} line in:\n{out}"
    assert re.search(r"^\s+reference\s+NAF codes 732, villes 3\d{4}$", out, re.M), out
    assert re.search(r"^\s+landed\s+35000 records in \d+ API calls \(0 retries, 0 × 429\)$", out, re.M), out
    assert re.search(r"^\s+checks\s+14 passed$", out, re.M), out

    inserted = int(re.search(r"entreprises\s+(\d+) inserted, 0 updated", out).group(1))
    created = int(re.search(r"ProLocalisations (\d+) created", out).group(1))
    assert _count(database_url, "SELECT count(*) FROM enterprise_entreprise") == inserted > 30_000
    assert _count(database_url, "SELECT count(*) FROM enterprise_prolocalisation") == created > 10_000
    active = int(re.search(r"ville_stats\s+(\d+) active entreprises", out).group(1))
    assert _count(database_url, "SELECT total_entreprises_actives FROM ville_stats") == active
    # The three runs (reference, the day, ville_stats) are in Dagster's PostgreSQL storage,
    # so the web UI shows them.
    dagster_url = with_database(database_url, dagster_storage_db)
    assert _count(dagster_url, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == 3


@pytest.mark.slow
def test_dagster_asset_materialize_works_from_the_project_folder(
    platform_env, dagster_storage_db, database_url, tmp_path
):
    # The reference assets first, through Dagster (in process).
    reference = dg.materialize(REFERENCE_ASSETS, resources=build_resources(load_settings()))
    assert reference.success

    config = tmp_path / "in_process.yaml"
    config.write_text("execution:\n  config:\n    in_process: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "foxreviews_pipeline.definitions",
         "--select", "etablissements_raw,entreprises,pro_localisations", "--partition", DAY,
         "-c", str(config)],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _count(database_url, "SELECT count(*) FROM enterprise_entreprise") > 30_000
    assert _count(database_url, "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active") > 10_000

    # The run is recorded in Dagster's storage: <data database>_dagster on the same server.
    with psycopg.connect(with_database(database_url, dagster_storage_db)) as conn:
        runs = conn.execute("SELECT run_id, status FROM runs").fetchall()
        assert [status for _, status in runs] == ["SUCCESS"]
        tags = dict(conn.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (runs[0][0],)))
        materialized = {
            key for (key,) in conn.execute(
                "SELECT asset_key FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = %s", (DAY,)
            )
        }
    assert tags.get("dagster/partition") == DAY
    assert materialized == {'["etablissements_raw"]', '["entreprises"]', '["pro_localisations"]'}
