"""SIRENE extracts landed as-is, one file per Paris day."""


import time
from datetime import date

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import LandingZone
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, daily_partitions
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.landing import write_partition

RAW_DATASET = "etablissements"

# INSEE publishes a day around 06:00–08:00 Paris time the next morning; until then the
# asset waits (every 20 minutes, up to 8 hours) rather than land a partial day.
NOT_PUBLISHED_WAIT_S = 20 * 60
NOT_PUBLISHED_MAX_WAITS = 24


@dg.asset(
    partitions_def=daily_partitions,
    group_name="sirene",
    owners=OWNERS,
    kinds={"json"},
    pool="insee_api",
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    code_version="1",
    freshness_policy=DAILY_FRESHNESS,
)
def etablissements_raw(
    context: dg.AssetExecutionContext, sirene: SireneSource, landing_zone: LandingZone
) -> dg.MaterializeResult:
    """The day's SIRENE establishment records, exactly as INSEE sent them, one record per
    SIRET (the latest version when a SIRET changed several times that day).

    The partition is a Paris-time day of `dateDernierTraitementEtablissement`. The file is
    written atomically to the landing zone, so the directory assets can be re-run without
    calling INSEE again. Source: the INSEE API, the synthetic sample (the default) or a
    StockEtablissement file, as configured.
    """
    day = date.fromisoformat(context.partition_key)
    started = time.perf_counter()
    fetched = sirene.fetch_day(day)
    if not fetched.published:
        raise dg.RetryRequested(max_retries=NOT_PUBLISHED_MAX_WAITS, seconds_to_wait=NOT_PUBLISHED_WAIT_S)
    path = write_partition(
        landing_zone.path(RAW_DATASET),
        day,
        fetched.records,
        {"source": sirene.source, "fetched": fetched.stats, "received": fetched.received},
    )
    stats = fetched.stats
    duration = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(len(fetched.records)),
            "received": dg.MetadataValue.int(fetched.received),
            "source": dg.MetadataValue.text(sirene.source),
            "api_calls": dg.MetadataValue.int(stats.get("api_calls", 0)),
            "retries": dg.MetadataValue.int(stats.get("retries", 0)),
            "http_429": dg.MetadataValue.int(stats.get("http_429", 0)),
            "duration_s": dg.MetadataValue.float(duration),
            "path": dg.MetadataValue.path(str(path)),
        }
    )
