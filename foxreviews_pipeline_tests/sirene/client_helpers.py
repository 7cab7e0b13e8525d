"""Whole-day reads over the INSEE client, for tests that compare what came in."""

from __future__ import annotations

from datetime import date
from typing import Any

from foxreviews_pipeline.lib.sirene.client import InseeClient


def fetch_day(client: InseeClient, day: date, **kwargs: Any) -> list[dict[str, Any]]:
    """All the records of `day` (`iter_day`'s pages, keyword arguments passed on), as sent:
    not deduplicated."""
    return [record for page in client.iter_day(day, **kwargs) for record in page]
