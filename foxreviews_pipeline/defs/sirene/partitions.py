"""The one definition of SIRENE's daily partitions.

A partition is a Paris-time day of `dateDernierTraitementEtablissement`: INSEE publishes
the day's changes the next morning, so the schedule materializes yesterday's partition.
"""

from datetime import timedelta

import dagster as dg

PARIS = "Europe/Paris"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date="2024-01-01",
    timezone=PARIS,
    fmt="%Y-%m-%d",
)

# A daily import that has not succeeded for this long is stale: INSEE publishes each morning,
# and a day and a half leaves a late INSEE a day's grace before the UI turns red.
STALE_AFTER = timedelta(hours=36)
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=STALE_AFTER, warn_window=timedelta(hours=30)
)
