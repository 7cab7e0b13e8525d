"""The upload sensor, invoked directly: stability, one run per content, duplicates, cursor."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from foxreviews_pipeline.defs.resources import PostgresResource, UploadFolder, build_resources
from foxreviews_pipeline.defs.uploads import sensors
from foxreviews_pipeline.defs.uploads.assets import uploaded_files
from foxreviews_pipeline.defs.uploads.definitions import build_definitions
from foxreviews_pipeline.defs.uploads.sensors import UploadIntake, upload_sensor
from foxreviews_pipeline.lib.settings import load_settings
from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, UploadEnv

CONTENT = f"siret,nom\n{SIRET_A},BOULANGERIE MARTIN\n"


@pytest.fixture
def resources(env: UploadEnv, tmp_path: Path) -> dict:
    return {
        "postgres": PostgresResource(database_url=env.url, home=str(tmp_path / "home")),
        "upload_folder": UploadFolder(root=str(env.paths.root)),
        # Taken at first sight; the quiet period has tests of its own, with a clock.
        "upload_intake": UploadIntake(quiet_seconds=0),
    }


def tick_ephemeral(resources: dict, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=resources
    )
    return upload_sensor(context)


def age(path: Path, seconds: float = 600) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_one_run_per_content_with_its_partition(env: UploadEnv, resources: dict):
    age(env.drop("entreprises.csv", CONTENT))
    result = tick_ephemeral(resources, None)

    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    [registered] = env.query("SELECT content_sha256, status, stored_path FROM core_importlog")
    sha, status, stored = registered
    assert request.run_key == sha
    assert request.partition_key == f"{sha[:12]}-entreprises.csv"
    assert status == "PENDING" and stored == f"processing/{request.partition_key}"
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [
        [request.partition_key]
    ]
    assert result.dynamic_partitions_requests[0].partitions_def_name == "uploads"
    assert env.files("processing") == [request.partition_key] and env.files("incoming") == []

    # The next tick asks for nothing more, and says why.
    again = tick_ephemeral(resources, result.cursor)
    assert again.run_requests == []
    assert again.skip_reason.skip_message == "no new file in incoming/"


def test_the_same_content_twice_gives_one_run(env: UploadEnv, resources: dict):
    age(env.drop("entreprises.csv", CONTENT))
    age(env.drop("entreprises (copie).csv", CONTENT))
    first = tick_ephemeral(resources, None)
    assert len(first.run_requests) == 1

    # Dropped again later, under yet another name.
    age(env.drop("entreprises-final.csv", CONTENT))
    second = tick_ephemeral(resources, first.cursor)
    assert second.run_requests == []
    assert second.skip_reason.skip_message.startswith(
        "1 file(s) rejected: entreprises-final.csv (same content as entreprises (copie).csv"
    ) or second.skip_reason.skip_message.startswith(
        "1 file(s) rejected: entreprises-final.csv (same content as entreprises.csv"
    )
    rows = env.query(
        "SELECT file_name, status, stored_path, errors->0->>'code' FROM core_importlog ORDER BY id"
    )
    assert [r[1] for r in rows] == ["PENDING", "ERROR", "ERROR"]
    assert [r[3] for r in rows] == [None, "duplicate_upload", "duplicate_upload"]
    assert len(env.files("processing")) == 1
    rejected = env.files("rejected")
    assert len(rejected) == 4 and sum(n.endswith(".reason.txt") for n in rejected) == 2


def test_no_run_for_a_file_still_being_written(
    env: UploadEnv, resources: dict, monkeypatch: pytest.MonkeyPatch
):
    # One unchanged tick is not enough: the file must stay unchanged for the quiet period,
    # by the sensor's clock, whatever its mtime says.
    now = [1_000_000.0]
    monkeypatch.setattr(sensors, "clock", lambda: now[0])
    resources = {**resources, "upload_intake": UploadIntake(quiet_seconds=60)}
    path = env.drop("entreprises.csv", CONTENT[:20])
    age(path)  # an old mtime does not make a file quiet
    first = tick_ephemeral(resources, None)
    assert first.run_requests == []
    assert first.skip_reason.skip_message == (
        "1 file(s) waiting until unchanged for 60 s: entreprises.csv"
    )
    assert env.files("incoming") == ["entreprises.csv"]

    now[0] += 15
    with path.open("a") as handle:  # the writer goes on between two ticks
        handle.write(CONTENT[20:])
    second = tick_ephemeral(resources, first.cursor)
    assert second.run_requests == []

    now[0] += 45  # unchanged for 45 s only
    third = tick_ephemeral(resources, second.cursor)
    assert third.run_requests == []
    assert env.query("SELECT count(*) FROM core_importlog") == [(0,)]

    now[0] += 15  # unchanged for 60 s since the second tick saw it so
    fourth = tick_ephemeral(resources, third.cursor)
    assert len(fourth.run_requests) == 1
    assert env.query("SELECT content_sha256 FROM core_importlog") == [
        (fourth.run_requests[0].run_key,)
    ]


def test_hidden_and_lock_files_are_left_alone(env: UploadEnv, resources: dict):
    for name in (".entreprises.csv.part", "~$entreprises.xlsx", ".~lock.entreprises.xlsx#"):
        age(env.drop(name, "x"))
    (env.paths.folder("incoming") / "sub").mkdir()
    result = tick_ephemeral(resources, None)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == (
        "no new file in incoming/ (4 hidden, temporary or folder entries ignored)"
    )
    assert len(env.files("incoming")) == 4


def test_symlink_is_rejected_without_being_followed(
    env: UploadEnv, resources: dict, tmp_path: Path
):
    secret = tmp_path / "secret.csv"
    secret.write_text(CONTENT)
    os.symlink(secret, env.paths.folder("incoming") / "entreprises.csv")
    result = tick_ephemeral(resources, None)
    assert result.run_requests == []
    assert "symbolic links are not accepted" in result.skip_reason.skip_message
    assert env.query("SELECT status, content_sha256 FROM core_importlog") == [("ERROR", None)]
    assert (env.paths.folder("rejected") / "entreprises.csv").is_symlink()
    assert secret.read_text() == CONTENT


def test_a_file_left_in_processing_is_requested_again(env: UploadEnv, resources: dict):
    age(env.drop("entreprises.csv", CONTENT))
    first = tick_ephemeral(resources, None)
    key = first.run_requests[0].partition_key
    # A lost cursor (or a tick that died after moving the file): asked again, same run key.
    again = tick_ephemeral(resources, None)
    assert [(r.partition_key, r.run_key) for r in again.run_requests] == [
        (key, first.run_requests[0].run_key)
    ]
    assert json.loads(again.cursor)["requested"] == {key: first.run_requests[0].run_key}


def test_sensor_run_materializes_the_partition(env: UploadEnv, resources: dict):
    age(env.drop("entreprises.csv", CONTENT + f"{SIRET_B},PLOMBERIE DUPONT\n"))
    result = tick_ephemeral(resources, None)
    key = result.run_requests[0].partition_key
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("uploads", [key])
        outcome = dg.materialize(
            [uploaded_files], partition_key=key, resources=resources, instance=instance
        )
        assert outcome.success
        [materialization] = outcome.asset_materializations_for_node("uploaded_files")
        metadata = materialization.metadata
        assert metadata["status"].value == "SUCCESS"
        assert metadata["rows_total"].value == 2 and metadata["rows_success"].value == 2
        assert metadata["rows_error"].value == 0
    [(status, run_id, stored)] = env.query("SELECT status, run_id, stored_path FROM core_importlog")
    assert status == "SUCCESS" and run_id == outcome.run_id and stored == f"archive/{key}"


def test_failed_import_moves_the_file_to_rejected_and_fails_the_run(
    env: UploadEnv, resources: dict
):
    age(env.drop("entreprises.csv", CONTENT))
    key = tick_ephemeral(resources, None).run_requests[0].partition_key
    env.query("ALTER TABLE enterprise_entreprise RENAME TO enterprise_entreprise_away")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("uploads", [key])
        outcome = dg.materialize(
            [uploaded_files],
            partition_key=key,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    assert not outcome.success
    [(status, note, errors, stored)] = env.query(
        "SELECT status, note, errors, stored_path FROM core_importlog"
    )
    assert status == "ERROR" and note.startswith(
        "the import failed and can be re-run: UndefinedTable"
    )
    assert errors[0]["code"] == "import_failed"
    # Never stuck in processing/: rejected, with the reason beside it.
    assert env.files("processing") == []
    assert stored == f"rejected/{key}"
    assert env.files("rejected") == [key, f"{key}.reason.txt"]
    reason = (env.paths.folder("rejected") / f"{key}.reason.txt").read_text()
    assert "the import failed: UndefinedTable" in reason and "re-run its partition" in reason

    # Once the cause is fixed, re-running the partition imports it: a new log row, archived.
    env.query("ALTER TABLE enterprise_entreprise_away RENAME TO enterprise_entreprise")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("uploads", [key])
        assert dg.materialize(
            [uploaded_files], partition_key=key, resources=resources, instance=instance
        ).success
    assert env.query("SELECT status, stored_path FROM core_importlog ORDER BY id") == [
        ("ERROR", f"rejected/{key}"),
        ("SUCCESS", f"archive/{key}"),
    ]


def test_uploads_definitions_load(platform_env):
    settings = load_settings()
    defs = dg.Definitions.merge(
        build_definitions(settings), dg.Definitions(resources=build_resources(settings))
    )
    assert defs.resolve_sensor_def("upload_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert (
        defs.resolve_assets_def("uploaded_files").group_names_by_key[dg.AssetKey("uploaded_files")]
        == "uploads"
    )
