"""What an operator sees in the UI: safe defaults, named jobs, owners, descriptions, groups,
and a partition range that starts where the platform's history starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import time_machine

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.maintenance.cleanup import cleanup_job, cleanup_schedule
from foxreviews_pipeline.lib.settings import (
    DEFAULT_PARTITIONS_START,
    PROJECT_ROOT,
    ConfigurationError,
    load_settings,
)
from foxreviews_pipeline_tests.maintenance.test_cleanup import (
    NOW,
    Layout,
    output_metadata,
    run_job,
    seed_log,
)

# Defined in defs/directory/assets.py, which is being rewritten: the owner constant is
# applied there by that change (`owners=OWNERS` on both @dg.asset decorators).


@pytest.fixture(scope="module")
def listed() -> dict:
    """`dg list defs --json` from the project folder: what the UI shows, as data."""
    dg_cli = [str(PROJECT_ROOT / ".venv" / "bin" / "dg")]
    if not (PROJECT_ROOT / ".venv" / "bin" / "dg").exists():
        dg_cli = [sys.executable, "-m", "dagster_dg_cli"]
    result = subprocess.run(
        [*dg_cli, "list", "defs", "--json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _repository() -> dg.RepositoryDefinition:
    from foxreviews_pipeline.definitions import defs

    return defs().get_repository_def()


# --- cleanup: one click never deletes ---------------------------------------------------------


def test_cleanup_launched_with_its_defaults_deletes_nothing(database_url, tmp_path):
    layout = Layout(tmp_path)
    before = layout.all_paths()
    with psycopg.connect(database_url) as conn:
        seed_log(conn, layout)
        log_before = conn.execute("SELECT count(*) FROM core_importlog").fetchone()[0]

    from foxreviews_pipeline.defs.maintenance.cleanup import Retention
    from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource, UploadFolder

    with time_machine.travel(NOW, tick=True):
        # No run config at all: what the launchpad starts with.
        result = cleanup_job.execute_in_process(
            resources={
                "postgres": PostgresResource(database_url=database_url, home=str(tmp_path / "home")),
                "landing_zone": LandingZone(root=str(layout.landing)),
                "upload_folder": UploadFolder(root=str(layout.uploads)),
                "retention": Retention(raw_days=30),
            },
        )
    assert result.success
    metadata = output_metadata(result)
    assert metadata["dry_run"].value is True
    assert metadata["would_delete_upload_files"].value > 0  # it saw what it would delete...
    assert "upload_files_deleted" not in metadata
    assert layout.all_paths() == before  # ...and deleted nothing
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM core_importlog").fetchone()[0] == log_before

    with time_machine.travel(NOW, tick=True):
        assert run_job(database_url, layout, dry_run=False).success  # explicit: deletes
    assert len(layout.all_paths()) < len(before)


def test_the_weekly_schedule_asks_for_a_real_cleanup():
    context = dg.build_schedule_context(scheduled_execution_time=NOW)
    [request] = cleanup_schedule.evaluate_tick(context).run_requests
    assert request.run_config["ops"]["cleanup_files_and_logs"]["config"] == {"dry_run": False}


def test_the_launchpad_default_is_a_dry_run():
    field = cleanup_job.run_config_schema.config_type.fields["ops"].config_type.fields[
        "cleanup_files_and_logs"
    ].config_type.fields["config"].config_type.fields["dry_run"]
    assert field.default_provided and field.default_value is True


# --- named jobs ---------------------------------------------------------------------------------


ALERT_SENSORS = {"run_failure_alert", "freshness_alert"}


def test_every_schedule_and_sensor_targets_a_named_job():
    repo = _repository()
    for schedule in repo.schedule_defs:
        assert not schedule.job_name.startswith("__"), schedule.name
    targeted = {}
    for sensor in repo.sensor_defs:
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            # Its runs are the asset's (on its page, tagged foxreviews/trigger=automation);
            # the named job `ville_stats_refresh` stays for refreshes by hand.
            assert sensor.asset_selection.resolve(repo.asset_graph) == {dg.AssetKey("ville_stats")}
            assert sensor.run_tags == {"foxreviews/trigger": "automation"}
            continue
        if sensor.name in ALERT_SENSORS:
            assert not sensor.has_jobs  # they post to the webhook, they start no run
            continue
        [job] = sensor.jobs
        targeted[sensor.name] = job.name
    assert targeted == {
        "upload_sensor": "upload_import",
        "sirene_publication_sensor": "sirene_daily",
    }


def test_run_day_uses_named_jobs():
    from foxreviews_pipeline import run_day

    repo = _repository()
    for name in (run_day.REFERENCE_JOB, run_day.DAILY_JOB, run_day.VILLE_STATS_JOB):
        job = repo.get_job(name)
        assert not name.startswith("__")
        assert job.owners == OWNERS
    daily = repo.get_job(run_day.DAILY_JOB)
    assert set(run_day.DAILY_ASSETS) <= {k.to_user_string() for k in daily.asset_layer.selected_asset_keys}
    reference = repo.get_job(run_day.REFERENCE_JOB)
    assert set(run_day.REFERENCE_ASSETS) == {
        k.to_user_string() for k in reference.asset_layer.selected_asset_keys
    }


# --- owners and descriptions ------------------------------------------------------------------


def test_every_asset_has_an_owner_and_a_description(listed):
    assert OWNERS == ["team:data"]
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert len(assets) >= 8
    for key, asset in assets.items():
        assert (asset.get("description") or "").strip(), key
        owners = [o if isinstance(o, str) else f"team:{o['team']}" for o in asset["owners"]]
        assert owners == OWNERS, key


def test_every_check_job_schedule_and_sensor_has_a_description(listed):
    repo = _repository()
    for definition in [*repo.schedule_defs, *repo.sensor_defs]:
        assert (definition.description or "").strip(), definition.name
    for section in ("asset_checks", "jobs"):
        assert listed[section], section
        for item in listed[section]:
            name = item.get("name") or item.get("key")
            if name == "__ASSET_JOB":
                continue
            assert (item.get("description") or "").strip(), f"{section}: {name}"


def test_every_job_schedule_and_sensor_has_an_owner():
    repo = _repository()
    for job in repo.get_all_jobs():
        if not job.name.startswith("__"):
            assert job.owners == OWNERS, job.name
    for schedule in repo.schedule_defs:
        assert schedule.owners == OWNERS, schedule.name
    for sensor in repo.sensor_defs:
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            continue  # Dagster's automation sensor takes no owners: its asset has them
        if sensor.name == "run_failure_alert":
            continue  # Dagster's run_failure_sensor takes no owners in 1.13
        assert sensor.owners == OWNERS, sensor.name


# --- groups -------------------------------------------------------------------------------------


def test_the_groups_are_the_ones_the_readme_lists(listed):
    readme = (PROJECT_ROOT / "README.md").read_text()
    intro = readme.split("## ", 1)[0]
    documented = set(re.findall(r"^- \*\*(\w+)\*\* —", intro, re.MULTILINE))
    assert documented == {a["group_name"] for a in listed["assets"]}


# --- partitions ---------------------------------------------------------------------------------


def test_partitions_start_at_a_recent_fixed_date_by_default():
    assert load_settings({}).partitions_start == DEFAULT_PARTITIONS_START == date(2026, 11, 1)
    start = load_settings({"FOXREVIEWS_PARTITIONS_START": "2026-06-15"}).partitions_start
    assert start == date(2026, 6, 15)
    for wrong in ("2026-13-01", "yesterday", "26-11-01", "1999-12-31"):
        with pytest.raises(ConfigurationError, match="FOXREVIEWS_PARTITIONS_START"):
            load_settings({"FOXREVIEWS_PARTITIONS_START": wrong})


@pytest.mark.parametrize("value, expected", [(None, "2026-11-01"), ("2026-11-15", "2026-11-15")])
def test_the_code_location_takes_its_first_partition_from_the_setting(value, expected, tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "FOXREVIEWS_PARTITIONS_START"}
    if value:
        env["FOXREVIEWS_PARTITIONS_START"] = value
    code = (
        "from foxreviews_pipeline.definitions import defs\n"
        "keys = defs().resolve_assets_def('etablissements_raw').partitions_def.get_partition_keys()\n"
        "print(keys[0], len(keys) > 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [expected, "True"]


# --- dg -----------------------------------------------------------------------------------------


def test_dg_check_defs_passes_from_the_project_folder():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_the_readme_shows_dg_not_superseded_commands():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "dagster asset materialize" not in readme and "dagster dev" not in readme
    for command in ("dg dev", "dg check defs", "dg list defs", "dg launch --job sirene_daily --partition",
                    "dg launch --assets"):
        assert command in readme, command
