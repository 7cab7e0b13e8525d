"""The daily SIRENE import at a fixed time: the alternative to the publication sensor."""

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.sirene.jobs import sirene_daily_job

# Dagster's schedule of a daily-partitioned job: at 08:00 on the partitions' timezone (Paris)
# it requests the last complete partition, the previous Paris day, with the partition key as
# run key. Created STOPPED: `sirene_publication_sensor` (sensors.py) is the default trigger
# and requests the same day, with the same run key, once INSEE has published it. Turn this
# one on instead where the source says nothing of its publication (no `/informations`).
# Not both: run keys are deduplicated per schedule or sensor, so this one would import again
# a day the sensor has imported; and a day not published at 08:00 fails, not tried again.
sirene_daily_schedule = dg.build_schedule_from_partitioned_job(
    sirene_daily_job,
    name="sirene_daily_schedule",
    hour_of_day=8,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={"foxreviews/trigger": "daily"},
    owners=OWNERS,
    description="Every day at 08:00 Europe/Paris: import the previous Paris day (partition and "
    "run key = that day). Stopped by default: sirene_publication_sensor is the default "
    "trigger; this is the fixed-time alternative.",
)
