"""Faults around an upload rather than in it: a writer that pauses, two runs or two ticks at
once, a folder or file that disappears, and files whose content is not what they claim.
Concurrency is staged with events, never with timing: one side is held at a known point
while the other acts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
import zipfile
from pathlib import Path

import dagster as dg
import openpyxl
import pytest
from openpyxl.styles import Font

from foxreviews_pipeline.defs.resources import PostgresResource, UploadFolder
from foxreviews_pipeline.defs.uploads import sensors
from foxreviews_pipeline.defs.uploads.assets import uploaded_files
from foxreviews_pipeline.defs.uploads.sensors import UploadIntake, upload_sensor
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.uploads import (
    ImportOutcome,
    UploadBusy,
    UploadNotFound,
    import_upload,
    importer,
    intake,
    register,
    scan_incoming,
    upload_lock,
)
from foxreviews_pipeline.lib.uploads.intake import QUEUED
from foxreviews_pipeline.lib.uploads.model import FileRejected
from foxreviews_pipeline.lib.uploads.readers import MAX_PHYSICAL_ROWS, read_xlsx
from foxreviews_pipeline.lib.uploads.specs import ALL_COLUMNS
from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, UploadEnv

HEADER = "siret,nom\n"
WAIT = 30  # seconds an event may take before the test gives up (never reached when it works)


def siret(n: int) -> str:
    """A SIRET whose SIREN and SIRET both pass their check digit."""
    siren = f"8{n:07d}"
    siren += luhn_check_digit(siren)
    body = f"{siren}{n % 10_000:04d}"
    return body + luhn_check_digit(body)


def rows(start: int, count: int) -> str:
    return "".join(f"{siret(n)},ENTREPRISE {n}\n" for n in range(start, start + count))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only_error(outcome: ImportOutcome) -> dict:
    [error] = outcome.errors
    return error.as_json()


@pytest.fixture
def resources(env: UploadEnv, tmp_path: Path) -> dict:
    return {
        "postgres": PostgresResource(database_url=env.url, home=str(tmp_path / "home")),
        "upload_folder": UploadFolder(root=str(env.paths.root)),
        "upload_intake": UploadIntake(quiet_seconds=0),
    }


def tick(resources: dict, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources=resources
    )
    return upload_sensor(context)


# --- 1. a file is taken once quiet, and what is imported is what was hashed ------------------


def test_a_writer_that_pauses_is_not_taken_before_the_quiet_period(env: UploadEnv):
    path = env.drop("entreprises.csv", HEADER + rows(0, 1_000))
    t0 = 1_000_000.0

    first = scan_incoming(env.paths, {}, t0, quiet_seconds=60)
    assert first.stable == [] and first.waiting == ["entreprises.csv"]
    # Unchanged at the next tick: one unchanged tick is not a quiet period.
    second = scan_incoming(env.paths, first.watched, t0 + 15, quiet_seconds=60)
    assert second.stable == []
    assert second.watched["entreprises.csv"]["since"] == t0

    with path.open("a") as handle:  # the writer goes on after a 40 s pause
        handle.write(rows(1_000, 1_000))
    third = scan_incoming(env.paths, second.watched, t0 + 45, quiet_seconds=60)
    assert third.stable == [] and third.watched["entreprises.csv"]["since"] == t0 + 45
    fourth = scan_incoming(env.paths, third.watched, t0 + 100, quiet_seconds=60)
    assert fourth.stable == []
    fifth = scan_incoming(env.paths, fourth.watched, t0 + 105, quiet_seconds=60)
    assert fifth.stable == ["entreprises.csv"] and fifth.watched == {}


def test_a_rewrite_that_keeps_size_and_mtime_restarts_the_quiet_period(env: UploadEnv):
    path = env.drop("entreprises.csv", HEADER + rows(0, 10))
    before = path.stat()
    first = scan_incoming(env.paths, {}, 0.0, quiet_seconds=60)

    # Same size, same inode, mtime put back: only the bytes tell.
    content = path.read_bytes()
    path.write_bytes(content.replace(b"ENTREPRISE 1\n", b"ENTREPRISE X\n"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns

    second = scan_incoming(env.paths, first.watched, 70.0, quiet_seconds=60)
    assert second.stable == [] and second.watched["entreprises.csv"]["since"] == 70.0
    third = scan_incoming(env.paths, second.watched, 130.0, quiet_seconds=60)
    assert third.stable == ["entreprises.csv"]


def test_the_sensor_keeps_first_seen_times_in_its_cursor(
    env: UploadEnv, resources: dict, monkeypatch: pytest.MonkeyPatch
):
    now = [5_000.0]
    monkeypatch.setattr(sensors, "clock", lambda: now[0])
    resources = {**resources, "upload_intake": UploadIntake(quiet_seconds=60)}
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    first = tick(resources)
    assert json.loads(first.cursor)["files"]["entreprises.csv"]["since"] == 5_000.0
    now[0] += 59
    assert tick(resources, first.cursor).run_requests == []
    now[0] += 1
    assert len(tick(resources, first.cursor).run_requests) == 1


def test_rows_written_after_the_file_was_taken_are_never_half_imported(env: UploadEnv):
    path = env.paths.folder("incoming") / "entreprises.csv"
    with path.open("w") as writer:
        writer.write(HEADER + rows(0, 1_000))
        writer.flush()
        registration = register(env.url, env.paths, "entreprises.csv")
        assert registration is not None and registration.outcome == QUEUED
        # The writer still has the file open: its next rows land in processing/.
        writer.write(rows(1_000, 1_000))
    before = env.snapshot()

    outcome = import_upload(env.url, env.paths, registration.partition_key, run_id="run-1")

    assert outcome.status == "ERROR"
    error = only_error(outcome)
    assert error["code"] == "file_changed"
    assert error["reason"].startswith(
        f"the file changed after it was taken for import (SHA-256 "
        f"{registration.content_sha256[:12]}… when taken, "
    )
    assert "put back into incoming/ as entreprises.csv" in error["reason"]
    assert env.snapshot() == before  # nothing written
    log = env.log(registration.log_id)
    assert log["status"] == "ERROR" and log["stored_path"] is None
    assert log["errors"][0]["code"] == "file_changed"
    # Back in incoming/ whole, taken again with all its rows and the hash of what is archived.
    assert env.files("processing") == [] and env.files("incoming") == ["entreprises.csv"]
    again, second = env.process("entreprises.csv")
    assert again.outcome == QUEUED and second.status == "SUCCESS"
    assert second.total_rows == second.success_rows == 2_000
    archived = env.paths.root / env.log(again.log_id)["stored_path"]
    assert env.log(again.log_id)["content_sha256"] == sha256(archived)
    assert env.query("SELECT count(*) FROM enterprise_entreprise") == [(2_000,)]


def test_a_file_that_changes_while_it_is_read_is_not_archived(
    env: UploadEnv, monkeypatch: pytest.MonkeyPatch
):
    env.drop("entreprises.csv", HEADER + rows(0, 20))
    registration = register(env.url, env.paths, "entreprises.csv")
    real_read = importer.read_table

    def read_then_append(path, ext, known_columns, *args):
        table = real_read(path, ext, known_columns, *args)
        with path.open("a") as handle:
            handle.write(rows(20, 5))
        return table

    monkeypatch.setattr(importer, "read_table", read_then_append)
    before = env.snapshot()
    outcome = import_upload(env.url, env.paths, registration.partition_key)

    assert outcome.status == "ERROR" and only_error(outcome)["code"] == "file_changed"
    assert env.snapshot() == before  # the rows written were rolled back with the archive move
    assert env.files("archive") == [] and env.files("incoming") == ["entreprises.csv"]
    assert (env.paths.folder("incoming") / "entreprises.csv").read_text().count("\n") == 26


def test_a_file_that_changes_while_it_is_registered_stays_in_incoming(
    env: UploadEnv, monkeypatch: pytest.MonkeyPatch
):
    path = env.drop("entreprises.csv", HEADER + rows(0, 5))
    real_hash = intake._hash_regular_file
    calls = []

    def hash_then_append(target):
        digest = real_hash(target)
        calls.append(target.parent.name)
        if len(calls) == 1:  # between the hash in incoming/ and the rename
            with path.open("a") as handle:
                handle.write(rows(5, 5))
        return digest

    monkeypatch.setattr(intake, "_hash_regular_file", hash_then_append)
    assert register(env.url, env.paths, "entreprises.csv") is None
    assert calls == ["incoming", "processing"]
    assert env.files("incoming") == ["entreprises.csv"] and env.files("processing") == []
    assert env.query("SELECT count(*) FROM core_importlog") == [(0,)]


def test_register_skips_a_file_that_changed_since_the_scan(env: UploadEnv):
    path = env.drop("entreprises.csv", HEADER + rows(0, 5))
    scan = scan_incoming(env.paths, {}, 0.0, quiet_seconds=0)
    with path.open("a") as handle:
        handle.write(rows(5, 5))
    assert (
        register(env.url, env.paths, "entreprises.csv", scan.taken_at["entreprises.csv"]) is None
    )
    assert env.files("incoming") == ["entreprises.csv"]
    assert env.query("SELECT count(*) FROM core_importlog") == [(0,)]


# --- 2. one run at a time per upload ---------------------------------------------------------


def test_a_second_import_of_the_same_upload_stops_without_touching_it(
    env: UploadEnv, monkeypatch: pytest.MonkeyPatch
):
    env.drop("entreprises.csv", HEADER + rows(0, 50))
    registration = register(env.url, env.paths, "entreprises.csv")
    key = registration.partition_key
    inside, release = threading.Event(), threading.Event()
    real_parse = importer._parse

    def held_parse(path, file_name):
        if threading.current_thread().name == "run-a":
            inside.set()
            release.wait(WAIT)
        return real_parse(path, file_name)

    monkeypatch.setattr(importer, "_parse", held_parse)
    results: dict[str, object] = {}

    def run_a() -> None:
        try:
            results["a"] = import_upload(env.url, env.paths, key, run_id="run-a")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results["a"] = exc

    thread = threading.Thread(target=run_a, name="run-a")
    thread.start()
    try:
        assert inside.wait(WAIT)  # run A holds the upload, in the middle of its import
        during = env.log(registration.log_id)
        assert during["status"] == "PROCESSING" and during["run_id"] == "run-a"

        with pytest.raises(UploadBusy) as busy:
            import_upload(env.url, env.paths, key, run_id="run-b")
        assert str(busy.value) == (
            f"another run is importing {key} (import #{registration.log_id}, PROCESSING, "
            "run run-a): this run stopped without touching the file or its import log"
        )
        assert env.log(registration.log_id) == during
        assert env.files("processing") == [key]
    finally:
        release.set()
        thread.join(WAIT)

    outcome = results["a"]
    assert isinstance(outcome, ImportOutcome), outcome
    assert outcome.status == "SUCCESS" and outcome.success_rows == 50
    log = env.log(registration.log_id)
    assert (log["status"], log["run_id"], log["success_rows"]) == ("SUCCESS", "run-a", 50)
    assert log["stored_path"] == f"archive/{key}" and env.files("archive") == [key]
    assert env.query("SELECT count(*) FROM core_importlog") == [(1,)]


def test_a_run_that_finds_the_upload_held_fails_and_leaves_the_row(
    env: UploadEnv, resources: dict
):
    env.drop("entreprises.csv", HEADER + rows(0, 3))
    registration = register(env.url, env.paths, "entreprises.csv")
    key = registration.partition_key
    before = env.log(registration.log_id)
    with upload_lock(env.url, key) as held, dg.instance_for_test() as instance:
        assert held
        instance.add_dynamic_partitions("uploads", [key])
        result = dg.materialize(
            [uploaded_files],
            partition_key=key,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "another run is importing" in failure.step_failure_data.user_failure_data.description
    assert env.log(registration.log_id) == before
    assert env.files("processing") == [key]


# --- 3. two ticks registering one file ------------------------------------------------------


def test_two_ticks_registering_one_file_at_once(env: UploadEnv, monkeypatch: pytest.MonkeyPatch):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    hashed, go_on = threading.Event(), threading.Event()
    real_hash = intake._hash_regular_file

    def held_hash(path):
        digest = real_hash(path)
        if threading.current_thread().name == "tick-b":
            hashed.set()
            go_on.wait(WAIT)
        return digest

    monkeypatch.setattr(intake, "_hash_regular_file", held_hash)
    results: dict[str, object] = {}

    def tick_b() -> None:
        try:
            results["b"] = register(env.url, env.paths, "entreprises.csv")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results["b"] = exc

    thread = threading.Thread(target=tick_b, name="tick-b")
    thread.start()
    try:
        assert hashed.wait(WAIT)  # tick B listed and hashed the file, not moved it yet
        first = register(env.url, env.paths, "entreprises.csv")  # tick A takes it meanwhile
    finally:
        go_on.set()
        thread.join(WAIT)

    assert first is not None and first.outcome == QUEUED
    assert results["b"] is None
    assert env.query("SELECT status, stored_path FROM core_importlog") == [
        ("PENDING", f"processing/{first.partition_key}")
    ]
    assert env.files("processing") == [first.partition_key]
    assert env.files("incoming") == env.files("rejected") == []


def test_a_file_taken_by_another_tick_since_the_listing_is_skipped(
    env: UploadEnv, resources: dict
):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    scan = scan_incoming(env.paths, {}, 0.0, quiet_seconds=0)
    assert scan.stable == ["entreprises.csv"]
    other = register(env.url, env.paths, "entreprises.csv")
    assert other is not None and other.outcome == QUEUED

    assert register(env.url, env.paths, "entreprises.csv", scan.taken_at["entreprises.csv"]) is None
    assert register(env.url, env.paths, "entreprises.csv") is None
    assert env.query("SELECT count(*) FROM core_importlog") == [(1,)]


# --- 4. every row ends, whatever disappears -------------------------------------------------


def test_a_deleted_upload_folder_ends_the_waiting_row_error(env: UploadEnv):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    registration = register(env.url, env.paths, "entreprises.csv")
    shutil.rmtree(env.paths.root)

    with pytest.raises(UploadNotFound):
        import_upload(env.url, env.paths, registration.partition_key)

    log = env.log(registration.log_id)
    assert log["status"] == "ERROR" and log["stored_path"] is None
    assert log["completed_at"] is not None
    reason = (
        "the file was removed from processing/ before it was imported "
        f"(the upload folder {env.paths.root} was removed)"
    )
    assert log["errors"] == [{"row": None, "column": None, "reason": reason, "code": "file_missing"}]
    assert log["note"] == reason
    assert not env.paths.root.exists()  # the run did not recreate what staff removed


def test_a_file_removed_during_its_import_ends_its_row_error(
    env: UploadEnv, monkeypatch: pytest.MonkeyPatch
):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    registration = register(env.url, env.paths, "entreprises.csv")
    real_parse = importer._parse

    def remove_then_parse(path, file_name):
        path.unlink()
        return real_parse(path, file_name)

    monkeypatch.setattr(importer, "_parse", remove_then_parse)
    with pytest.raises(UploadNotFound):
        import_upload(env.url, env.paths, registration.partition_key)

    log = env.log(registration.log_id)
    assert log["status"] == "ERROR" and log["stored_path"] is None
    assert log["errors"][0]["code"] == "file_missing"
    assert log["note"] == "the file was removed from processing/ before it was imported"
    assert env.files("rejected") == []


def test_the_sensor_closes_a_row_whose_file_was_removed(env: UploadEnv, resources: dict):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    registration = register(env.url, env.paths, "entreprises.csv")
    key = registration.partition_key
    (env.paths.folder("processing") / key).unlink()

    # While a run holds the upload, it is the run's to finish.
    with upload_lock(env.url, key) as held:
        assert held
        tick(resources)
        assert env.log(registration.log_id)["status"] == "PENDING"

    result = tick(resources)
    assert result.run_requests == []
    assert result.skip_reason.skip_message == (
        f"1 import log row(s) closed as ERROR, their file removed: #{registration.log_id}"
    )
    log = env.log(registration.log_id)
    assert log["status"] == "ERROR" and log["errors"][0]["code"] == "file_missing"
    assert log["note"] == "the file was removed from processing/ before it was imported"


def test_a_file_in_place_of_the_upload_folder_is_a_skip_reason(env: UploadEnv, resources: dict):
    shutil.rmtree(env.paths.root)
    env.paths.root.write_text("not a folder")

    result = tick(resources, '{"files": {}, "requested": {}}')

    assert result.run_requests == []
    assert result.skip_reason.skip_message == (
        f"{env.paths.root} is a file, not a folder: no file is taken until the upload folder "
        "is usable again"
    )
    assert result.cursor == '{"files": {}, "requested": {}}'


def test_a_file_in_place_of_incoming_is_a_skip_reason(env: UploadEnv, resources: dict):
    incoming = env.paths.root / "incoming"
    incoming.rmdir()
    incoming.write_text("oops")
    result = tick(resources)
    assert result.skip_reason.skip_message.startswith(f"{incoming} is a file, not a folder")


def test_an_import_after_the_folder_became_a_file_ends_its_row(env: UploadEnv):
    env.drop("entreprises.csv", HEADER + rows(0, 5))
    registration = register(env.url, env.paths, "entreprises.csv")
    shutil.rmtree(env.paths.root)
    env.paths.root.write_text("not a folder")

    with pytest.raises(UploadNotFound):
        import_upload(env.url, env.paths, registration.partition_key)
    log = env.log(registration.log_id)
    assert log["status"] == "ERROR"
    assert log["note"] == (
        "the file was removed from processing/ before it was imported "
        f"({env.paths.root} is a file, not a folder)"
    )


# --- 5. reasons say what happened ----------------------------------------------------------


def test_a_workbook_whose_far_corner_is_formatted_is_read_by_its_rows(env: UploadEnv):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["siret", "nom"])
    sheet.append([SIRET_A, "BOULANGERIE MARTIN"])
    sheet["XFD1048576"].font = Font(bold=True)  # the sheet now declares A1:XFD1048576
    buffer = io.BytesIO()
    workbook.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        assert b'<dimension ref="A1:XFD1048576"' in archive.read("xl/worksheets/sheet1.xml")
    env.drop("entreprises.xlsx", buffer.getvalue())

    _, outcome = env.process("entreprises.xlsx")

    assert outcome.status == "SUCCESS", outcome.errors
    assert outcome.total_rows == outcome.success_rows == 1


def test_too_many_blank_rows_are_refused_as_blank_rows(tmp_path: Path):
    path = tmp_path / "entreprises.xlsx"
    blank = "".join(f'<row r="{r}"/>' for r in range(3, MAX_PHYSICAL_ROWS + 2))
    sheet = (
        '<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.'
        'org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>siret</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>nom</t></is></c></row>'
        f'<row r="2"><c r="A2" t="inlineStr"><is><t>{SIRET_A}</t></is></c>'
        '<c r="B2" t="inlineStr"><is><t>X</t></is></c></row>'
        f"{blank}</sheetData></worksheet>"
    )
    workbook = openpyxl.Workbook()
    buffer = io.BytesIO()
    workbook.save(buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            data = sheet.encode() if item.filename == "xl/worksheets/sheet1.xml" else source.read(item)
            out.writestr(item, data)

    with pytest.raises(FileRejected) as rejected:
        read_xlsx(path, ALL_COLUMNS)
    assert rejected.value.code == "too_many_rows"
    assert rejected.value.reason == (
        f"the file has more than {MAX_PHYSICAL_ROWS:,} rows, blank or formatted ones included "
        "(1 of them with data; the limit is 50,000 data rows): remove the empty rows or split it"
    )


JSON_ROWS = json.dumps([{"siret": SIRET_A, "nom": "BOULANGERIE MARTIN"}])


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (JSON_ROWS, "JSON"),
        ("\ufeff\n  " + JSON_ROWS, "JSON"),
        (f'{{"siret": "{SIRET_A}", "nom": "A"}}\n{{"siret": "{SIRET_A}", "nom": "B"}}\n', "JSON"),
        ("<!DOCTYPE html><html><body><table><tr><td>siret</td></tr></table></body></html>", "an HTML page"),
        ('<?xml version="1.0"?><Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet"/>', "XML"),
    ],
    ids=["json", "json-after-bom-and-blanks", "json-lines", "html", "xml-spreadsheet-2003"],
)
def test_a_csv_whose_content_is_not_csv_says_what_it_is(env: UploadEnv, content: str, what: str):
    env.drop("entreprises.csv", content)
    registration, outcome = env.process("entreprises.csv")
    assert outcome.status == "ERROR"
    assert only_error(outcome) == {
        "row": None,
        "column": None,
        "reason": f"the file is named .csv but its content is {what}, not CSV (a CSV starts "
        "with its header row, e.g. siret;nom): export the data as CSV or Excel",
        "code": "content_mismatch",
    }
    assert env.log(registration.log_id)["stored_path"].startswith("rejected/")


def test_a_json_file_named_xlsx_says_it_is_json(env: UploadEnv):
    env.drop("entreprises.xlsx", JSON_ROWS)
    _, outcome = env.process("entreprises.xlsx")
    assert only_error(outcome)["reason"] == (
        "the file is named .xlsx but its content is not an Excel 2007+ workbook "
        "(not a ZIP archive) (it looks like: JSON)"
    )
