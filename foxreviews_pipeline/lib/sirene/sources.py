"""Where a day of SIRENE records comes from: INSEE's API or a stock file.

Every source ends in the landing zone: `land_*` functions write the day's partition (one
record per SIRET, the latest version) and say what they landed. The synthetic sample
(`foxreviews_pipeline.sample.source`) is INSEE's API served locally, landed by
`land_day_with_client` like the real one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from foxreviews_pipeline.lib.sirene.client import (
    DEFAULT_RETRY_BUDGET_S,
    InseeClient,
    Publication,
    make_limiter,
)
from foxreviews_pipeline.lib.sirene.landing import PartitionWriter, write_partition


@dataclass
class FetchedDay:
    """A day read into memory (the stock source), before it is landed with `land_fetched_day`."""

    records: list[dict[str, Any]]
    received: int
    published: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


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
    stats: dict[str, Any] = field(default_factory=dict)
    publication: Publication | None = None


def land_day_with_client(
    client: InseeClient, day: date, folder: Path, meta: dict[str, Any] | None = None
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
    meta: dict[str, Any] | None = None,
    retry_budget_s: float = DEFAULT_RETRY_BUDGET_S,
) -> LandedDay:
    limiter = make_limiter(requests_per_minute, state_path=quota_state)
    with InseeClient(
        base_url, api_key, requests_per_minute, limiter=limiter, retry_budget_s=retry_budget_s
    ) as client:
        return land_day_with_client(client, day, folder, meta)


def land_fetched_day(
    fetched: FetchedDay, day: date, folder: Path, meta: dict[str, Any] | None = None
) -> LandedDay:
    """Land a day already in memory (one record per SIRET), as it is."""
    path = write_partition(
        folder, day, fetched.records,
        {**(meta or {}), "fetched": fetched.stats, "received": fetched.received},
    )
    return LandedDay(True, path, len(fetched.records), fetched.received, None, fetched.stats)
