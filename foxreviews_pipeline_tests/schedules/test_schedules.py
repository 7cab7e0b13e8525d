"""Schedules on Paris wall-clock time, across both daylight-saving changes of 2026
(Sunday 29 March: 02:00 → 03:00; Sunday 25 October: 03:00 → 02:00). (`ville_stats` at 02:00
is an automation condition: directory/test_ville_stats.py.)"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

# The daemon's own tick calculation, so the tests see the times the scheduler will use.
from dagster._core.definitions.partitions.partitioned_schedule import (
    UnresolvedPartitionedAssetScheduleDefinition,
)
from dagster._utils.schedules import schedule_execution_time_iterator

from foxreviews_pipeline.defs.maintenance.cleanup import cleanup_schedule
from foxreviews_pipeline.defs.reference.definitions import naf2025_mapping_nightly_schedule
from foxreviews_pipeline.defs.sirene.jobs import sirene_daily_job
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions_def
from foxreviews_pipeline.defs.sirene.schedules import sirene_daily_schedule as unresolved_daily

PARIS = ZoneInfo("Europe/Paris")
# The days of 2026 tested come before the default first partition.
daily_partitions = daily_partitions_def(date(2026, 1, 1))
SPRING_FORWARD = date(2026, 3, 29)
FALL_BACK = date(2026, 10, 25)


def paris(y, m, d, hh=0, mm=0, fold=0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=PARIS, fold=fold)


def ticks(schedule: dg.ScheduleDefinition, start: datetime, end: datetime) -> list[datetime]:
    found = []
    for tick in schedule_execution_time_iterator(
        start.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    ):
        if tick >= end:
            return found
        found.append(tick)
    return found


def _stub(key: str) -> dg.AssetsDefinition:
    @dg.asset(name=key, partitions_def=daily_partitions)
    def _asset() -> None: ...

    return _asset


# The SIRENE chain's keys and partitioning, so that partition keys are resolved and checked
# against the job exactly as the daemon does.
SIRENE_REPOSITORY = dg.Definitions(
    assets=[_stub(key) for key in ("etablissements_raw", "entreprises", "pro_localisations")],
    jobs=[sirene_daily_job],
    schedules=[unresolved_daily],
).get_repository_def()
# Built from the job, the schedule takes its cadence from the job's partitions once the
# job's assets are known: as the code location resolves it.
sirene_daily_schedule = SIRENE_REPOSITORY.get_schedule_def("sirene_daily_schedule")


def evaluate(schedule: dg.ScheduleDefinition, when: datetime) -> list[dg.RunRequest]:
    repository = SIRENE_REPOSITORY if schedule is sirene_daily_schedule else None
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=repository)
    data = schedule.evaluate_tick(context)
    assert data.skip_message is None, data.skip_message
    return list(data.run_requests or [])


# Two weeks around each change, so that the days before, of and after are covered.
WINDOWS = [
    (paris(2026, 3, 22), paris(2026, 4, 5)),
    (paris(2026, 10, 18), paris(2026, 11, 1)),
]


RUNNING, STOPPED = dg.DefaultScheduleStatus.RUNNING, dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(
    "schedule, cron, job_name, status",
    [
        # The fixed-time alternative to the publication sensor, the default trigger.
        (sirene_daily_schedule, "0 8 * * *", "sirene_daily", STOPPED),
        (cleanup_schedule, "0 3 * * 0", "cleanup", RUNNING),
        (naf2025_mapping_nightly_schedule, "30 1 * * *", "naf2025_mapping", RUNNING),
    ],
    ids=["sirene_daily", "cleanup_weekly", "naf2025_mapping_nightly"],
)
def test_cron_timezone_and_default_status(schedule, cron, job_name, status):
    assert schedule.cron_schedule == cron
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.job_name == job_name
    assert schedule.default_status == status
    assert schedule.description


# --- SIRENE daily import: 08:00 Paris, the previous Paris day -------------------------------


def test_sirene_daily_is_dagsters_schedule_of_the_partitioned_job():
    assert isinstance(unresolved_daily, UnresolvedPartitionedAssetScheduleDefinition)
    assert (unresolved_daily.job, unresolved_daily.hour_of_day) == (sirene_daily_job, 8)
    # Its timezone is the partitions' own.
    assert sirene_daily_schedule.execution_timezone == daily_partitions.timezone


@pytest.mark.parametrize(
    "when, partition, hours",
    [
        (paris(2026, 3, 28, 8), "2026-03-27", 24),
        (paris(2026, 3, 29, 8), "2026-03-28", 24),  # the morning of the change
        (paris(2026, 3, 30, 8), "2026-03-29", 23),  # the short day
        (paris(2026, 10, 25, 8), "2026-10-24", 24),
        (paris(2026, 10, 26, 8), "2026-10-25", 25),  # the long day
        # The same instants given in UTC: the Paris calendar decides, not UTC's.
        (datetime(2026, 3, 30, 6, 0, tzinfo=UTC), "2026-03-29", 23),
        (datetime(2026, 10, 26, 7, 0, tzinfo=UTC), "2026-10-25", 25),
    ],
)
def test_sirene_daily_requests_the_previous_paris_day_once(when, partition, hours):
    [request] = evaluate(sirene_daily_schedule, when)
    assert request.partition_key == partition
    assert request.run_key == partition
    assert request.tags["foxreviews/trigger"] == "daily"
    window = daily_partitions.time_window_for_partition_key(partition)
    # The partition is the whole Paris day that ended at midnight before the tick.
    assert window.end == when.astimezone(PARIS).replace(hour=0, minute=0)
    # Aware datetimes in one zone subtract as wall-clock times; timestamps give real hours.
    assert window.end.timestamp() - window.start.timestamp() == hours * 3600
    assert (window.start.astimezone(PARIS).hour, window.end.astimezone(PARIS).hour) == (0, 0)


@pytest.mark.parametrize("start, end", WINDOWS, ids=["march", "october"])
def test_sirene_daily_ticks_at_0800_paris_and_requests_each_day_once(start, end):
    found = ticks(sirene_daily_schedule, start, end)
    assert len(found) == 14
    assert all((t.astimezone(PARIS).hour, t.astimezone(PARIS).minute) == (8, 0) for t in found)
    keys = [request.partition_key for t in found for request in evaluate(sirene_daily_schedule, t)]
    expected_days = [start.date() + timedelta(days=i - 1) for i in range(14)]
    assert keys == [d.isoformat() for d in expected_days]
    run_keys = [r.run_key for t in found for r in evaluate(sirene_daily_schedule, t)]
    assert len(set(run_keys)) == len(run_keys)


def test_sirene_daily_skips_before_the_first_partition():
    context = dg.build_schedule_context(
        scheduled_execution_time=paris(2024, 1, 1, 8), repository_def=SIRENE_REPOSITORY
    )
    data = sirene_daily_schedule.evaluate_tick(context)
    assert not data.run_requests
    assert "no partitions" in data.skip_message


# --- cleanup: Sunday 03:00 Paris ---------------------------------------------------------


@pytest.mark.parametrize("start, end", WINDOWS, ids=["march", "october"])
def test_cleanup_runs_sundays_at_0300_paris(start, end):
    found = ticks(cleanup_schedule, start, end)
    local = [t.astimezone(PARIS) for t in found]
    assert [t.weekday() for t in local] == [6, 6]
    assert all((t.hour, t.minute) == (3, 0) for t in local)
    assert {SPRING_FORWARD, FALL_BACK} & {t.date() for t in local}
    for tick in found:
        [request] = evaluate(cleanup_schedule, tick)
        assert request.run_config["ops"] == {"cleanup_files_and_logs": {"config": {"dry_run": False}}}
        assert request.run_key == f"cleanup:{tick.astimezone(PARIS).date().isoformat()}"
