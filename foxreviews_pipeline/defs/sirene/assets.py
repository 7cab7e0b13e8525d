"""SIRENE extracts landed as-is, one file per Paris day."""


import time
from datetime import date

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import LandingZone
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, daily_partitions
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.client import InseeApiError
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET


@dg.asset(
    partitions_def=daily_partitions,
    group_name="sirene",
    owners=OWNERS,
    kinds={"json"},
    pool="insee_api",
    code_version="1",
    freshness_policy=DAILY_FRESHNESS,
)
def etablissements_raw(
    context: dg.AssetExecutionContext, sirene: SireneSource, landing_zone: LandingZone
) -> dg.MaterializeResult:
    """The day's SIRENE establishment records, exactly as INSEE sent them, one record per
    SIRET (the latest version when a SIRET changed several times that day).

    The partition is a Paris-time day of `dateDernierTraitementEtablissement`, read only
    once INSEE reports the day complete, and only when INSEE sent every record it
    announced. The step does not wait for INSEE: `sirene_publication_sensor` requests the
    day once it is published, and a day launched before fails at once. The file is written
    atomically to the landing zone, so the directory assets can be re-run without calling
    INSEE again. Source: the INSEE API, the synthetic sample (the default) or a
    StockEtablissement file, as configured.
    """
    day = date.fromisoformat(context.partition_key)
    folder = landing_zone.path(RAW_DATASET)
    started = time.perf_counter()
    # One retry policy (README, "Retries"): the client retries transient failures within the
    # day's budget; what comes out of it is final, and the step is not retried.
    try:
        landed = sirene.land_day(day, folder)
    except InseeApiError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    except OSError as exc:
        # The landing zone cannot be written (ENOSPC, permissions): no retry can fix it.
        raise dg.Failure(
            f"the landing zone {folder} cannot be written: {exc.strerror or exc}", allow_retries=False
        ) from None

    if not landed.published:
        what = landed.publication.describe() if landed.publication else "day not complete"
        raise dg.Failure(
            f"INSEE has not published {day} yet, nothing was landed ({what}); "
            "sirene_publication_sensor requests the day once it is published",
            allow_retries=False,
        )

    stats = landed.stats
    duration = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(landed.rows),
            "received": dg.MetadataValue.int(landed.received),
            "source": dg.MetadataValue.text(sirene.source),
            "api_calls": dg.MetadataValue.int(stats.get("api_calls", 0)),
            "retries": dg.MetadataValue.int(stats.get("retries", 0)),
            "http_429": dg.MetadataValue.int(stats.get("http_429", 0)),
            "duration_s": dg.MetadataValue.float(duration),
            "path": dg.MetadataValue.path(str(landed.path)),
        }
    )
