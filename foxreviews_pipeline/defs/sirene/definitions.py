import dagster as dg

from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.jobs import sirene_daily_job
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.defs.sirene.schedules import sirene_daily_schedule
from foxreviews_pipeline.defs.sirene.sensors import sirene_publication_sensor
from foxreviews_pipeline.defs.sirene.stock import sirene_stock, sirene_stock_stage_job
from foxreviews_pipeline.lib.settings import Settings


def sirene_source(settings: Settings, insee_api_key: str | dg.EnvVar | None) -> SireneSource:
    """The SIRENE source the settings configure, with `insee_api_key` as the key."""
    return SireneSource(
        source=settings.sirene_source,
        insee_base_url=settings.insee_base_url,
        insee_api_key=insee_api_key,
        insee_requests_per_minute=settings.insee_requests_per_minute,
        insee_retry_budget_s=settings.insee_retry_budget_s,
        stock_path=str(settings.stock_path) if settings.stock_path else None,
        quota_state_path=str(settings.home / "run" / "insee_quota.sqlite"),
        sample_naf2025_from=settings.sample_naf2025_from.isoformat(),
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[etablissements_raw, sirene_stock],
        jobs=[sirene_daily_job, sirene_stock_stage_job],
        schedules=[sirene_daily_schedule],
        sensors=[sirene_publication_sensor],
        resources={
            # By name: the key never shows in the UI, run config or logs.
            "sirene": sirene_source(
                settings, dg.EnvVar("FOXREVIEWS_INSEE_API_KEY") if settings.insee_api_key else None
            )
        },
    )
