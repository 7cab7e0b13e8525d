"""`ville_stats`: the directory-wide figures the web app shows, refreshed nightly and after
every import (docs/architecture.md, "Schedules and automation").
"""

import time
from collections.abc import Set

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.lib.constants import PARIS, PARIS_TIMEZONE
from foxreviews_pipeline.lib.directory.ville_stats import FIGURES, refresh_ville_stats


@dg.asset(
    deps=[
        dg.AssetKey("villes"),
        dg.AssetKey("entreprises"),
        dg.AssetKey("pro_localisations"),
        dg.AssetKey("stock_entreprises"),
        dg.AssetKey("stock_pro_localisations"),
        dg.AssetKey("uploaded_files"),
    ],
    group_name="directory",
    owners=OWNERS,
    kinds={"postgres"},
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


# Runs that have not finished yet, for the sensor below (a canceled or failed run is over).
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Whatever `ville_stats` reads: an asset added to its deps triggers the refresh too.
UPSTREAM_KEYS = tuple(sorted(ville_stats.dependency_keys, key=lambda key: key.to_user_string()))


def newest_upstream_materialization(instance: dg.DagsterInstance, after: int) -> int | None:
    """The highest event-log storage id of a materialization of an upstream asset above
    `after`, or None if there is none."""
    newest: int | None = None
    for key in UPSTREAM_KEYS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1
        ).records
        if records and (newest is None or records[0].storage_id > newest):
            newest = records[0].storage_id
    return newest


def run_assets(run: dg.DagsterRun, repository: dg.RepositoryDefinition | None) -> Set[dg.AssetKey]:
    """The assets a run materializes: its selection, or else those of its job."""
    if run.asset_selection:
        return run.asset_selection
    if repository is not None and repository.has_job(run.job_name):
        return repository.get_job(run.job_name).asset_layer.selected_asset_keys
    return frozenset()


def run_in_the_way(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition | None
) -> str | None:
    """Why not to request a refresh now: a refresh, or an import writing an upstream asset,
    is queued or running. None if neither."""
    upstream = set(UPSTREAM_KEYS)
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT_STATUSES)):
        assets = run_assets(run, repository)
        status = run.status.value.lower()
        if run.job_name == ville_stats_refresh_job.name or ville_stats.key in assets:
            return f"a ville_stats refresh is already {status} (run {run.run_id})"
        if assets & upstream:
            names = ", ".join(sorted(key.to_user_string() for key in assets & upstream))
            return f"run {run.run_id} of {run.job_name} ({names}) is {status}"
    return None


@dg.sensor(
    name="ville_stats_after_import",
    job=ville_stats_refresh_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    owners=OWNERS,
    description="Every minute: once an import has ended, start one `ville_stats_refresh` run "
    "(running by default).",
)
def ville_stats_after_import_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """Requests a refresh when an upstream asset of `ville_stats` has a materialization newer
    than the cursor (the highest event-log storage id already handled), unless a refresh or
    an import is queued or running: the cursor then stays, so the imports of a backfill, and
    those that end during a refresh, lead to one refresh afterwards."""
    handled = int(context.cursor) if context.cursor else 0
    newest = newest_upstream_materialization(context.instance, handled)
    if newest is None:
        names = ", ".join(key.to_user_string() for key in UPSTREAM_KEYS)
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no materialization of {names} since the last refresh request")
        )
    waiting_for = run_in_the_way(context.instance, context.repository_def)
    if waiting_for:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"new imports, refresh postponed: {waiting_for}")
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"ville_stats_after_import:{newest}",
                tags={"foxreviews/trigger": "after_import"},
            )
        ],
        cursor=str(newest),
    )
