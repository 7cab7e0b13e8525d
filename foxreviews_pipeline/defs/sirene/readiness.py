"""Whether the configured SIRENE source has published a day yet: what the publication sensor
and `foxreviews run-day` wait for before a day's run.

INSEE's API says it in `/informations` (`Publication.complete`, the rule the landing step
applies too); the sample and a stock file hold every day at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.client import (
    InseeApiError,
    InseeClient,
    Publication,
    make_limiter,
)

# A sensor's evaluation has a minute (the code server's timeout): its question to INSEE gets
# a few short attempts, and the next tick asks again.
QUICK_RETRY_BUDGET_S = 20.0
QUICK_DEADLINE_S = 15.0
QUICK_TIMEOUT = (5.0, 15.0)
QUICK_ATTEMPTS = 3


class PublicationUnknown(RuntimeError):
    """The source could not say whether a day is published (one line, no secret)."""


def publications(
    sirene: SireneSource, days: Sequence[date], *, quick: bool = False
) -> dict[date, Publication | None]:
    """What the source says of each of `days`: INSEE's `Publication` for the `api` source
    (one `/informations` call for all of them), None for a source that has every day (the
    sample, a stock file). `quick` bounds the call for a sensor's evaluation."""
    if sirene.source != "api" or not days:
        return dict.fromkeys(days)
    if not sirene.insee_api_key:
        raise PublicationUnknown("FOXREVIEWS_INSEE_API_KEY is not set: the api source needs it")
    limiter = make_limiter(
        sirene.insee_requests_per_minute,
        state_path=Path(sirene.quota_state_path) if sirene.quota_state_path else None,
    )
    bounds: dict[str, Any] = (
        {
            "retry_budget_s": min(QUICK_RETRY_BUDGET_S, sirene.insee_retry_budget_s),
            "deadline_s": QUICK_DEADLINE_S,
            "timeout": QUICK_TIMEOUT,
            "max_attempts": QUICK_ATTEMPTS,
        }
        if quick
        else {"retry_budget_s": sirene.insee_retry_budget_s}
    )
    try:
        with InseeClient(
            sirene.insee_base_url,
            sirene.insee_api_key,
            sirene.insee_requests_per_minute,
            limiter=limiter,
            **bounds,
        ) as client:
            informations = client.informations()
            return {day: client.publication(day, informations) for day in days}
    except InseeApiError as exc:
        raise PublicationUnknown(f"cannot tell whether INSEE has published: {exc}") from None


def is_published(publication: Publication | None) -> bool:
    return publication is None or publication.complete
