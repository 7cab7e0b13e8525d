"""Stop means stop for a run launched the way the daemon launches it: the run launcher of the
project's instance starts a run worker (a process of the code server, as `dagster code-server`
does in production). SIGTERM to that worker ends the run within 30 s, CANCELED, with its pool
slots free and no retry; the next run of the day is clean."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

import dagster as dg
import psutil
import pytest
from dagster._cli.job import _create_run
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

from foxreviews_pipeline.recovery import STOPPED_MESSAGE

from .conftest import DAY, run_foxreviews, subprocess_env

DAILY_JOB = "sirene_daily"
STEP = "etablissements_raw"
POOLS = ("insee_api", "directory_writes")
_WORKER_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, *, within_s: float, what: str):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {within_s:g} s")


def _messages(
    instance: dg.DagsterInstance, run_id: str,
    of_type: dg.DagsterEventType = dg.DagsterEventType.ENGINE_EVENT,
) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=of_type).records
    entries = [r.event_log_entry for r in records]
    return [(e.dagster_event.message if e.dagster_event else None) or e.user_message for e in entries]


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for message in _messages(instance, run_id):
        if match := _WORKER_PID.search(message):
            return int(match.group(1))
    return None


def _step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    starts = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return any(r.event_log_entry.step_key == STEP for r in starts)


def _claimed(instance: dg.DagsterInstance) -> dict[str, int]:
    storage = instance.event_log_storage
    return {pool: len(storage.get_concurrency_info(pool).claimed_slots) for pool in POOLS}


def _launch_daily_run(instance: dg.DagsterInstance, workspace) -> dg.DagsterRun:
    location = workspace.get_code_location("foxreviews")
    (repository,) = location.get_repositories().values()
    job = repository.get_full_job(DAILY_JOB)
    run = _create_run(
        instance=instance,
        code_location=location,
        remote_repo=repository,
        remote_job=job,
        run_config={},
        tags={PARTITION_NAME_TAG: DAY},
        op_selection=None,
        run_id=None,
    )
    return instance.launch_run(run.run_id, workspace)


@pytest.mark.slow
def test_sigterm_to_a_launched_run_worker_cancels_the_run_frees_its_pools_and_is_not_retried(
    instance, monkeypatch, tmp_path
):
    # A dead INSEE: the step would retry for many minutes within its budget.
    monkeypatch.setenv("FOXREVIEWS_SIRENE_SOURCE", "api")
    monkeypatch.setenv("FOXREVIEWS_INSEE_API_KEY", "test-key")
    monkeypatch.setenv(
        "FOXREVIEWS_INSEE_BASE_URL", f"http://127.0.0.1:{_closed_port()}/api-sirene/3.11"
    )
    instance.event_log_storage.set_concurrency_slots("insee_api", 1)
    # The code server starts in the current folder, and Dagster reads a `.env` there: in the
    # project folder, a developer's would point it at another instance.
    monkeypatch.chdir(tmp_path)
    target = ModuleTarget(
        module_name="foxreviews_pipeline.definitions",
        attribute=None,
        working_directory=str(tmp_path),
        location_name="foxreviews",
    )
    with WorkspaceProcessContext(instance, target) as context:
        workspace = context.create_request_context()
        run = _launch_daily_run(instance, workspace)
        run_id = run.run_id
        _wait(lambda: _step_started(instance, run_id), within_s=240, what=f"{STEP} started")
        _wait(lambda: _claimed(instance)["insee_api"] == 1, within_s=30, what="insee_api claimed")
        pid = _wait(lambda: _worker_pid(instance, run_id), within_s=30, what="worker pid")
        worker = psutil.Process(pid)
        steps = worker.children(recursive=True)
        time.sleep(1)  # inside INSEE's retries

        sent = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        ended = _wait(
            lambda: (r := instance.get_run_by_id(run_id)) is not None and r.is_finished and r,
            within_s=30,
            what="the run ended after SIGTERM",
        )
        took = time.monotonic() - sent
        assert took < 30
        # CANCELED, by the stop (a FAILURE for an "unexpected termination" would be retried).
        assert ended.status == dg.DagsterRunStatus.CANCELED, ended.status
        canceling = _messages(instance, run_id, dg.DagsterEventType.RUN_CANCELING)
        assert any(STOPPED_MESSAGE in message for message in canceling), canceling
        # The worker and the step's process are gone too.
        _, alive = psutil.wait_procs([worker, *steps], timeout=30)
        assert alive == []

        # Pool slots are free (none left to the run monitoring's one-minute backstop).
        assert _claimed(instance) == dict.fromkeys(POOLS, 0)
        # Not retried: Dagster's retry daemon decides from the run as recorded.
        ended = instance.get_run_by_id(run_id)
        assert ended is not None
        assert not should_retry(ended, instance), dict(ended.tags)
        assert ended.tags.get(WILL_RETRY_TAG) in (None, "false")
        assert [r.run_id for r in instance.get_runs() if r.parent_run_id == run_id] == []

    # The next run of the day (INSEE answering again: the sample source) is clean: nothing
    # for run-day's sweep to mark or free, and it succeeds.
    env = subprocess_env(FOXREVIEWS_SIRENE_SOURCE="sample")
    for name in ("FOXREVIEWS_INSEE_API_KEY", "FOXREVIEWS_INSEE_BASE_URL"):
        env.pop(name, None)
    done = run_foxreviews("run-day", "--date", DAY, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Day {DAY}: done in" in done.stdout
    assert "left unfinished" not in done.stderr
    assert "freed the pool slots" not in done.stderr
