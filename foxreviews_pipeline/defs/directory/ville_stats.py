"""`ville_stats`: the directory-wide figures the web app shows, kept fresh.

Two triggers refresh it:

- a nightly schedule at 02:00 Europe/Paris (`ville_stats_nightly`), the floor that also
  picks up what other writers (staff uploads, the web app) changed during the day;
- declarative automation after every import (`REFRESH_AFTER_IMPORT`, evaluated by the
  `ville_stats_automation` sensor).

Why declarative automation rather than a run-status sensor on `sirene_daily` or a step in
that job: it fires on the materializations themselves, so an import started any way — the
schedule, a backfill, `dagster asset materialize`, the UI — is followed by a refresh, and
a backfill of N days leads to one refresh after it ends, not N. The condition is not
`eager()`: `ville_stats` is unpartitioned while `entreprises` and `pro_localisations` are
daily-partitioned, so every partition of those assets is a parent of it, and eager's "no
parent missing" clause would wait for every day since 2024-01-01 to exist, i.e. forever.
What is kept from eager: refresh when any parent partition was updated since the last
refresh was requested, but not while an import or backfill touching a parent is still
running (the refresh waits for the whole day, `entreprises` then `pro_localisations`),
nor while a refresh is already running.

The sensor is a dedicated one created RUNNING: Dagster's implicit
`default_automation_condition_sensor` starts stopped, so with it nothing would happen on
a fresh `dagster dev` until someone found the toggle.
"""

import time
from datetime import datetime

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
    number of towns, départements and régions covered, total and average population of the
    towns, and the active establishments and active ProLocalisations (business × trade × town
    pages) the directory lists.

    Refreshed CONCURRENTLY, so the web app keeps reading the previous figures while a refresh
    runs and is never blocked. Refreshed every night at 02:00 Paris time (schedule
    `ville_stats_nightly`) and once after each import of establishments, ProLocalisations
    or towns, by declarative automation (sensor `ville_stats_automation`, running by
    default): it reacts to the materializations however the import was started (schedule,
    backfill, CLI, UI), waits until no import touching them is still running, and turns a
    backfill of many days into one refresh. Not `eager()`: this asset is unpartitioned and
    its parents are daily-partitioned, so eager's "no parent missing" clause would wait for
    every day since the first partition. The figures are this asset's metadata, plotted
    over time in the UI.
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
    """Refreshes `ville_stats` at 02:00 Paris time, the floor under the post-import refresh
    that also catches changes made outside the pipeline's assets during the day.

    On the spring-forward night 02:00 does not exist and the tick comes at 03:00 CEST; on the
    autumn night it comes once, at the second 02:00 (CET). The run key names the Paris date,
    so a night is refreshed once by this schedule.

    Created RUNNING: the web app reads the view every day, and the system this replaces
    left its refresh scheduled nowhere; a refresh is cheap and never blocks readers.
    """
    when = context.scheduled_execution_time or datetime.now(PARIS)
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
