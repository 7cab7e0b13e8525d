"""Where a day of SIRENE records comes from: INSEE's API, the synthetic sample, or a stock file.

The sample is served by a local HTTP server speaking INSEE's API and read by the same
client as the real API, so the demo and the tests exercise the real paging, pacing and
retry code. Every source ends in the landing zone: `land_*` functions write the day's
partition (one record per SIRET, the latest version) and say what they landed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from foxreviews_pipeline.lib.sirene.client import InseeClient, Publication, make_limiter
from foxreviews_pipeline.lib.sirene.landing import PartitionWriter, write_partition

PARIS = ZoneInfo("Europe/Paris")
SAMPLE_API_KEY = "sample-key"
# The sample server has no quota: pace high enough to not slow the demo, through the
# same limiter code as the real API.
SAMPLE_REQUESTS_PER_MINUTE = 60_000


@dataclass
class FetchedDay:
    """A day read into memory (the stock source), before it is landed with `land_fetched_day`."""

    records: list[dict]
    received: int
    published: bool = True
    stats: dict = field(default_factory=dict)


@dataclass
class LandedDay:
    """What landing a day did.

    `published` is false when INSEE has not completed the day yet: nothing was read or
    landed, and `publication` says which `/informations` fields are awaited.
    """

    published: bool
    path: Path | None = None
    rows: int = 0  # distinct SIRETs landed
    received: int = 0  # records the source sent, duplicates included
    total: int | None = None  # INSEE's header.total (None for the stock source)
    stats: dict = field(default_factory=dict)
    publication: Publication | None = None


def land_day_with_client(
    client: InseeClient, day: date, folder: Path, meta: dict | None = None
) -> LandedDay:
    """Land `day` from INSEE once it is complete there (else `published=False`, nothing read).

    Pages go to the landing zone as they arrive; the partition appears only when the read is
    whole (as many records as INSEE announced), so a failed read leaves the previous one.
    """
    started = time.perf_counter()
    publication = client.publication(day)
    if not publication.complete:
        return LandedDay(False, stats=client.stats.as_dict(), publication=publication)
    with PartitionWriter(folder, day) as writer:
        for page in client.iter_day(day):
            writer.add(page)
        stats = client.stats.as_dict()
        stats["duration_s"] = round(time.perf_counter() - started, 3)
        path = writer.commit(
            {**(meta or {}), "fetched": stats, "received": writer.received,
             "total": client.stats.total}
        )
        return LandedDay(
            True, path, writer.rows, writer.received, client.stats.total, stats, publication
        )


def land_api_day(
    day: date,
    folder: Path,
    *,
    base_url: str,
    api_key: str,
    requests_per_minute: int,
    quota_state: Path | None,
    meta: dict | None = None,
) -> LandedDay:
    limiter = make_limiter(requests_per_minute, state_path=quota_state)
    with InseeClient(base_url, api_key, requests_per_minute, limiter=limiter) as client:
        return land_day_with_client(client, day, folder, meta)


def land_fetched_day(
    fetched: FetchedDay, day: date, folder: Path, meta: dict | None = None
) -> LandedDay:
    """Land a day already in memory (one record per SIRET), as it is."""
    path = write_partition(
        folder, day, fetched.records,
        {**(meta or {}), "fetched": fetched.stats, "received": fetched.received},
    )
    return LandedDay(True, path, len(fetched.records), fetched.received, None, fetched.stats)


@functools.lru_cache(maxsize=1)
def _sample_inputs() -> tuple[list[tuple[str, str, str]], list[str]]:
    from foxreviews_pipeline.lib.reference.sample_inputs import sample_communes, sample_naf_codes

    return sample_communes(), sample_naf_codes()


def sample_day_source(size: int) -> Callable[[date], list[dict]]:
    from foxreviews_pipeline.lib.sirene.sample import generate_day

    communes, naf_codes = _sample_inputs()
    return lambda day: generate_day(day, communes, naf_codes, n=size)


def sample_processed_at(day: date) -> datetime:
    """When the sample INSEE last processed data: this morning, or the morning after `day`
    if that is later, so that the requested day is always complete."""
    processed = datetime.now(PARIS).replace(hour=6, minute=30, second=0, microsecond=0, tzinfo=None)
    if processed.date() <= day:
        processed = datetime.combine(day + timedelta(days=1), datetime.min.time()).replace(hour=6, minute=30)
    return processed


def land_sample_day(
    day: date, folder: Path, *, size: int = 35_000, meta: dict | None = None
) -> LandedDay:
    from foxreviews_pipeline.lib.sirene.fake_server import FakeInseeServer

    with FakeInseeServer(
        day_source=sample_day_source(size), api_key=SAMPLE_API_KEY,
        last_processed_at=sample_processed_at(day),
    ) as server:
        limiter = make_limiter(SAMPLE_REQUESTS_PER_MINUTE)
        with InseeClient(server.base_url, SAMPLE_API_KEY, SAMPLE_REQUESTS_PER_MINUTE, limiter=limiter) as client:
            return land_day_with_client(client, day, folder, meta)
