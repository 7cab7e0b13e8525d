"""The directory the web app reads: establishments and their ProLocalisations, per day.

Both tables are written, audited and published by one step in one transaction
(write–audit–publish): a day whose blocking checks fail leaves them exactly as they were.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource
from foxreviews_pipeline.defs.results import (
    directory_catalog,
    directory_results,
    held_results,
    table_name,
)
from foxreviews_pipeline.defs.sirene.partitions import DAILY_FRESHNESS, daily_partitions
from foxreviews_pipeline.lib.asset_keys import (
    ENTREPRISES,
    ETABLISSEMENTS_RAW,
    NAF_NOMENCLATURE,
    PRO_LOCALISATIONS,
    TRADE_TAXONOMY,
    VILLES,
)
from foxreviews_pipeline.lib.directory.checks import BLOCKING_CHECKS
from foxreviews_pipeline.lib.directory.daily import publish_day
from foxreviews_pipeline.lib.directory.publication import TABLES
from foxreviews_pipeline.lib.publish import PublicationHeld
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, read_columns


def directory_spec(
    key: str, table: str, deps: list[str], description: str, **more: Any
) -> dg.AssetSpec:
    """One of the two directory assets a step publishes together (a day, a stock partition):
    `table` is the asset named after its table (`ENTREPRISES`, `PRO_LOCALISATIONS`)."""
    return dg.AssetSpec(
        key,
        deps=deps,
        group_name="directory",
        kinds={"postgres"},
        owners=OWNERS,
        code_version="2",
        description=description,
        metadata=table_name(TABLES[table]),
        **more,
    )


def _daily_spec(key: str, deps: list[str], description: str) -> dg.AssetSpec:
    return directory_spec(key, key, deps, description, freshness_policy=DAILY_FRESHNESS)


def blocking_check_specs(
    partitions: dg.PartitionsDefinition, assets: dict[str, str] | None = None
) -> list[dg.AssetCheckSpec]:
    """The blocking checks of a directory publication, partitioned as its assets are;
    `assets` renames the assets they belong to (the stock's)."""
    return [
        dg.AssetCheckSpec(
            name,
            asset=(assets or {}).get(asset, asset),
            blocking=True,
            description=description,
            partitions_def=partitions,
        )
        for (asset, name), description in BLOCKING_CHECKS.items()
    ]


def build_directory_day(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The day's directory assets and their checks, all partitioned by `partitions` (the
    configured first day: `daily_partitions_def`), so a check result names its day."""

    @dg.multi_asset(
        name="directory_day",
        partitions_def=partitions,
        specs=[
            _daily_spec(
                ENTREPRISES,
                [ETABLISSEMENTS_RAW, NAF_NOMENCLATURE],
                "Establishments (table `enterprise_entreprise`, one row per SIRET) from the "
                "day's landed SIRENE records, under INSEE's diffusion policy. Contact details "
                "and Google data belong to the web app and are never touched.",
            ),
            _daily_spec(
                PRO_LOCALISATIONS,
                [ENTREPRISES, TRADE_TAXONOMY, VILLES],
                "ProLocalisations (table `enterprise_prolocalisation`): one business × trade × "
                "town page, e.g. \"Plombier à Lyon\". A page no longer wanted is retired with "
                "its reason, never deleted.",
            ),
        ],
        check_specs=blocking_check_specs(partitions),
    )
    def directory_day(
        context: dg.AssetExecutionContext, postgres: PostgresResource, landing_zone: LandingZone
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        """Writes the day's establishments and ProLocalisations, audits them with the blocking
        checks inside the same transaction, and publishes both only when every check passes."""
        day = context.partition_key
        landed = read_columns(landing_zone.path(RAW_DATASET), day).table
        try:
            with postgres.connection() as conn:
                published = publish_day(conn, landed, partition=day, run_id=context.run.run_id)
                tables = directory_catalog(conn, day)
        except PublicationHeld as held:
            context.log.error(f"Day {day}: {held}")
            yield from held_results(held, f"Day {day}")
        change = published.result
        if change.rejected:
            context.log.warning(f"{change.rejected} record(s) rejected: {change.rejected_by_reason}")
        yield from directory_results(published, tables)

    return directory_day


directory_day = build_directory_day(daily_partitions)
