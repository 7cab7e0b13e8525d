"""A `run-day` killed with SIGKILL during any daily asset stops nothing: the next `run-day`
marks the dead run failed, frees the `insee_api` slot it held, and lands the same tables as a
clean run; a scheduled-style run on the same instance is not blocked either."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import dagster as dg
import pytest

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.resources import build_resources
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.settings import PROJECT_ROOT, load_settings
from foxreviews_pipeline_tests.conftest import TEST_DB_PREFIX, _create_database, drop_database

from .conftest import (
    DAY,
    foxreviews_command,
    run_foxreviews,
    start_run_day,
    table_digest,
    wait_for_step_start,
)

POOL = "insee_api"


@pytest.fixture(scope="module")
def clean_digest(pg_server_url: str, template_database: str):
    """The tables after one uninterrupted `run-day` of DAY on a fresh database."""
    name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server_url, name, template_database)
    home = Path(tempfile.mkdtemp(prefix="fxclean-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_") and k != "DAGSTER_HOME"}
    env.update(FOXREVIEWS_DATABASE_URL=url, FOXREVIEWS_HOME=str(home), FOXREVIEWS_SIRENE_SOURCE="sample")
    try:
        done = subprocess.run(
            [*foxreviews_command(), "run-day", "--date", DAY], cwd=PROJECT_ROOT, env=env,
            check=False, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        yield table_digest(url)
    finally:
        drop_database(pg_server_url, name)
        drop_database(pg_server_url, name + "_dagster")
        shutil.rmtree(home, ignore_errors=True)


def _holders(instance: dg.DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


@pytest.mark.slow
# The day's steps: the landing, then the one step that writes, audits and publishes
# `entreprises` and `pro_localisations`.
@pytest.mark.parametrize("asset", ["etablissements_raw", "directory_day"])
def test_kill_9_during_a_daily_asset_stops_nothing(asset, instance, database_url, clean_digest):
    known = {run.run_id for run in instance.get_runs()}
    proc = start_run_day()
    try:
        run_id = wait_for_step_start(instance, asset, proc, known=known)
    finally:
        proc.kill()
        proc.wait(timeout=60)

    # What the crash leaves: the run STARTED for ever, the pool slot held when it had it.
    killed = instance.get_run_by_id(run_id)
    assert killed.status == dg.DagsterRunStatus.STARTED
    assert not any(
        r.event_log_entry.step_key == asset
        for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
    ), f"{asset} had already finished when the process was killed"
    if asset == "etablissements_raw":
        assert _holders(instance) == {run_id}

    done = run_foxreviews("run-day", "--date", DAY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Day {DAY}: done in" in done.stdout
    assert f"run {run_id} of an earlier process" in done.stderr
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert _holders(instance) == set()
    assert table_digest(database_url) == clean_digest

    # The next scheduled run (same instance, as the daemon's run worker uses it) is not
    # blocked by the pool either. A blocked run would never return: bound the wait.
    resources = {**build_resources(load_settings()), "sirene": SireneSource(sample_size=500)}
    outcome: dict = {}

    def scheduled() -> None:
        outcome["result"] = dg.materialize(
            [etablissements_raw, directory_day], partition_key="2026-11-21",
            resources=resources, instance=instance, raise_on_error=False,
        )

    worker = threading.Thread(target=scheduled, daemon=True)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "the scheduled run is still waiting for the insee_api pool"
    assert outcome["result"].success
    assert _holders(instance) == set()


def test_run_monitoring_frees_the_slots_of_runs_that_ended(instance):
    """For runs launched by the daemon, run monitoring marks failed a run whose worker died
    (where the launcher can tell) and then frees the slots it still held."""
    assert instance.run_monitoring_enabled
    assert 0 < instance.run_monitoring_settings["free_slots_after_run_end_seconds"] <= 600
