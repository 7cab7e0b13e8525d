"""Whole-day reads over the INSEE client, for tests that compare what came in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from foxreviews_pipeline.lib.sirene.client import InseeClient


def fetch_day(client: InseeClient, day: date, **kwargs: Any) -> list[dict[str, Any]]:
    """All the records of `day` (`iter_day`'s pages, keyword arguments passed on), as sent:
    not deduplicated."""
    return [record for page in client.iter_day(day, **kwargs) for record in page]


def latest_per_siret(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per SIRET: the one with the greatest `dateDernierTraitementEtablissement`
    (ISO strings compare chronologically; on a tie, the last one seen wins). Keeps the order
    in which SIRETs first appeared."""
    best: dict[str | None, dict[str, Any]] = {}
    for record in records:
        siret = record.get("siret")
        current = best.get(siret)
        if current is None or (record.get("dateDernierTraitementEtablissement") or "") >= (
            current.get("dateDernierTraitementEtablissement") or ""
        ):
            best[siret] = record
    return list(best.values())
