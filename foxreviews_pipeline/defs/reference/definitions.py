import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.reference.assets import naf_nomenclature, trade_taxonomy, villes
from foxreviews_pipeline.lib.constants import PARIS, PARIS_TIMEZONE
from foxreviews_pipeline.lib.settings import Settings

REFERENCE_ASSETS = [naf_nomenclature, trade_taxonomy, villes]

reference_job = dg.define_asset_job(
    name="reference_data",
    selection=dg.AssetSelection.assets(*REFERENCE_ASSETS),
    description="Load the NAF nomenclature, the trade taxonomy and the communes (villes); "
    "idempotent, run by `foxreviews run-day` before each day.",
    owners=OWNERS,
)


naf2025_mapping_job = dg.define_asset_job(
    name="naf2025_mapping",
    selection=dg.AssetSelection.assets(trade_taxonomy),
    description="Reload the trade taxonomy and learn the NAF 2025 → trade mapping again from "
    "the directory's establishments (their rév. 2 and NAF 2025 codes).",
    owners=OWNERS,
)


@dg.schedule(
    name="naf2025_mapping_nightly",
    job=naf2025_mapping_job,
    cron_schedule="30 1 * * *",
    execution_timezone=PARIS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    owners=OWNERS,
    description="Every night at 01:30 Europe/Paris: the NAF 2025 mapping learns from the days "
    "published since (running by default).",
)
def naf2025_mapping_nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every published day adds evidence (establishments carrying both codes); the mapping
    is learned again each night, before `ville_stats` is refreshed. One run per Paris night."""
    night = context.scheduled_execution_time.astimezone(PARIS).date().isoformat()
    return dg.RunRequest(run_key=f"naf2025_mapping_nightly:{night}", tags={"foxreviews/trigger": "nightly"})


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The reference group; it needs the shared `postgres` resource."""
    return dg.Definitions(
        assets=REFERENCE_ASSETS,
        jobs=[reference_job, naf2025_mapping_job],
        schedules=[naf2025_mapping_nightly_schedule],
    )
