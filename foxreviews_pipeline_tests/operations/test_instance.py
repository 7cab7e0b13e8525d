"""One instance for every process: Dagster's storage in PostgreSQL through dagster-postgres's
documented configuration, found by every command started from the project folder."""

from __future__ import annotations

import ast
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
import yaml

from foxreviews_pipeline.instance import (
    BLOCK_BEGIN,
    BLOCK_END,
    STORAGE_URL_VARIABLE,
    TEMPLATE,
    write_env_block,
    write_instance_yaml,
)
from foxreviews_pipeline.lib.db.server import with_database
from foxreviews_pipeline.lib.settings import PROJECT_ROOT
from foxreviews_pipeline_tests.operations.conftest import bare_env, tool

DAY = "2026-11-20"


def test_no_module_of_the_package_imports_a_private_dagster_module():
    offenders = []
    for path in (PROJECT_ROOT / "foxreviews_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0].startswith("dagster") and any(p.startswith("_") for p in parts[1:]):
                    offenders.append(f"{path.relative_to(PROJECT_ROOT)}: {name}")
    assert offenders == []


def test_the_instance_uses_dagster_postgres_documented_storage():
    config = yaml.safe_load(TEMPLATE.read_text())
    assert config["storage"] == {"postgres": {"postgres_url": {"env": STORAGE_URL_VARIABLE}}}
    # Nothing of the platform's own code is loaded by the instance.
    assert "foxreviews_pipeline" not in TEMPLATE.read_text().split("storage:", 1)[1]
    # One copy, at the top level where the design puts it (and sql/ beside it).
    assert TEMPLATE == PROJECT_ROOT / "dagster.yaml"
    assert not (PROJECT_ROOT / "foxreviews_pipeline" / "dagster.yaml").exists()
    assert (PROJECT_ROOT / "sql").is_dir() and not (PROJECT_ROOT / "foxreviews_pipeline" / "sql").exists()


def test_run_retries_never_rerun_a_run_the_code_failed_on_purpose(tmp_path, monkeypatch):
    """A held-back day or a permanent error fails its step; the daemon's run retries are for
    runs that died, so a failed step is not retried as a whole run."""
    import dagster as dg

    home = tmp_path / "dagster"
    write_instance_yaml(home)
    # The instance as the daemon reads it, on SQLite storage: only its settings are read.
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config.pop("storage")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False


def test_the_instance_file_is_a_copy_of_the_template(tmp_path):
    target = write_instance_yaml(tmp_path / "dagster")
    assert yaml.safe_load(target.read_text()) == yaml.safe_load(TEMPLATE.read_text())
    stamp = target.stat().st_mtime_ns
    write_instance_yaml(tmp_path / "dagster")
    assert target.stat().st_mtime_ns == stamp  # unchanged: not rewritten


def test_an_existing_env_file_holding_a_secret_is_made_private(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("FOXREVIEWS_INSEE_API_KEY=abc123\n")
    env_file.chmod(0o644)  # as `tee -a` would have left it
    values = {"DAGSTER_HOME": "/a", STORAGE_URL_VARIABLE: "postgresql://x"}
    assert write_env_block(env_file, values)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # Unchanged content: still tightened when someone loosened it again.
    env_file.chmod(0o644)
    assert not write_env_block(env_file, values)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_the_env_block_is_replaced_in_place_and_other_lines_kept(tmp_path):
    env_file = tmp_path / ".env"
    assert write_env_block(env_file, {"DAGSTER_HOME": "/a", STORAGE_URL_VARIABLE: "postgresql://x"})
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # may hold a password
    env_file.write_text("FOXREVIEWS_SIRENE_SOURCE=sample\n" + env_file.read_text() + "MINE=1\n")
    assert write_env_block(env_file, {"DAGSTER_HOME": "/b", STORAGE_URL_VARIABLE: "postgresql://it's"})
    assert not write_env_block(env_file, {"DAGSTER_HOME": "/b", STORAGE_URL_VARIABLE: "postgresql://it's"})
    lines = env_file.read_text().splitlines()
    assert lines[0] == "FOXREVIEWS_SIRENE_SOURCE=sample" and lines[-1] == "MINE=1"
    assert lines.count(BLOCK_BEGIN) == lines.count(BLOCK_END) == 1
    from dotenv import dotenv_values

    values = dotenv_values(env_file)
    assert values["DAGSTER_HOME"] == "/b" and values[STORAGE_URL_VARIABLE] == "postgresql://it's"


def _run(folder: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        list(command), cwd=folder, env=bare_env(), capture_output=True, text=True, timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_dagster_and_dg_commands_from_the_project_folder_share_the_instance(
    project_folder: Path, platform_env, database_url, dagster_storage_db
):
    home = Path(platform_env["FOXREVIEWS_HOME"]) / "dagster"
    assert (home / "dagster.yaml").is_file()

    info = _run(project_folder, tool("dagster"), "instance", "info").stdout
    assert str(home) in info and "PostgresRunStorage" in info
    assert "sirene_daily_schedule" in _run(project_folder, tool("dagster"), "schedule", "list").stdout
    assert "upload_sensor" in _run(project_folder, tool("dagster"), "sensor", "list").stdout

    _run(project_folder, tool("dg"), "launch", "--job", "ville_stats_refresh")
    _run(project_folder, tool("dg"), "launch", "--assets", "ville_stats")

    with psycopg.connect(with_database(database_url, dagster_storage_db)) as conn:
        runs = conn.execute("SELECT pipeline_name, status FROM runs ORDER BY create_timestamp").fetchall()
    assert runs == [("ville_stats_refresh", "SUCCESS"), ("__ASSET_JOB", "SUCCESS")]


@pytest.mark.slow
def test_dg_launch_runs_a_sirene_day_from_the_project_folder(
    project_folder: Path, platform_env, database_url, dagster_storage_db, tmp_path
):
    import dagster as dg

    from foxreviews_pipeline.defs.reference.definitions import REFERENCE_ASSETS
    from foxreviews_pipeline.defs.resources import build_resources
    from foxreviews_pipeline.lib.settings import load_settings

    assert dg.materialize(REFERENCE_ASSETS, resources=build_resources(load_settings())).success
    config = tmp_path / "in_process.yaml"
    config.write_text("execution:\n  config:\n    in_process: {}\n")
    _run(project_folder, tool("dg"), "launch", "--job", "sirene_daily", "--partition", DAY,
         "-c", str(config))

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0] > 30_000
    with psycopg.connect(with_database(database_url, dagster_storage_db)) as conn:
        [(run_id, job, status)] = conn.execute("SELECT run_id, pipeline_name, status FROM runs").fetchall()
        tags = dict(conn.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,)))
        materialized = {
            key for (key,) in conn.execute(
                "SELECT asset_key FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition = %s", (DAY,)
            )
        }
    assert (job, status, tags.get("dagster/partition")) == ("sirene_daily", "SUCCESS", DAY)
    assert materialized == {'["etablissements_raw"]', '["entreprises"]', '["pro_localisations"]'}
