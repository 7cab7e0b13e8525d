"""The weekly cleanup against a real database and real folders, at a frozen time."""

import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
import time_machine

from foxreviews_pipeline.defs.maintenance.cleanup import Retention, cleanup_job, dry_run_name
from foxreviews_pipeline.defs.maintenance.definitions import build_definitions
from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource, UploadFolder
from foxreviews_pipeline.lib.maintenance.cleanup import RetentionPolicy, run_cleanup
from foxreviews_pipeline.lib.settings import ConfigurationError, load_settings

PARIS = ZoneInfo("Europe/Paris")
# Sunday 29 March 2026, 03:00 Paris: the weekly tick on the spring-forward night.
NOW = datetime(2026, 3, 29, 3, 0, tzinfo=PARIS)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def put(path: Path, age_days: float, content: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    stamp = ago(age_days).timestamp()
    os.utime(path, (stamp, stamp))
    return path


class Layout:
    """An upload folder, a landing zone and a folder outside both, with a known history."""

    def __init__(self, base: Path):
        self.base = base
        self.uploads = base / "uploads"
        self.landing = base / "home" / "landing"
        self.raw = self.landing / "etablissements"
        self.outside = base / "outside"
        for name in ("incoming", "processing", "archive", "rejected"):
            (self.uploads / name).mkdir(parents=True)
        self.raw.mkdir(parents=True)

        up = self.uploads
        self.expired_uploads = [
            put(up / "archive" / "old_and_logged.csv", 100),
            put(up / "archive" / "a40.csv", 40),
            put(up / "rejected" / "r35.xlsx", 35),
            put(up / "archive" / "2026-01" / "nested_old.csv", 60),
        ]
        self.expired_reasons = [
            put(up / "rejected" / "r35.xlsx.reason.txt", 35, "wrong extension"),
            put(up / "rejected" / "orphan.csv.reason.txt", 45, "empty file"),
        ]
        self.kept_uploads = [
            # Staff's copy was last modified long ago, but it was uploaded two days ago.
            put(up / "archive" / "fresh_but_old_mtime.csv", 400),
            put(up / "archive" / "recent.csv", 5),
            put(up / "archive" / "a29.csv", 29),
            put(up / "rejected" / "r10.csv", 10),
            # A reason file goes with its upload, whatever its own date.
            put(up / "rejected" / "r10.csv.reason.txt", 45, "bad header"),
            put(up / "incoming" / "waiting.csv", 200),
            put(up / "processing" / "running.csv", 200),
        ]

        self.outside_files = [
            put(self.outside / "precious.csv", 365),
            put(self.outside / "dir" / "old.csv", 365),
            put(self.outside / "raw_target.json.gz", 365),
        ]
        (up / "archive" / "link_to_outside.csv").symlink_to(self.outside / "precious.csv")
        (up / "rejected" / "linked_dir").symlink_to(self.outside / "dir", target_is_directory=True)
        (self.raw / "2020-01-01.json.gz").symlink_to(self.outside / "raw_target.json.gz")
        self.links = [
            up / "archive" / "link_to_outside.csv",
            up / "rejected" / "linked_dir",
            self.raw / "2020-01-01.json.gz",
        ]

        # Retention 30 days at 29 March (Paris): the oldest partition kept is 27 February.
        self.expired_raw = [
            put(self.raw / "2026-02-26.json.gz", 31),
            # Landed today by a backfill: the partition date decides, not the file's age.
            put(self.raw / "2025-12-01.json.gz", 0),
        ]
        self.expired_raw_sidecars = [put(self.raw / "2026-02-26.meta.json", 31)]
        self.kept_raw = [
            put(self.raw / "2026-02-27.json.gz", 30),
            put(self.raw / "2026-03-28.json.gz", 400),
            put(self.raw / ".2025-01-01.json.gz.k2j4.tmp", 0),  # a write in flight
            put(self.raw / "README.txt", 400),
            put(self.landing / "other_dataset" / "2020-01-01.json.gz", 400),
        ]

    def all_paths(self) -> set[Path]:
        found = set()
        for root, dirs, files in os.walk(self.base):
            for name in dirs + files:
                path = Path(root) / name
                if path.is_symlink() or path.is_file():
                    found.add(path)
        return found


def seed_log(conn: psycopg.Connection, layout: Layout) -> dict[str, int]:
    up = layout.uploads
    rows = {
        "old_no_file": (ago(91), None, None),
        "old_with_file": (ago(100), ago(100), "archive/old_and_logged.csv"),
        "kept_89": (ago(89), ago(89), None),
        "a40": (ago(40), ago(40), "archive/a40.csv"),
        "r35": (ago(35), ago(35), str(up / "rejected" / "r35.xlsx")),
        "fresh": (ago(2), ago(2), "archive/fresh_but_old_mtime.csv"),
        "a29": (ago(29), ago(29), "archive/a29.csv"),
        "through_link": (ago(40), ago(40), "archive/link_to_outside.csv"),
        "outside": (ago(40), ago(40), "../outside/precious.csv"),
    }
    ids = {}
    for name, (created, completed, stored) in rows.items():
        ids[name] = conn.execute(
            """
            INSERT INTO core_importlog (file_name, status, stored_path, note, created_at, completed_at)
            VALUES (%s, 'SUCCESS', %s, %s, %s, %s) RETURNING id
            """,
            (name, stored, "3 rows imported" if name == "a40" else "", created, completed),
        ).fetchone()[0]
    conn.commit()
    return ids


EXPECTED_COUNTS = {
    "import_log_rows_deleted": 2,
    "import_log_rows_marked_purged": 2,
    "change_rows_deleted": 0,  # the change feed: directory/test_change_feed.py
    "upload_files_deleted": 4,
    "upload_reason_files_deleted": 2,
    "raw_partitions_deleted": 2,
    "raw_sidecars_deleted": 1,
    "spool_files_deleted": 0,  # covered by resilience/test_stop.py
    "files_deleted": 9,
    "refused_paths": 3,
    "errors": 0,
}


def log_rows(conn) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT file_name, file_purged_at, note FROM core_importlog ORDER BY id"
    ).fetchall()
    return {name: (purged, note) for name, purged, note in rows}


def cleanup(conn, layout: Layout, dry_run: bool):
    result = run_cleanup(
        conn,
        upload_root=layout.uploads,
        landing_root=layout.landing,
        policy=RetentionPolicy(raw_days=30),
        now=NOW,
        dry_run=dry_run,
    )
    conn.commit()
    return result


def counts_without_bytes(result) -> dict[str, int]:
    return {k: v for k, v in result.counts().items() if k != "bytes_freed"}


def test_exactly_the_expired_rows_files_and_partitions_go(database_url, tmp_path):
    layout = Layout(tmp_path)
    before = layout.all_paths()
    with psycopg.connect(database_url) as conn:
        seed_log(conn, layout)
        result = cleanup(conn, layout, dry_run=False)
        rows = log_rows(conn)

    assert counts_without_bytes(result) == EXPECTED_COUNTS
    gone = set(layout.expired_uploads + layout.expired_reasons + layout.expired_raw + layout.expired_raw_sidecars)
    assert set(result.deleted_paths) == gone
    assert layout.all_paths() == before - gone
    assert result.bytes_freed == 7 * len("x") + len("wrong extension") + len("empty file")

    # Symbolic links are reported, not followed, and neither they nor their targets go.
    assert all(path.is_symlink() for path in layout.links)
    assert all(path.exists() for path in layout.outside_files)
    assert sorted(entry.split(":")[0] for entry in result.refused) == sorted(map(str, layout.links))

    assert set(rows) == {"kept_89", "a40", "r35", "fresh", "a29", "through_link", "outside"}
    purged = {name for name, (purged_at, _) in rows.items() if purged_at is not None}
    assert purged == {"a40", "r35"}
    assert rows["a40"][0] == NOW
    assert rows["a40"][1] == "3 rows imported\nuploaded file purged on 2026-03-29 after the 30-day retention"
    assert rows["r35"][1] == "uploaded file purged on 2026-03-29 after the 30-day retention"
    assert rows["fresh"] == (None, "")

    # A second run finds nothing left to do.
    with psycopg.connect(database_url) as conn:
        again = cleanup(conn, layout, dry_run=False)
    assert again.files_deleted == again.import_log_rows_deleted == again.import_log_rows_marked_purged == 0


def test_dry_run_deletes_nothing_and_reports_the_same_counts(database_url, new_database, tmp_path):
    dry_layout = Layout(tmp_path / "dry")
    before = dry_layout.all_paths()
    with psycopg.connect(database_url) as conn:
        seed_log(conn, dry_layout)
        rows_before = log_rows(conn)
        dry = cleanup(conn, dry_layout, dry_run=True)
        assert log_rows(conn) == rows_before
    assert dry.dry_run
    assert dry_layout.all_paths() == before
    assert counts_without_bytes(dry) == EXPECTED_COUNTS

    real_layout = Layout(tmp_path / "real")
    with psycopg.connect(new_database()) as conn:
        seed_log(conn, real_layout)
        real = cleanup(conn, real_layout, dry_run=False)
    assert real.counts() == dry.counts()
    assert [p.relative_to(real_layout.base) for p in real.deleted_paths] == [
        p.relative_to(dry_layout.base) for p in dry.deleted_paths
    ]


def test_linked_folders_are_not_entered(database_url, tmp_path):
    base = tmp_path / "project"
    uploads = base / "uploads"
    uploads.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    victim = put(outside / "archive-like" / "old.csv", 365)
    raw_victim = put(outside / "raw-like" / "2020-01-01.json.gz", 365)
    (uploads / "archive").symlink_to(outside / "archive-like", target_is_directory=True)
    (base / "landing").mkdir()
    (base / "landing" / "etablissements").symlink_to(outside / "raw-like", target_is_directory=True)

    with psycopg.connect(database_url) as conn:
        result = cleanup_at(conn, uploads, base / "landing")
    assert victim.exists() and raw_victim.exists()
    assert result.files_deleted == 0
    assert len(result.refused) == 2


def cleanup_at(conn, uploads: Path, landing: Path):
    return run_cleanup(conn, upload_root=uploads, landing_root=landing, now=NOW)


def test_missing_folders_are_nothing_to_clean(database_url, tmp_path):
    with psycopg.connect(database_url) as conn:
        result = cleanup_at(conn, tmp_path / "no-uploads", tmp_path / "no-landing")
    assert result.files_deleted == 0 and not result.refused and not result.errors


def test_now_must_be_timezone_aware(database_url, tmp_path):
    with psycopg.connect(database_url) as conn, pytest.raises(ValueError):
        run_cleanup(conn, upload_root=tmp_path, landing_root=tmp_path, now=datetime(2026, 3, 29))


# --- the Dagster job -----------------------------------------------------------------------


def run_job(database_url: str, layout: Layout, dry_run: bool) -> dg.ExecuteInProcessResult:
    return cleanup_job.execute_in_process(
        run_config={"ops": {"cleanup_files_and_logs": {"config": {"dry_run": dry_run}}}},
        resources={
            "postgres": PostgresResource(database_url=database_url, home=str(layout.base / "home")),
            "landing_zone": LandingZone(root=str(layout.landing)),
            "upload_folder": UploadFolder(root=str(layout.uploads)),
            "retention": Retention(raw_days=30),
        },
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return event.step_output_data.metadata


def test_job_reports_every_deletion_in_its_metadata(database_url, tmp_path):
    layout = Layout(tmp_path)
    before = layout.all_paths()
    with psycopg.connect(database_url) as conn:
        seed_log(conn, layout)

    with time_machine.travel(NOW, tick=True):
        dry = run_job(database_url, layout, dry_run=True)
        assert dry.success
        assert layout.all_paths() == before
        real = run_job(database_url, layout, dry_run=False)
        assert real.success

    for result, dry_run in ((dry, True), (real, False)):
        metadata = output_metadata(result)
        assert metadata["dry_run"].value is dry_run
        for name, value in EXPECTED_COUNTS.items():
            # A dry run deleted nothing, and its metadata says so: `would_delete_…`.
            shown = dry_run_name(name) if dry_run else name
            assert isinstance(metadata[shown], dg.IntMetadataValue), shown
            assert metadata[shown].value == value, shown
            if dry_run and shown != name:
                assert name not in metadata
        assert metadata["retention_days"].value == {
            "import_log": 90, "uploads": 30, "raw_partitions": 30, "changes": 30,
        }
    assert len(layout.all_paths()) == len(before) - EXPECTED_COUNTS["files_deleted"]


def test_raw_retention_setting():
    assert load_settings({}).raw_retention_days == 30
    settings = load_settings({"FOXREVIEWS_RAW_RETENTION_DAYS": "45"})
    assert settings.raw_retention_days == 45
    resources = build_definitions(settings).resources
    assert resources["retention"].raw_days == 45
    for wrong in ("abc", "0", "-3", "10.5", "100000"):
        with pytest.raises(ConfigurationError, match="FOXREVIEWS_RAW_RETENTION_DAYS"):
            load_settings({"FOXREVIEWS_RAW_RETENTION_DAYS": wrong})


def test_change_retention_setting():
    assert load_settings({}).change_retention_days == 30
    settings = load_settings({"FOXREVIEWS_CHANGE_RETENTION_DAYS": "7"})
    assert settings.change_retention_days == 7
    assert build_definitions(settings).resources["retention"].change_days == 7
    for wrong in ("abc", "0", "-3", "10.5", "100000"):
        with pytest.raises(ConfigurationError, match="FOXREVIEWS_CHANGE_RETENTION_DAYS"):
            load_settings({"FOXREVIEWS_CHANGE_RETENTION_DAYS": wrong})
