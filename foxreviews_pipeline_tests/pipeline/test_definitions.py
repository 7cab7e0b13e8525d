"""The code location as Dagster loads it: assets and groups, schedules and sensors, settings
taken when it loads (by variable name where the environment states them), and the INSEE key
kept out of everything Dagster shows or stores."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import date, datetime

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import (
    RepositorySnap,
    ResourceConfigEnvVarSnap,
)
from dagster._core.snap import JobSnap
from dagster._serdes import serialize_value

from foxreviews_pipeline.definitions import defs as load_defs
from foxreviews_pipeline.lib.settings import PROJECT_ROOT
from foxreviews_pipeline.sample.fake_server import FakeInseeServer
from foxreviews_pipeline.sample.source import sample_day_source

MODULE = "foxreviews_pipeline.definitions"
SECRET = "key-that-must-stay-secret-5f1c"

EXPECTED_GROUPS = {
    "naf_nomenclature": "reference",
    "trade_taxonomy": "reference",
    "villes": "reference",
    "etablissements_raw": "sirene",
    "entreprises": "directory",
    "pro_localisations": "directory",
    "ville_stats": "directory",
    "uploaded_files": "uploads",
    "coverage_report": "reports",
}
# name → cron and default status, on Paris wall-clock time. The daily import's schedule is
# the stopped alternative to the publication sensor.
EXPECTED_SCHEDULES = {
    "sirene_daily_schedule": ("0 8 * * *", "STOPPED"),
    "cleanup_weekly": ("0 3 * * 0", "RUNNING"),
    "naf2025_mapping_nightly": ("30 1 * * *", "RUNNING"),
    "coverage_report_weekly": ("0 6 * * 1", "RUNNING"),
}
# Every one RUNNING by default; `ville_stats_automation` evaluates ville_stats's condition.
EXPECTED_SENSORS = {
    "upload_sensor", "sirene_publication_sensor", "ville_stats_automation", "run_failure_alert",
    "freshness_alert",
}


@pytest.fixture
def defs(platform_env, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("FOXREVIEWS_SIRENE_SOURCE", "api")
    monkeypatch.setenv("FOXREVIEWS_INSEE_API_KEY", SECRET)
    return load_defs()


def clean_env(platform_env: dict[str, str], tmp_path) -> dict[str, str]:
    """Only what a fresh shell would have, plus the platform's two settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    env["FOXREVIEWS_HOME"] = platform_env["FOXREVIEWS_HOME"]
    env["FOXREVIEWS_DATABASE_URL"] = platform_env["FOXREVIEWS_DATABASE_URL"]
    return env


LOAD = r"""
import json
from foxreviews_pipeline.definitions import defs
defs = defs()
print(json.dumps({
    "groups": {s.key.to_user_string(): s.group_name for s in defs.resolve_all_asset_specs()},
    "schedules": {s.name: [s.cron_schedule, s.execution_timezone, s.default_status.value]
                  for s in defs.get_repository_def().schedule_defs},
    "sensors": {s.name: s.default_status.value for s in defs.get_repository_def().sensor_defs},
    "resources": sorted(defs.resources),
    "landing_root": defs.resources["landing_zone"].root,
}))
"""


def test_the_code_location_loads_in_a_clean_process(platform_env, tmp_path):
    env = clean_env(platform_env, tmp_path)
    result = subprocess.run([sys.executable, "-c", LOAD], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: loaded["groups"].get(k) for k in EXPECTED_GROUPS} == EXPECTED_GROUPS
    assert {n: loaded["schedules"][n] for n in EXPECTED_SCHEDULES} == {
        n: [cron, "Europe/Paris", status] for n, (cron, status) in EXPECTED_SCHEDULES.items()
    }
    assert {n: loaded["sensors"][n] for n in EXPECTED_SENSORS} == dict.fromkeys(EXPECTED_SENSORS, "RUNNING")
    assert {"postgres", "landing_zone", "upload_folder", "sirene", "retention"} <= set(loaded["resources"])
    assert loaded["landing_root"] == platform_env["FOXREVIEWS_HOME"] + "/landing"


def test_dagster_validates_the_code_location(platform_env, dagster_storage_db, tmp_path):
    env = clean_env(platform_env, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", MODULE],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_the_location_reads_its_settings_when_loaded(defs, platform_env):
    # A value the settings derive is given as is; one the environment states, by name.
    assert defs.resources["landing_zone"].root == platform_env["FOXREVIEWS_HOME"] + "/landing"
    assert isinstance(defs.resources["upload_folder"].root, dg.EnvVar)
    with dg.build_resources({k: defs.resources[k] for k in ("upload_folder", "sirene")}) as resources:
        assert resources.upload_folder.root == platform_env["FOXREVIEWS_UPLOAD_DIR"]
        assert resources.sirene.source == "api"


def test_settings_the_environment_states_show_as_variables(defs):
    snap = RepositorySnap.from_def(defs.get_repository_def())
    values = {r.name: r.configured_values for r in snap.resources}
    for resource, field, variable in [
        ("upload_folder", "root", "FOXREVIEWS_UPLOAD_DIR"),
        ("postgres", "home", "FOXREVIEWS_HOME"),
        ("postgres", "database_url", "FOXREVIEWS_DATABASE_URL"),
        ("sirene", "source", "FOXREVIEWS_SIRENE_SOURCE"),
        ("sirene", "insee_api_key", "FOXREVIEWS_INSEE_API_KEY"),
    ]:
        assert values[resource][field] == ResourceConfigEnvVarSnap(name=variable), (resource, field)
    # Unset: the default, as a value.
    assert values["sirene"]["insee_requests_per_minute"] == "30"
    assert values["retention"]["raw_days"] == "30"


def test_each_load_reads_the_environment_afresh(platform_env, monkeypatch):
    def first_day() -> date:
        partitions = load_defs().resolve_job_def("sirene_daily").partitions_def
        assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
        return partitions.start.date()

    monkeypatch.setenv("FOXREVIEWS_PARTITIONS_START", "2026-03-01")
    monkeypatch.setenv("FOXREVIEWS_RAW_RETENTION_DAYS", "45")
    assert first_day() == date(2026, 3, 1)
    with dg.build_resources({"retention": load_defs().resources["retention"]}) as resources:
        assert resources.retention.raw_days == 45
    monkeypatch.setenv("FOXREVIEWS_PARTITIONS_START", "2026-11-15")
    assert first_day() == date(2026, 11, 15)
    specs = {s.key.to_user_string(): s for s in load_defs().resolve_all_asset_specs()}
    for key in ("etablissements_raw", "entreprises", "pro_localisations"):
        partitions = specs[key].partitions_def
        assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
        assert partitions.start.date() == date(2026, 11, 15), key


def test_every_asset_of_the_spec_is_in_its_group(defs):
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {k: specs[k].group_name for k in EXPECTED_GROUPS} == EXPECTED_GROUPS
    daily = specs["etablissements_raw"].partitions_def
    assert isinstance(daily, dg.DailyPartitionsDefinition) and daily.timezone == "Europe/Paris"
    assert specs["entreprises"].partitions_def == daily
    assert specs["pro_localisations"].partitions_def == daily
    assert isinstance(specs["uploaded_files"].partitions_def, dg.DynamicPartitionsDefinition)
    for key in ("naf_nomenclature", "trade_taxonomy", "villes", "ville_stats"):
        assert specs[key].partitions_def is None, key


def test_schedules_and_sensors_run_by_default(defs):
    repository = defs.get_repository_def()
    schedules = {s.name: s for s in repository.schedule_defs}
    sensors = {s.name: s for s in repository.sensor_defs}
    assert set(EXPECTED_SCHEDULES) <= set(schedules)
    for name, (cron, status) in EXPECTED_SCHEDULES.items():
        schedule = schedules[name]
        assert (schedule.cron_schedule, schedule.execution_timezone) == (cron, "Europe/Paris"), name
        assert schedule.default_status == dg.DefaultScheduleStatus(status), name
    for name in EXPECTED_SENSORS:
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    # Exactly these: every asset with an automation condition is covered by the declared,
    # running `ville_stats_automation`, so Dagster adds no implicit (stopped)
    # `default_automation_condition_sensor`.
    assert set(sensors) == EXPECTED_SENSORS


def test_the_insee_key_never_shows_in_the_location(defs):
    repo = defs.get_repository_def()
    snap = serialize_value(RepositorySnap.from_def(repo))
    assert SECRET not in snap
    assert "FOXREVIEWS_INSEE_API_KEY" in snap  # shown by name only
    for job in repo.get_all_jobs():
        assert SECRET not in serialize_value(JobSnap.from_job_def(job)), job.name
    assert SECRET not in repr(defs.resources)
    assert SECRET not in repr(defs.resources["sirene"])


def test_the_database_password_never_shows_in_the_initialized_resources(platform_env, monkeypatch):
    monkeypatch.setenv("FOXREVIEWS_DATABASE_URL", "postgresql://fox:pw-5f1c-secret@127.0.0.1:5432/foxreviews")
    defs = load_defs()
    with dg.build_resources({"postgres": defs.resources["postgres"]}) as resources:
        assert resources.postgres.database_url.endswith("@127.0.0.1:5432/foxreviews")  # resolved
        assert "pw-5f1c-secret" not in repr(resources.postgres)


def test_the_insee_key_never_shows_in_the_initialized_resource(defs):
    with dg.build_resources({"sirene": defs.resources["sirene"]}) as resources:
        assert resources.sirene.insee_api_key == SECRET  # resolved from the environment
        assert SECRET not in repr(resources.sirene)


def test_a_run_with_the_api_source_keeps_the_key_out_of_dagster_storage(platform_env, monkeypatch):
    day = "2026-11-19"
    with FakeInseeServer(
        day_source=sample_day_source(300), api_key=SECRET,
        last_processed_at=datetime(2026, 11, 20, 6, 30),
    ) as server:
        monkeypatch.setenv("FOXREVIEWS_SIRENE_SOURCE", "api")
        monkeypatch.setenv("FOXREVIEWS_INSEE_API_KEY", SECRET)
        monkeypatch.setenv("FOXREVIEWS_INSEE_BASE_URL", server.base_url)
        monkeypatch.setenv("FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE", "10000")
        defs = load_defs()
        job = defs.resolve_implicit_global_asset_job_def()
        with dg.DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance, asset_selection=[dg.AssetKey("etablissements_raw")],
                partition_key=day,
            )
            # The local INSEE answers 401 to any other key: the key did reach the API.
            assert result.success
            assert server.requests and all(r.status == 200 for r in server.requests)
            run = instance.get_run_by_id(result.run_id)
            stored = [
                serialize_value(run),
                serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
                *(serialize_value(entry) for entry in instance.all_logs(result.run_id)),
            ]
    assert len(stored) > 5
    for text in stored:
        assert SECRET not in text
    landed = (platform_env["FOXREVIEWS_HOME"] + f"/landing/etablissements/{day}.json.gz")
    with open(landed, "rb") as f:
        document = gzip.decompress(f.read()).decode()
    assert len(json.loads(document)["etablissements"]) == 300
    assert SECRET not in document


def test_every_table_asset_names_its_table_and_links_to_its_code(defs):
    graph = defs.resolve_asset_graph()
    tables = {
        key.to_user_string(): graph.get(key).metadata.get("dagster/table_name")
        for key in graph.get_all_asset_keys()
    }
    assert {k: v.value for k, v in tables.items() if v is not None} == {
        "naf_nomenclature": "public.ref_naf_nomenclature",
        "trade_taxonomy": "public.ref_naf_mapping",
        "villes": "public.location_ville",
        "entreprises": "public.enterprise_entreprise",
        "stock_entreprises": "public.enterprise_entreprise",
        "pro_localisations": "public.enterprise_prolocalisation",
        "stock_pro_localisations": "public.enterprise_prolocalisation",
        "ville_stats": "public.ville_stats",
    }
    for key in graph.get_all_asset_keys():
        [reference] = graph.get(key).metadata["dagster/code_references"].code_references
        assert reference.file_path.endswith(".py") and os.path.exists(reference.file_path), key
