from typing import Any

import dagster as dg

from foxreviews_pipeline.defs.resources import configured
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.jobs import sirene_daily_job
from foxreviews_pipeline.defs.sirene.partitions import with_daily_partitions
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.defs.sirene.schedules import sirene_daily_schedule
from foxreviews_pipeline.defs.sirene.sensors import sirene_publication_sensor
from foxreviews_pipeline.defs.sirene.staged_stock import sirene_stock, sirene_stock_stage_job
from foxreviews_pipeline.lib.settings import Settings


def sirene_source(
    settings: Settings, insee_api_key: str | dg.EnvVar | None, *, by_name: bool = False
) -> SireneSource:
    """The SIRENE source the settings configure, with `insee_api_key` as the key; `by_name`:
    the values the environment states as is go in as `dg.EnvVar` (the code location's)."""

    def value(variable: str, setting: Any) -> Any:
        return configured(settings, variable, setting) if by_name else setting

    stock_path = str(settings.stock_path) if settings.stock_path else None
    return SireneSource(
        source=value("FOXREVIEWS_SIRENE_SOURCE", settings.sirene_source),
        insee_base_url=value("FOXREVIEWS_INSEE_BASE_URL", settings.insee_base_url),
        insee_api_key=insee_api_key,
        insee_requests_per_minute=value(
            "FOXREVIEWS_INSEE_REQUESTS_PER_MINUTE", settings.insee_requests_per_minute
        ),
        insee_retry_budget_s=value(
            "FOXREVIEWS_INSEE_RETRY_BUDGET_SECONDS", settings.insee_retry_budget_s
        ),
        stock_path=value("FOXREVIEWS_SIRENE_STOCK_PATH", stock_path) if stock_path else None,
        quota_state_path=str(settings.home / "run" / "insee_quota.sqlite"),
        sample_naf2025_from=value(
            "FOXREVIEWS_SAMPLE_NAF2025_FROM", settings.sample_naf2025_from.isoformat()
        ),
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[with_daily_partitions(etablissements_raw, settings.partitions_start), sirene_stock],
        jobs=[sirene_daily_job, sirene_stock_stage_job],
        schedules=[sirene_daily_schedule],
        sensors=[sirene_publication_sensor],
        resources={
            # The key by name: it never shows in the UI, run config or logs.
            "sirene": sirene_source(
                settings,
                dg.EnvVar("FOXREVIEWS_INSEE_API_KEY") if settings.insee_api_key else None,
                by_name=True,
            )
        },
    )
