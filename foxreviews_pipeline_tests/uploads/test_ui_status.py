"""What an operator sees in Dagster: each upload's partition carries the check
`file_imported` (red when nothing was imported) and `every_row_imported` (a warning when
rows were left out); a file refused at intake (a duplicate) becomes a partition too, with
an observation saying why and `file_imported` failed, without reading tick logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from foxreviews_pipeline.defs.resources import PostgresResource, UploadFolder
from foxreviews_pipeline.defs.uploads.assets import IMPORT_CHECK, ROWS_CHECK, uploaded_files
from foxreviews_pipeline.defs.uploads.sensors import UploadIntake, upload_sensor
from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, UploadEnv

KEY = dg.AssetKey("uploaded_files")
IMPORT = dg.AssetCheckKey(KEY, IMPORT_CHECK)
ROWS = dg.AssetCheckKey(KEY, ROWS_CHECK)


@pytest.fixture
def resources(env: UploadEnv, tmp_path: Path) -> dict:
    return {
        "postgres": PostgresResource(database_url=env.url, home=str(tmp_path / "home")),
        "upload_folder": UploadFolder(root=str(env.paths.root)),
        # Taken at first sight: these tests are about what a run shows, not about waiting.
        "upload_intake": UploadIntake(quiet_seconds=0),
    }


def drop_aged(env: UploadEnv, name: str, content: str) -> None:
    path = env.drop(name, content)
    past = time.time() - 600
    os.utime(path, (past, past))


def run_upload(env: UploadEnv, resources: dict, name: str, content: str):
    """The sensor's tick then the run it asks for, on one real instance."""
    drop_aged(env, name, content)
    instance = dg.DagsterInstance.ephemeral()
    tick = upload_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    [request] = tick.run_requests
    instance.add_dynamic_partitions("uploads", [request.partition_key])
    result = dg.materialize(
        [uploaded_files],
        partition_key=request.partition_key,
        resources=resources,
        instance=instance,
    )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return request.partition_key, result, checks


def test_success_passes_both_checks(env: UploadEnv, resources: dict):
    key, result, checks = run_upload(
        env, resources, "entreprises.csv", f"siret,nom\n{SIRET_A},BOULANGERIE MARTIN\n"
    )
    assert result.success
    assert {n: (c.passed, c.partition) for n, c in checks.items()} == {
        IMPORT_CHECK: (True, key),
        ROWS_CHECK: (True, key),
    }


def test_partial_upload_fails_the_warning_check_of_its_partition(env: UploadEnv, resources: dict):
    key, result, checks = run_upload(
        env,
        resources,
        "entreprises.csv",
        f"siret,nom\n{SIRET_A},BOULANGERIE MARTIN\n73282932000075,MAUVAIS SIRET\n",
    )
    assert result.success
    assert checks[IMPORT_CHECK].passed
    rows = checks[ROWS_CHECK]
    assert (rows.passed, rows.severity, rows.partition) == (
        False,
        dg.AssetCheckSeverity.WARN,
        key,
    )
    assert rows.metadata["status"].value == "PARTIAL"
    assert rows.metadata["rows_error"].value == 1


def test_error_upload_fails_the_error_check_of_its_partition(env: UploadEnv, resources: dict):
    key, _, checks = run_upload(
        env, resources, "entreprises.csv", "siret,nom\n73282932000075,MAUVAIS SIRET\n"
    )
    failed = checks[IMPORT_CHECK]
    assert (failed.passed, failed.severity, failed.partition) == (
        False,
        dg.AssetCheckSeverity.ERROR,
        key,
    )
    assert failed.metadata["status"].value == "ERROR"
    assert failed.metadata["stored_path"].value == f"rejected/{key}"


def test_refused_file_is_rejected_in_the_run_and_shows_red(env: UploadEnv, resources: dict):
    _, _, checks = run_upload(env, resources, "entreprises.csv", "siret,nom\n")
    assert not checks[IMPORT_CHECK].passed
    assert checks[IMPORT_CHECK].metadata["note"].value == (
        "the file has a header row but no data rows"
    )


def test_duplicate_is_a_partition_with_a_failed_check_and_an_observation(
    env: UploadEnv, resources: dict
):
    content = f"siret,nom\n{SIRET_A},BOULANGERIE MARTIN\n{SIRET_B},PLOMBERIE DUPONT\n"
    instance = dg.DagsterInstance.ephemeral()
    drop_aged(env, "entreprises.csv", content)
    first = upload_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    original = first.run_requests[0].partition_key

    drop_aged(env, "entreprises (copie).csv", content)
    tick = upload_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
    )

    assert tick.run_requests == []
    [added] = tick.dynamic_partitions_requests
    [duplicate_key] = added.partition_keys
    assert duplicate_key != original and duplicate_key.endswith("-entreprises_copie.csv")
    assert env.files("rejected") == [duplicate_key, f"{duplicate_key}.reason.txt"]

    # What the daemon stores from the tick, then reads back as the UI does.
    instance.add_dynamic_partitions("uploads", added.partition_keys)
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
    record = instance.get_latest_asset_check_evaluation_record(IMPORT)
    evaluation = record.event.dagster_event.event_specific_data
    assert (evaluation.passed, evaluation.severity, evaluation.partition) == (
        False,
        dg.AssetCheckSeverity.ERROR,
        duplicate_key,
    )
    assert evaluation.metadata["error_code"].value == "duplicate_upload"
    [observation] = instance.fetch_observations(KEY, limit=10).records
    observed = observation.asset_observation
    assert observed.partition == duplicate_key
    assert observed.metadata["reason"].value.startswith("same content as entreprises.csv")
    assert observed.metadata["stored_path"].value == f"rejected/{duplicate_key}"
