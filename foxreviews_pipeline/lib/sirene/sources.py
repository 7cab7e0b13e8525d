"""Where a day of SIRENE records comes from: INSEE's API, the synthetic sample, or a stock file.

The sample is served by a local HTTP server speaking INSEE's API and read by the same
client as the real API, so the demo and the tests exercise the real paging, pacing and
retry code.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from foxreviews_pipeline.lib.sirene.client import InseeClient, latest_per_siret, make_limiter

PARIS = ZoneInfo("Europe/Paris")
SAMPLE_API_KEY = "sample-key"
# The sample server has no quota: pace high enough to not slow the demo, through the
# same limiter code as the real API.
SAMPLE_REQUESTS_PER_MINUTE = 60_000


@dataclass
class FetchedDay:
    records: list[dict]
    received: int
    published: bool = True
    stats: dict = field(default_factory=dict)


def fetch_day_with_client(client: InseeClient, day: date) -> FetchedDay:
    """The day's records once INSEE has published it (else `published=False`, nothing read)."""
    if not client.is_day_published(day):
        return FetchedDay([], 0, published=False, stats=client.stats.as_dict())
    started = time.perf_counter()
    received = client.fetch_day(day)
    stats = client.stats.as_dict()
    stats["duration_s"] = round(time.perf_counter() - started, 3)
    return FetchedDay(latest_per_siret(received), len(received), True, stats)


def fetch_api_day(
    day: date, *, base_url: str, api_key: str, requests_per_minute: int, quota_state: Path | None
) -> FetchedDay:
    limiter = make_limiter(requests_per_minute, state_path=quota_state)
    with InseeClient(base_url, api_key, requests_per_minute, limiter=limiter) as client:
        return fetch_day_with_client(client, day)


@functools.lru_cache(maxsize=1)
def _sample_inputs() -> tuple[list[tuple[str, str, str]], list[str]]:
    from foxreviews_pipeline.lib.reference.sample_inputs import sample_communes, sample_naf_codes

    return sample_communes(), sample_naf_codes()


def sample_day_source(size: int) -> Callable[[date], list[dict]]:
    from foxreviews_pipeline.lib.sirene.sample import generate_day

    communes, naf_codes = _sample_inputs()
    return lambda day: generate_day(day, communes, naf_codes, n=size)


def fetch_sample_day(day: date, *, size: int = 35_000) -> FetchedDay:
    from foxreviews_pipeline.lib.sirene.fake_server import FakeInseeServer

    # INSEE has processed everything up to this morning: yesterday and before are published.
    processed = datetime.now(PARIS).replace(hour=6, minute=30, second=0, microsecond=0, tzinfo=None)
    if processed.date() <= day:
        processed = datetime.combine(day + timedelta(days=1), datetime.min.time()).replace(hour=6, minute=30)
    with FakeInseeServer(
        day_source=sample_day_source(size), api_key=SAMPLE_API_KEY, last_processed_at=processed
    ) as server:
        limiter = make_limiter(SAMPLE_REQUESTS_PER_MINUTE)
        with InseeClient(server.base_url, SAMPLE_API_KEY, SAMPLE_REQUESTS_PER_MINUTE, limiter=limiter) as client:
            return fetch_day_with_client(client, day)
