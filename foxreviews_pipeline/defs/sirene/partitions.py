"""The one definition of SIRENE's daily partitions.

A partition is a Paris-time day of `dateDernierTraitementEtablissement`: INSEE publishes
the day's changes the next morning, so the schedule materializes yesterday's partition.
"""

import dagster as dg

PARIS = "Europe/Paris"

daily_partitions = dg.DailyPartitionsDefinition(
    start_date="2024-01-01",
    timezone=PARIS,
    fmt="%Y-%m-%d",
)
