"""The start-up sweep and the bounded pool wait, against the project's instance: dead runs of
this host are failed and their slots freed, live or foreign ones are left alone, and a run
waiting for `insee_api` names the holder and gives up after the configured bound."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import dagster as dg
import psutil
import pytest

from foxreviews_pipeline.recovery import (
    HOST_TAG,
    PID_TAG,
    PROCESS_START_TAG,
    PoolWatchdog,
    process_tags,
    sweep_dead_runs,
)

from .conftest import DAY, run_foxreviews, subprocess_env

POOL = "insee_api"


def _dead_process_tags() -> dict[str, str]:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(child.pid).create_time()
    child.wait()
    return {PID_TAG: str(child.pid), HOST_TAG: socket.gethostname(), PROCESS_START_TAG: f"{started:.2f}"}


def _started_run(instance: dg.DagsterInstance, tags: dict[str, str], *, holds: str | None = POOL) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, status=dg.DagsterRunStatus.STARTED, tags=tags)
    )
    if holds:
        instance.event_log_storage.initialize_concurrency_limit_to_default(holds)
        status = instance.event_log_storage.claim_concurrency_slot(holds, run_id, "etablissements_raw")
        assert status.is_claimed
    return run_id


def _holders(instance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


def test_the_sweep_fails_dead_runs_of_this_host_only(instance):
    dead = _started_run(instance, _dead_process_tags())
    alive = _started_run(instance, process_tags(), holds=None)
    elsewhere = _started_run(instance, {**_dead_process_tags(), HOST_TAG: "another-host"}, holds=None)
    said: list[str] = []

    assert sweep_dead_runs(instance, said.append) == [dead]
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(alive).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere).status == dg.DagsterRunStatus.STARTED
    assert _holders(instance) == set()
    assert any(dead in line for line in said)


def test_a_reused_pid_is_not_mistaken_for_the_dead_process(instance):
    tags = {**process_tags(), PROCESS_START_TAG: "1000000000.00"}  # our pid, another start time
    run_id = _started_run(instance, tags)
    assert sweep_dead_runs(instance, lambda _: None) == [run_id]
    assert _holders(instance) == set()


def test_slots_held_by_a_finished_run_are_freed(instance):
    run_id = _started_run(instance, {})
    instance.report_run_failed(instance.get_run_by_id(run_id), message="ended without freeing")
    assert _holders(instance) == {run_id}
    sweep_dead_runs(instance, lambda _: None)
    assert _holders(instance) == set()


@pytest.mark.slow
def test_run_day_waiting_for_a_live_holder_says_so_and_gives_up(instance):
    holder = _started_run(instance, process_tags())  # this test process: alive
    done = run_foxreviews(
        "run-day", "--date", DAY, env=subprocess_env(FOXREVIEWS_POOL_WAIT_TIMEOUT_SECONDS="3"),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        f"foxreviews: waiting for pool {POOL}, held by run {holder} (etablissements_raw) "
        "(giving up after 3 s)"
    )
    assert lines[-1].startswith(
        f"foxreviews: gave up after 3 s waiting for pool {POOL}, held by run {holder} (etablissements_raw)"
    )
    assert len(lines) == 2
    assert _holders(instance) == {holder}  # a live holder keeps its slot


def test_the_watchdog_bounds_a_claim_made_during_execution(instance):
    holder = _started_run(instance, process_tags())
    waiting = _started_run(instance, process_tags(), holds=None)
    status = instance.event_log_storage.claim_concurrency_slot(POOL, waiting, "etablissements_raw")
    assert not status.is_claimed  # queued behind the holder, as Dagster's executor would be
    gave_up, said = [], []
    watchdog = PoolWatchdog(
        instance, waiting, [POOL], timeout_s=1, poll_s=0.2, say=said.append,
        give_up=lambda: gave_up.append(True),
    )
    watchdog.start()
    watchdog.join(timeout=120)
    assert gave_up == [True]
    assert said[0].startswith(f"waiting for pool {POOL}, held by run {holder}")
    assert said[-1].startswith(f"gave up after 1 s waiting for pool {POOL}, held by run {holder}")
    assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.FAILURE
    assert waiting not in instance.event_log_storage.get_concurrency_run_ids()
    assert _holders(instance) == {holder}
