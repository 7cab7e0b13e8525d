import dagster as dg

from foxreviews_pipeline.defs.maintenance.cleanup import Retention, cleanup_job, cleanup_schedule
from foxreviews_pipeline.defs.resources import configured
from foxreviews_pipeline.lib.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        jobs=[cleanup_job],
        schedules=[cleanup_schedule],
        resources={
            "retention": Retention(
                raw_days=configured(
                    settings, "FOXREVIEWS_RAW_RETENTION_DAYS", settings.raw_retention_days
                ),
                change_days=configured(
                    settings, "FOXREVIEWS_CHANGE_RETENTION_DAYS", settings.change_retention_days
                ),
            )
        },
    )
