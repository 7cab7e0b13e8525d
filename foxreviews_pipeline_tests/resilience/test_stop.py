"""Stop means stop: SIGTERM or SIGINT ends `run-day` within seconds, its run CANCELED, its
pool slot free, nothing retried; the next run is clean. Spools of dead writers go away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from foxreviews_pipeline.lib.sirene.landing import (
    RAW_DATASET,
    STALE_SPOOL_S,
    remove_stale_spools,
    stale_spools,
)
from foxreviews_pipeline.sample.fake_server import FakeInseeServer, Fault

from .conftest import (
    DAY,
    run_foxreviews,
    start_run_day,
    subprocess_env,
    wait_for_step_start,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_run_day_within_seconds_and_the_next_run_is_clean(instance, signum):
    # INSEE says the day is published, then fails every search: the step would retry for
    # many minutes (the first request is run-day's own publication check).
    day = date.fromisoformat(DAY)
    server = FakeInseeServer(
        api_key="test-key",
        last_processed_at=datetime.combine(day + timedelta(days=1), datetime.min.time()) + timedelta(hours=1),
        made_available_at=datetime.combine(day + timedelta(days=1), datetime.min.time()) + timedelta(hours=6),
        faults={n: Fault.http(503) for n in range(2, 5000)},
    )
    server.start()
    env = subprocess_env(
        FOXREVIEWS_SIRENE_SOURCE="api",
        FOXREVIEWS_INSEE_API_KEY="test-key",
        FOXREVIEWS_INSEE_BASE_URL=server.base_url,
    )
    known = {run.run_id for run in instance.get_runs()}
    proc = start_run_day(env)
    try:
        run_id = wait_for_step_start(instance, "etablissements_raw", proc, known=known)
        time.sleep(1)  # inside INSEE's retries
        sent = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert took < 30
    assert proc.returncode == 128 + signum
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (
        f"foxreviews: stopped by {signal.Signals(signum).name}, nothing of the interrupted step "
        f"published; run {run_id} canceled, its pool slots freed"
    )
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
    # Nothing retried: no step ran after the signal, and no other run was started for it.
    starts = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    time.sleep(2)
    assert instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records == starts
    assert {r.run_id for r in instance.get_runs()} - known - {run_id} == {
        r.run_id for r in instance.get_runs() if r.job_name == "reference_data" and r.run_id not in known
    }
    assert instance.event_log_storage.get_concurrency_info("insee_api").claimed_slots == []

    done = run_foxreviews("run-day", "--date", DAY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Day {DAY}: done in" in done.stdout
    assert "left unfinished" not in done.stderr  # nothing for the sweep to clean


def test_spools_of_dead_writers_are_found_and_removed(tmp_path):
    folder = tmp_path / "etablissements_raw"
    folder.mkdir()
    dead = _dead_pid()
    mine = folder / f".2026-11-20.json.gz.{os.getpid()}.a1b2c3.spool"
    gone = folder / f".2026-11-19.json.gz.{dead}.d4e5f6.spool"
    unnamed_old = folder / ".2026-11-18.json.gz.g7h8i9.spool"
    unnamed_new = folder / ".2026-11-17.json.gz.j1k2l3.spool"
    partition = folder / "2026-11-16.json.gz"
    for path in (mine, gone, unnamed_old, unnamed_new, partition):
        path.write_bytes(b"x" * 1000)
    old = time.time() - STALE_SPOOL_S - 60
    os.utime(unnamed_old, (old, old))
    assert stale_spools(folder) == [unnamed_old, gone]
    said: list[str] = []
    assert remove_stale_spools(folder, said.append) == [unnamed_old, gone]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in (mine, unnamed_new, partition)
    )
    assert len(said) == 2 and "1,000 bytes" in said[0]


def test_a_spool_of_a_killed_landing_is_removed_by_the_cleanup(tmp_path, pg_conn):
    from foxreviews_pipeline.lib.maintenance.cleanup import run_cleanup

    folder = tmp_path / "landing" / RAW_DATASET
    folder.mkdir(parents=True)
    gone = folder / f".2026-11-19.json.gz.{_dead_pid()}.d4e5f6.spool"
    gone.write_bytes(b"x" * 10)
    dry = run_cleanup(pg_conn, upload_root=tmp_path / "uploads", landing_root=tmp_path / "landing", dry_run=True)
    assert dry.spool_files_deleted == 1 and gone.exists()
    done = run_cleanup(pg_conn, upload_root=tmp_path / "uploads", landing_root=tmp_path / "landing")
    assert done.spool_files_deleted == 1 and not gone.exists()


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_landing_spool_name_carries_its_writer(tmp_path):
    from datetime import date

    from foxreviews_pipeline.lib.sirene.landing import PartitionWriter

    with PartitionWriter(tmp_path, date(2026, 11, 20)) as writer:
        spool = Path(writer.spool_path)
        assert f".{os.getpid()}." in spool.name and spool.exists()
        assert stale_spools(tmp_path) == []  # its writer is alive
