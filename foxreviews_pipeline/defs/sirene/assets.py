"""SIRENE extracts landed as-is, one file per Paris day."""


import dataclasses
import time
from datetime import date, datetime, timedelta

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import LandingZone
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, daily_partitions
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.sirene.client import InseeApiError
from foxreviews_pipeline.lib.sirene.landing import (
    RAW_DATASET,
    clear_wait_state,
    load_wait_state,
    save_wait_state,
)

# INSEE publishes a day around 06:00–08:00 Paris time the next morning; until then the
# asset checks again every 20 minutes, for at most 8 hours, rather than land a partial day.
NOT_PUBLISHED_WAIT_S = 20 * 60
NOT_PUBLISHED_MAX_WAIT = timedelta(hours=8)


def _hours(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


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

    The partition is a Paris-time day of `dateDernierTraitementEtablissement`, read once
    INSEE reports the day complete (waiting up to 8 hours), and only when INSEE sent every
    record it announced. The file is written atomically to the landing zone, so the
    directory assets can be re-run without calling INSEE again. Source: the INSEE API, the
    synthetic sample (the default) or a StockEtablissement file, as configured.
    """
    day = date.fromisoformat(context.partition_key)
    folder = landing_zone.path(RAW_DATASET)
    started = time.perf_counter()
    state = load_wait_state(folder, day, context.run.run_id)
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
        now = datetime.now(PARIS)
        since = state.first_wait_at.astimezone(PARIS) if state.first_wait_at else now
        waited = now - since
        what = landed.publication.describe() if landed.publication else "day not complete"
        if waited >= NOT_PUBLISHED_MAX_WAIT:
            clear_wait_state(folder, day)
            raise dg.Failure(
                f"INSEE has still not completed {day} after waiting {_hours(waited)} since "
                f"{since:%Y-%m-%d %H:%M:%S %Z} (the bound is {_hours(NOT_PUBLISHED_MAX_WAIT)}): {what}",
                allow_retries=False,
            )
        state = dataclasses.replace(state, first_wait_at=since, waits=state.waits + 1)
        save_wait_state(folder, day, state)
        wait_s = min(NOT_PUBLISHED_WAIT_S, (NOT_PUBLISHED_MAX_WAIT - waited).total_seconds())
        context.log.info(
            f"Waiting for INSEE to complete {day}: {what}. Waiting since "
            f"{since:%Y-%m-%d %H:%M:%S %Z} ({_hours(waited)}, check {state.waits}); next check in "
            f"{wait_s / 60:.0f} min; gives up after {_hours(NOT_PUBLISHED_MAX_WAIT)}"
        )
        # The bound is the time above, so Dagster's own count never stops the wait first.
        raise dg.RetryRequested(max_retries=context.retry_number + 1, seconds_to_wait=wait_s)

    clear_wait_state(folder, day)
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
