"""The SIRENE source resource: INSEE's API, the synthetic sample, or a stock file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field

from foxreviews_pipeline.lib.settings import (
    DEFAULT_INSEE_BASE_URL,
    DEFAULT_INSEE_RETRY_BUDGET_S,
    DEFAULT_REQUESTS_PER_MINUTE,
    DEFAULT_SAMPLE_NAF2025_FROM,
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SOURCE,
)
from foxreviews_pipeline.lib.sirene import sources


class SireneSource(dg.ConfigurableResource):
    """Reads a day of SIRENE establishment records from the configured source."""

    # The defaults are the settings' own (lib/settings.py): declared once.
    source: str = DEFAULT_SOURCE
    insee_base_url: str = DEFAULT_INSEE_BASE_URL
    # repr=False: once Dagster has resolved the EnvVar this holds the key itself.
    insee_api_key: str | None = Field(default=None, repr=False)
    insee_requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    stock_path: str | None = None
    sample_size: int = DEFAULT_SAMPLE_SIZE
    # From this day (YYYY-MM-DD) the sample states activities in NAF 2025.
    sample_naf2025_from: str = DEFAULT_SAMPLE_NAF2025_FROM.isoformat()
    # The time a day's fetch may spend on transient INSEE failures (README, "Retries").
    insee_retry_budget_s: int = DEFAULT_INSEE_RETRY_BUDGET_S
    # Shared by every process using the key: consecutive runs never exceed the quota.
    quota_state_path: str | None = None

    def land_day(self, day: date, folder: Path) -> sources.LandedDay:
        """Land `day` in `folder` from the configured source. A configuration error fails
        the step at once (no retry can fix it)."""
        meta = {"source": self.source}
        if self.source == "sample":
            from foxreviews_pipeline.sample.source import land_sample_day

            return land_sample_day(
                day, folder, size=self.sample_size, meta=meta,
                naf2025_from=date.fromisoformat(self.sample_naf2025_from),
            )
        if self.source == "api":
            if not self.insee_api_key:
                raise dg.Failure(
                    "FOXREVIEWS_INSEE_API_KEY is not set: the api source needs it",
                    allow_retries=False,
                )
            return sources.land_api_day(
                day,
                folder,
                base_url=self.insee_base_url,
                api_key=self.insee_api_key,
                requests_per_minute=self.insee_requests_per_minute,
                quota_state=Path(self.quota_state_path) if self.quota_state_path else None,
                meta=meta,
                retry_budget_s=self.insee_retry_budget_s,
            )
        if self.source == "stock":
            if not self.stock_path:
                raise dg.Failure(
                    "FOXREVIEWS_SIRENE_STOCK_PATH is not set: the stock source needs it",
                    allow_retries=False,
                )
            from foxreviews_pipeline.lib.sirene.stock_file import read_stock_day
            from foxreviews_pipeline.lib.sirene.stock_staging import StockFileError

            try:
                fetched = read_stock_day(Path(self.stock_path), day)
            except StockFileError as exc:
                # A file does not mend itself: no retry.
                raise dg.Failure(str(exc), allow_retries=False) from None
            return sources.land_fetched_day(fetched, day, folder, meta)
        raise dg.Failure(f"unknown SIRENE source {self.source!r}", allow_retries=False)
