"""The one definition of SIRENE's daily partitions.

A partition is a Paris-time day of `dateDernierTraitementEtablissement`: INSEE publishes
the day's changes the next morning, so the schedule materializes yesterday's partition.
The first partition is FOXREVIEWS_PARTITIONS_START (default: the platform's first day in
production, see `lib/settings.py`); earlier history comes from the stock backfill job.

Nothing here reads the environment: the assets are declared with `daily_partitions` (the
default first day), and the code location gives them the configured first day when it
loads (`with_daily_partitions`, in the domains' `build_definitions`). The schedule and the
sensor take their partitions from the job, so from the assets.
"""

from datetime import date, timedelta

import dagster as dg

from foxreviews_pipeline.lib.constants import PARIS_TIMEZONE
from foxreviews_pipeline.lib.settings import DEFAULT_PARTITIONS_START
from foxreviews_pipeline.lib.sirene.stock_staging import STOCK_PARTITION_KEYS


def daily_partitions_def(start: date) -> dg.DailyPartitionsDefinition:
    """SIRENE's daily partitions, from `start` (FOXREVIEWS_PARTITIONS_START) on."""
    return dg.DailyPartitionsDefinition(
        start_date=start.isoformat(), timezone=PARIS_TIMEZONE, fmt="%Y-%m-%d"
    )


# What the daily assets are declared with; the code location replaces it (see above).
daily_partitions = daily_partitions_def(DEFAULT_PARTITIONS_START)


def with_daily_partitions(assets_def: dg.AssetsDefinition, start: date) -> dg.AssetsDefinition:
    """`assets_def`, declared with `daily_partitions`, partitioned from `start` on instead."""
    partitions = daily_partitions_def(start)
    return assets_def.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=partitions))


# A daily import that has not succeeded for this long is stale: INSEE publishes each morning,
# and a day and a half leaves a late INSEE a day's grace before the UI turns red.
STALE_AFTER = timedelta(hours=36)
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=STALE_AFTER, warn_window=timedelta(hours=30)
)

# The stock's partitions: one per département (and `autres`), the values of the SQL
# function `sirene_departement`. The largest (Paris) holds a few percent of the country.
stock_partitions = dg.StaticPartitionsDefinition(list(STOCK_PARTITION_KEYS))
