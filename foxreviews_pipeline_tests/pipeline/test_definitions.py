"""The code location as Dagster loads it."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from foxreviews_pipeline.lib.settings import PROJECT_ROOT

EXPECTED_GROUPS = {
    "naf_nomenclature": "reference",
    "trade_taxonomy": "reference",
    "villes": "reference",
    "etablissements_raw": "sirene",
    "entreprises": "directory",
    "pro_localisations": "directory",
    "ville_stats": "directory",
    "uploaded_files": "uploads",
}


@pytest.fixture
def defs(platform_env, monkeypatch):
    monkeypatch.setenv("FOXREVIEWS_SIRENE_SOURCE", "api")
    monkeypatch.setenv("FOXREVIEWS_INSEE_API_KEY", "key-that-must-stay-secret")
    import importlib

    import foxreviews_pipeline.definitions as module

    return importlib.reload(module).defs


def test_every_asset_of_the_spec_is_in_its_group(defs):
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert {k: specs[k].group_name for k in EXPECTED_GROUPS} == EXPECTED_GROUPS
    assert specs["etablissements_raw"].partitions_def.timezone == "Europe/Paris"
    assert specs["entreprises"].partitions_def == specs["etablissements_raw"].partitions_def


def test_schedules_and_sensors_run_by_default(defs):
    names = {s.name: s for s in [*defs.schedules, *defs.sensors]}
    assert {"sirene_daily_schedule", "ville_stats_nightly", "cleanup_weekly", "upload_sensor",
            "ville_stats_automation"} <= set(names)
    for schedule in defs.schedules:
        assert schedule.execution_timezone == "Europe/Paris"
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_insee_key_never_shows_in_the_location(defs):
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    repo = defs.get_repository_def()
    snap = serialize_value(RepositorySnap.from_def(repo))
    assert "key-that-must-stay-secret" not in snap
    assert "FOXREVIEWS_INSEE_API_KEY" in snap  # shown by name only
    assert "key-that-must-stay-secret" not in repr(defs.resources)


def test_dagster_validates_the_code_location(platform_env, dagster_storage_db):
    env = {k: v for k, v in os.environ.items()}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "foxreviews_pipeline.definitions"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout
