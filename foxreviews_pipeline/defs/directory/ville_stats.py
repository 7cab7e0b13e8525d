"""`ville_stats`: the directory-wide figures the web app shows, refreshed by Dagster's
declarative automation at 02:00 Paris time and after every change of what it reads
(docs/architecture.md, "Schedules and automation").
"""

import time

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.results import table_metadata, table_name
from foxreviews_pipeline.lib.asset_keys import (
    ENTREPRISES,
    PRO_LOCALISATIONS,
    STOCK_BULK_LOAD,
    STOCK_ENTREPRISES,
    STOCK_PRO_LOCALISATIONS,
    UPLOADED_FILES,
    VILLE_STATS,
    VILLES,
)
from foxreviews_pipeline.lib.constants import PARIS_TIMEZONE
from foxreviews_pipeline.lib.directory.ville_stats import (
    FIGURES,
    refresh_town_centres,
    refresh_ville_stats,
)

NIGHTLY_CRON = "0 2 * * *"

# When `ville_stats` is refreshed: after a materialization of any partition of any of its
# deps (a day, a département of the stock, an upload, the towns), and at 02:00 Paris time,
# but never while a run that writes a dep, or refreshes the view, is queued or running. A
# trigger is remembered until a refresh is requested after it, so the days of a backfill,
# and imports that end during a refresh, lead to one refresh once they are all done.
#
# Each trigger is held `since` the last request on its own: Dagster breaks the tie of a
# trigger and a request seen by the same evaluation with their timestamps, which `|` does
# not carry through, so a change landing just after a request still calls for a refresh
# after it. Not `on_cron`: it waits for every dep to update after the tick, which the stock
# and the towns do not do every night; not `eager`: its `any_deps_missing` would wait for
# ever, partitioned deps always having missing partitions.
_REQUESTED: dg.AutomationCondition[dg.AssetKey | dg.AssetCheckKey] = (
    dg.AutomationCondition.newly_requested()
)
_DEPS_UPDATED: dg.AutomationCondition[dg.AssetKey | dg.AssetCheckKey] = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
)
_NIGHTLY: dg.AutomationCondition[dg.AssetKey | dg.AssetCheckKey] = (
    dg.AutomationCondition.cron_tick_passed(NIGHTLY_CRON, PARIS_TIMEZONE)
)
VILLE_STATS_AUTOMATION = (
    (
        _DEPS_UPDATED.since(_REQUESTED).with_label("a dep updated since the last request")
        | _NIGHTLY.since(_REQUESTED).with_label("02:00 Paris passed since the last request")
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after a dep update and at 02:00 Paris, never while a dep or itself is written")


@dg.asset(
    deps=[
        dg.AssetKey(key)
        for key in (
            VILLES, ENTREPRISES, PRO_LOCALISATIONS, STOCK_ENTREPRISES, STOCK_PRO_LOCALISATIONS,
            STOCK_BULK_LOAD, UPLOADED_FILES,
        )
    ],
    group_name="directory",
    owners=OWNERS,
    kinds={"postgres"},
    code_version="2",
    automation_condition=VILLE_STATS_AUTOMATION,
    metadata=table_name(VILLE_STATS),
)
def ville_stats(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Directory-wide figures shown by the web app (materialized view `ville_stats`, one row):
    towns, départements, régions, population, active establishments and ProLocalisations.
    Before them, the centre of every town neither geo.api.gouv.fr nor an upload gave is derived from its
    establishments (the median of their positions; `location_ville.position_source`).
    Refreshed CONCURRENTLY (readers are never blocked) by declarative automation: at 02:00
    Paris time and after any of its deps changes, never while one of them is being written.
    """
    started = time.perf_counter()
    # The town centres derived from the directory first: the same change calls for both.
    centres = refresh_town_centres(postgres.url, run_id=context.run.run_id)
    stats = refresh_ville_stats(postgres.url)
    metadata: dict[str, dg.MetadataValue] = {
        name: dg.MetadataValue.int(int(stats[name])) for name in FIGURES
    }
    metadata["refreshed_at"] = dg.MetadataValue.timestamp(stats["refreshed_at"])
    metadata["centres_updated"] = dg.MetadataValue.int(centres["centres_updated"])
    metadata["villes_positioned_by_source"] = dg.MetadataValue.json(
        centres["villes_positioned_by_source"]
    )
    metadata["villes_without_position"] = dg.MetadataValue.int(centres["villes_without_position"])
    metadata["changes"] = dg.MetadataValue.json(centres["changes"])
    metadata["duration_s"] = dg.MetadataValue.float(round(time.perf_counter() - started, 3))
    with postgres.connection() as conn:
        metadata.update(table_metadata(conn, VILLE_STATS))
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


# The daemon evaluates automation conditions only through a running automation sensor:
# Dagster's implicit `default_automation_condition_sensor` is created stopped, so this one,
# which covers `ville_stats`, is declared running.
ville_stats_automation_sensor = dg.AutomationConditionSensorDefinition(
    name="ville_stats_automation",
    target=dg.AssetSelection.assets(ville_stats),
    default_status=dg.DefaultSensorStatus.RUNNING,
    run_tags={"foxreviews/trigger": "automation"},
    # One plain run per request (the asset has no partitions to batch into a backfill).
    emit_backfills=False,
    description="Evaluates ville_stats's automation condition: refresh at 02:00 Paris time "
    "and after any upstream change, never while an upstream is written (running by default).",
)
