"""The README's main command, as a newcomer runs it: `foxreviews run-day` from the project
folder, on a real PostgreSQL, with Dagster's runs kept in the `<data database>_dagster`
database of the same server. (`dg launch` is tested in operations/test_instance.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from foxreviews_pipeline.lib.db.server import with_database
from foxreviews_pipeline.lib.settings import PROJECT_ROOT

DAY = "2026-11-20"
NEXT_DAY = "2026-11-21"


def _env() -> dict[str, str]:
    env = dict(os.environ)  # platform_env has pointed FOXREVIEWS_* at the test database
    env.pop("DAGSTER_HOME", None)  # run-day derives the instance from the settings
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
    assert re.search(r"^\s+reference\s+NAF codes 732 rév. 2 \+ 747 NAF 2025, villes 3\d{4}$", out, re.M), out
    assert re.search(r"^\s+NAF 2025\s+0 active establishments stated in NAF 2025 .*; mapping \d+ of 747 codes", out, re.M), out
    assert re.search(r"^\s+landed\s+35000 records in \d+ API calls \(0 retries, 0 × 429\)$", out, re.M), out
    assert re.search(r"^\s+checks\s+17 passed$", out, re.M), out
    positions = re.search(r"^\s+positions\s+(\d+) of (\d+) establishments positioned, 0 outside", out, re.M)
    assert positions and 0 < int(positions.group(1)) < int(positions.group(2)), out

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
    # Each under its named job, so the job pages show them.
    with psycopg.connect(dagster_url) as conn:
        jobs = [j for (j,) in conn.execute("SELECT pipeline_name FROM runs ORDER BY create_timestamp")]
    assert jobs == ["reference_data", "sirene_daily", "ville_stats_refresh"]
    # The tables as pandas DataFrames, through the location's I/O manager (docs/notebook.md).
    frames = subprocess.run(
        [sys.executable, "-c",
         "from foxreviews_pipeline.definitions import defs\n"
         "d = defs()\n"
         "stats = d.load_asset_value('ville_stats')\n"
         f"day = d.load_asset_value('entreprises', partition_key='{DAY}')\n"
         "print(type(stats).__name__, len(stats), int(stats['total_entreprises_actives'].iloc[0]),"
         " len(day), day['siret'].dtype)"],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert frames.returncode == 0, frames.stderr[-3000:]
    assert frames.stdout.split() == ["DataFrame", "1", str(active), str(inserted), "string[pyarrow]"]

    # A sample switch day: the next day's records state their activity in NAF 2025. It is
    # published, and the establishments of the first day keep their pages.
    pages = "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active"
    before = _count(database_url, pages)
    switch = subprocess.run(
        [*_foxreviews(), "run-day", "--date", NEXT_DAY],
        cwd=PROJECT_ROOT, env={**_env(), "FOXREVIEWS_SAMPLE_NAF2025_FROM": NEXT_DAY},
        capture_output=True, text=True, timeout=600,
    )
    assert switch.returncode == 0, switch.stderr[-3000:]
    out = switch.stdout
    assert re.search(r"^\s+checks\s+17 passed$", out, re.M), out
    stated = int(re.search(r"NAF 2025\s+(\d+) active establishments stated in NAF 2025", out).group(1))
    assert stated > 20_000
    kept = int(re.search(r"\((\d+) kept their rév. 2 trade", out).group(1))
    assert kept == _count(
        database_url,
        "SELECT count(*) FROM enterprise_entreprise WHERE naf_rev2_code IS NOT NULL AND is_active",
    ) > 0
    # Every establishment whose activity only switched keeps the page of its rév. 2 trade
    # (the other retirements of the day are real changes of activity, town or state).
    assert _count(
        database_url,
        """
        SELECT count(*) FROM enterprise_entreprise e
        JOIN ref_naf_mapping m ON m.nomenclature = 'NAFRev2' AND m.naf_code = e.naf_rev2_code
        WHERE e.naf_nomenclature = 'NAF2025' AND e.is_active AND m.sous_categorie_id IS NOT NULL
          AND entreprise_publishable(e.statut_diffusion, e.nom, e.source)
          AND EXISTS (SELECT 1 FROM location_ville v WHERE v.code_insee = e.code_commune)
          AND NOT EXISTS (SELECT 1 FROM enterprise_prolocalisation p WHERE p.entreprise_id = e.id
                          AND p.is_active AND p.sous_categorie_id = m.sous_categorie_id)
        """,
    ) == 0
    assert _count(database_url, pages) > before


@pytest.mark.slow
def test_the_main_command_on_a_fresh_embedded_home(tmp_path):
    """The README's first command on a new machine: no database configured, an empty home.
    The embedded server is started, the data database created, and the day runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_") and k != "DAGSTER_HOME"}
    env["FOXREVIEWS_HOME"] = str(tmp_path / "home")
    try:
        instance = subprocess.run(
            [*_foxreviews(), "instance", "--env-file", str(tmp_path / ".env")],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        assert instance.returncode == 0, instance.stderr[-3000:]
        result = subprocess.run(
            [*_foxreviews(), "run-day", "--date", DAY],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"Day {DAY}: done in" in result.stdout
        assert re.search(r"^\s+checks\s+17 passed$", result.stdout, re.M), result.stdout
    finally:
        subprocess.run(
            [*_foxreviews(), "db", "stop"], cwd=PROJECT_ROOT, env=env,
            capture_output=True, text=True, timeout=300, check=False,
        )
