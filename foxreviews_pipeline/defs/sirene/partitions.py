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
from foxreviews_pipeline.lib.sirene.stock_staging import STOCK_PARTITION_KEYS

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

# The stock's partitions: one per département (and `autres`), the values of the SQL
# function `sirene_departement`. The largest (Paris) holds a few percent of the country.
stock_partitions = dg.StaticPartitionsDefinition(list(STOCK_PARTITION_KEYS))
