"""`ville_stats`: the directory-wide figures the web app shows, refreshed nightly and after
every import (docs/architecture.md, "Schedules and automation").
"""

import time

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.lib.constants import PARIS, PARIS_TIMEZONE
from foxreviews_pipeline.lib.directory.ville_stats import FIGURES, refresh_ville_stats

REFRESH_AFTER_IMPORT = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("refresh after an import")


@dg.asset(
    deps=[
        dg.AssetKey("villes"),
        dg.AssetKey("entreprises"),
        dg.AssetKey("pro_localisations"),
        dg.AssetKey("uploaded_files"),
    ],
    group_name="directory",
    owners=OWNERS,
    kinds={"postgres"},
    automation_condition=REFRESH_AFTER_IMPORT,
    code_version="1",
)
def ville_stats(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Directory-wide figures shown by the web app (materialized view `ville_stats`, one row):
    towns, départements, régions, population, active establishments and ProLocalisations.
    Refreshed CONCURRENTLY (readers are never blocked), nightly at 02:00 Paris time and
    after each import.
    """
    started = time.perf_counter()
    stats = refresh_ville_stats(postgres.url)
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(int(stats[name])) for name in FIGURES
    }
    metadata["refreshed_at"] = dg.MetadataValue.timestamp(stats["refreshed_at"])
    metadata["duration_s"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    context.log.info(
        f"ville_stats: {stats['total_villes']} villes, "
        f"{stats['total_entreprises_actives']} active entreprises, "
        f"{stats['total_prolocalisations_actives']} active ProLocalisations"
    )
    return dg.MaterializeResult(metadata=metadata)


ville_stats_refresh_job = dg.define_asset_job(
    name="ville_stats_refresh",
    selection=dg.AssetSelection.assets(ville_stats),
    description="Refresh the ville_stats materialized view "
    "(CONCURRENTLY: readers are never blocked).",
    owners=OWNERS,
)


@dg.schedule(
    name="ville_stats_nightly",
    job=ville_stats_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone=PARIS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    owners=OWNERS,
    description="Every night at 02:00 Europe/Paris: refresh ville_stats (running by default).",
)
def ville_stats_nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Refreshes `ville_stats` at 02:00 Paris time, the floor under the post-import refresh;
    one run per Paris night (the run key is the date).
    """
    when = context.scheduled_execution_time
    night = when.astimezone(PARIS).date().isoformat()
    return dg.RunRequest(
        run_key=f"ville_stats_nightly:{night}", tags={"foxreviews/trigger": "nightly"}
    )


ville_stats_automation_sensor = dg.AutomationConditionSensorDefinition(
    name="ville_stats_automation",
    target=dg.AssetSelection.assets(ville_stats),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Refreshes ville_stats once after each import (running by default; see the "
    "asset's module docstring).",
)
