"""The daily SIRENE import, requested once INSEE has published the day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.sirene.jobs import SIRENE_DAILY_ASSETS, sirene_daily_job
from foxreviews_pipeline.defs.sirene.readiness import is_published, publications
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.constants import PARIS

# INSEE publishes a day around 06:00–08:00 Paris time the next morning: asked every quarter
# of an hour, a day starts within 15 minutes of its publication (one `/informations` call).
CHECK_EVERY_S = 15 * 60
# The previous Paris day and the two before it: a day missed while the daemon was down, or
# published late, is still requested; older gaps are a backfill's.
CATCH_UP_DAYS = 3
# A run that has not ended yet (a canceled or failed one has).
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def first_day(context: dg.SensorEvaluationContext) -> date:
    """The first partition of the daily job, as the code location defines it
    (FOXREVIEWS_PARTITIONS_START)."""
    assert context.repository_def is not None, "the sensor is evaluated within its definitions"
    partitions = context.repository_def.get_job(sirene_daily_job.name).partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition), partitions
    return partitions.start.date()


def days_to_consider(today: date, first: date) -> list[date]:
    """The days the sensor looks at on Paris day `today`, oldest first: the previous day and
    the catch-up window, from the first partition (`first`) on."""
    last = today - timedelta(days=1)
    window = (last - timedelta(days=n) for n in reversed(range(CATCH_UP_DAYS)))
    return [day for day in window if day >= first]


def is_imported(instance: dg.DagsterInstance, day: date) -> bool:
    """Whether every asset of the daily job has a materialization of `day`."""
    return all(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[day.isoformat()]),
            limit=1,
        ).records
        for key in SIRENE_DAILY_ASSETS
    )


def run_in_flight(instance: dg.DagsterInstance, day: date) -> dg.DagsterRun | None:
    """A queued or running run of `day`'s partition (launched by this sensor, the schedule,
    `run-day`, a backfill or the UI), if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": day.isoformat()}, statuses=IN_FLIGHT_STATUSES),
        limit=1,
    )
    return runs[0] if runs else None


def evaluate_days(
    instance: dg.DagsterInstance, sirene: SireneSource, days: Sequence[date]
) -> tuple[list[date], list[str]]:
    """The days to request now, and a note on each day left waiting."""
    notes: list[str] = []
    pending: list[date] = []
    for day in days:
        if is_imported(instance, day):
            continue
        run = run_in_flight(instance, day)
        if run is not None:
            notes.append(f"{day} is being imported (run {run.run_id}, {run.status.value.lower()})")
            continue
        pending.append(day)
    ready: list[date] = []
    for day, publication in publications(sirene, pending, quick=True).items():
        if is_published(publication):
            ready.append(day)
        else:
            assert publication is not None
            notes.append(f"waiting for INSEE to publish {day}: {publication.describe()}")
    return ready, notes


@dg.sensor(
    name="sirene_publication_sensor",
    job=sirene_daily_job,
    minimum_interval_seconds=CHECK_EVERY_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    owners=OWNERS,
    description="Every 15 minutes: once INSEE has published the previous Paris day (or one of "
    "the two before it, not imported yet), start its sirene_daily run (partition and run key "
    "= the day; running by default).",
)
def sirene_publication_sensor(
    context: dg.SensorEvaluationContext, sirene: SireneSource
) -> dg.SensorResult:
    """Asks the configured source (`/informations` for INSEE's API; the sample and a stock
    file have every day) whether the previous Paris day, and each day of the catch-up window
    that is neither imported nor being imported, is published, and requests the published
    ones. The run key is the day: a day is requested once, whatever the number of ticks."""
    first = first_day(context)
    days = days_to_consider(datetime.now(PARIS).date(), first)
    if not days:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"no SIRENE day to import yet: the first partition is {first} "
                "(FOXREVIEWS_PARTITIONS_START)"
            )
        )
    ready, notes = evaluate_days(context.instance, sirene, days)
    if not ready:
        reason = "; ".join(notes) or f"every day from {days[0]} to {days[-1]} is imported"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason))
    for note in notes:
        context.log.info(note)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=day.isoformat(),
                partition_key=day.isoformat(),
                tags={"foxreviews/trigger": "publication"},
            )
            for day in ready
        ]
    )
