"""The `sample` source: a synthetic day served by the local INSEE server and read by the
real client, so that the demo exercises the real paging, pacing and retry code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.reference.naf2025 import NAF2025_SWITCH, correspondents
from foxreviews_pipeline.lib.sirene.client import InseeClient, make_limiter
from foxreviews_pipeline.lib.sirene.sources import LandedDay, land_day_with_client
from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.fake_server import FakeInseeServer
from foxreviews_pipeline.sample.reference import sample_communes, sample_naf_codes

SAMPLE_API_KEY = "sample-key"
# The sample server has no quota: pace high enough to not slow the demo, through the
# same limiter code as the real API.
SAMPLE_REQUESTS_PER_MINUTE = 60_000


@functools.lru_cache(maxsize=1)
def _sample_inputs() -> tuple[list[tuple[str, str, str]], list[str], dict[str, tuple[str, ...]]]:
    return sample_communes(), sample_naf_codes(), correspondents()


def sample_day_source(
    size: int, naf2025_from: date = NAF2025_SWITCH
) -> Callable[[date], list[dict[str, Any]]]:
    """Sample days: every rév. 2 record carries its NAF 2025 code (INSEE's correspondence);
    from `naf2025_from` on, the activity is stated in NAF 2025."""
    communes, naf_codes, naf25 = _sample_inputs()
    return lambda day: generate_day(
        day, communes, naf_codes, n=size, naf25=naf25, naf2025_from=naf2025_from
    )


def sample_processed_at(day: date) -> datetime:
    """When the sample INSEE last processed data: this morning, or the morning after `day`
    if that is later, so that the requested day is always complete."""
    processed = datetime.now(PARIS).replace(hour=6, minute=30, second=0, microsecond=0, tzinfo=None)
    if processed.date() <= day:
        processed = datetime.combine(day + timedelta(days=1), datetime.min.time()).replace(hour=6, minute=30)
    return processed


def land_sample_day(
    day: date,
    folder: Path,
    *,
    size: int = 35_000,
    meta: dict[str, Any] | None = None,
    naf2025_from: date = NAF2025_SWITCH,
) -> LandedDay:
    with FakeInseeServer(
        day_source=sample_day_source(size, naf2025_from), api_key=SAMPLE_API_KEY,
        last_processed_at=sample_processed_at(day),
    ) as server:
        limiter = make_limiter(SAMPLE_REQUESTS_PER_MINUTE)
        with InseeClient(server.base_url, SAMPLE_API_KEY, SAMPLE_REQUESTS_PER_MINUTE, limiter=limiter) as client:
            return land_day_with_client(client, day, folder, meta)
