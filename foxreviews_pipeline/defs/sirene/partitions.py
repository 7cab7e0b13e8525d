"""The one definition of SIRENE's daily partitions.

A partition is a Paris-time day of `dateDernierTraitementEtablissement`: INSEE publishes
the day's changes the next morning, so the schedule materializes yesterday's partition.
The first partition is FOXREVIEWS_PARTITIONS_START (default: the platform's first day in
production, see `lib/settings.py`); earlier history comes from the stock backfill job.
"""

from datetime import timedelta

import dagster as dg

from foxreviews_pipeline.lib.constants import PARIS_TIMEZONE
from foxreviews_pipeline.lib.settings import load_partitions_start

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_partitions_start().isoformat(),
    timezone=PARIS_TIMEZONE,
    fmt="%Y-%m-%d",
)

# A daily import that has not succeeded for this long is stale: INSEE publishes each morning,
# and a day and a half leaves a late INSEE a day's grace before the UI turns red.
STALE_AFTER = timedelta(hours=36)
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=STALE_AFTER, warn_window=timedelta(hours=30)
)
