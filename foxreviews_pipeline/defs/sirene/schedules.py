"""The daily SIRENE import, on Paris wall-clock time."""

from datetime import datetime, timedelta

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.sirene.jobs import sirene_daily_job
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions
from foxreviews_pipeline.lib.constants import PARIS, PARIS_TIMEZONE


def previous_paris_day(when: datetime) -> str:
    """The partition key of the Paris day before the Paris day `when` falls on."""
    return (when.astimezone(PARIS).date() - timedelta(days=1)).isoformat()


@dg.schedule(
    name="sirene_daily_schedule",
    job=sirene_daily_job,
    cron_schedule="0 8 * * *",
    execution_timezone=PARIS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    owners=OWNERS,
    description="Every day at 08:00 Europe/Paris: import yesterday's SIRENE changes "
    "(partition = the previous Paris day; running by default).",
)
def sirene_daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """Imports the previous Paris day at 08:00 Paris time; a day INSEE has not published yet
    is waited for, never landed half-done. One run per day (the run key is the partition).
    """
    when = context.scheduled_execution_time
    partition_key = previous_paris_day(when)
    if partition_key < daily_partitions.start.date().isoformat():
        return dg.SkipReason(f"{partition_key} is before the first SIRENE partition")
    return dg.RunRequest(
        run_key=partition_key,
        partition_key=partition_key,
        tags={"foxreviews/trigger": "daily"},
    )
