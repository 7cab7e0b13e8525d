import dagster as dg

from foxreviews_pipeline.defs.directory.assets import build_directory_day
from foxreviews_pipeline.defs.directory.stock_backfill import (
    directory_stock,
    sirene_stock_backfill_job,
    sirene_stock_bulk_load_job,
    stock_bulk_load,
)
from foxreviews_pipeline.defs.directory.ville_stats import (
    ville_stats,
    ville_stats_automation_sensor,
    ville_stats_refresh_job,
)
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions_def
from foxreviews_pipeline.lib.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            build_directory_day(daily_partitions_def(settings.partitions_start)),
            directory_stock,
            stock_bulk_load,
            ville_stats,
        ],
        jobs=[ville_stats_refresh_job, sirene_stock_backfill_job, sirene_stock_bulk_load_job],
        sensors=[ville_stats_automation_sensor],
    )
