"""The directory loaded from the staged SIRENE stock, one département per partition.

The same tables as `entreprises` and `pro_localisations`, written by the same rules and
published by the same audit, but partitioned by département instead of by day: an asset has
one partitioning, hence two more assets for the same tables (docs/architecture.md, "The
SIRENE stock"). Each partition is one run and one transaction.
"""

import time
from collections.abc import Iterator

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.directory.assets import blocking_check_specs, directory_spec
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.results import directory_catalog, directory_results, held_results
from foxreviews_pipeline.defs.sirene.partitions import stock_partitions
from foxreviews_pipeline.lib.asset_keys import (
    ENTREPRISES,
    NAF_NOMENCLATURE,
    PRO_LOCALISATIONS,
    SIRENE_STOCK,
    STOCK_ENTREPRISES,
    STOCK_PRO_LOCALISATIONS,
    TRADE_TAXONOMY,
    VILLES,
)
from foxreviews_pipeline.lib.directory.publication import DirectoryChange
from foxreviews_pipeline.lib.directory.stock_load import publish_stock_partition
from foxreviews_pipeline.lib.publish import PublicationHeld
from foxreviews_pipeline.lib.sirene.stock_staging import StockFileError

# The checks are declared once, per table; here they belong to the stock's assets.
STOCK_ASSETS = {ENTREPRISES: STOCK_ENTREPRISES, PRO_LOCALISATIONS: STOCK_PRO_LOCALISATIONS}
# Stock partitions write the directory in parallel up to this pool's limit (set by
# `foxreviews instance`; a pool with no limit set takes the instance's default of 1).
DIRECTORY_WRITES_POOL = "directory_writes"
_PROGRESS_EVERY_BATCHES = 10


@dg.multi_asset(
    name="directory_stock",
    partitions_def=stock_partitions,
    specs=[
        directory_spec(
            STOCK_ENTREPRISES,
            ENTREPRISES,
            [SIRENE_STOCK, NAF_NOMENCLATURE],
            "Establishments of one département from the staged SIRENE stock, written to "
            "`enterprise_entreprise` by the rules of `entreprises`.",
        ),
        directory_spec(
            STOCK_PRO_LOCALISATIONS,
            PRO_LOCALISATIONS,
            [STOCK_ENTREPRISES, TRADE_TAXONOMY, VILLES],
            "ProLocalisations of one département's stock establishments, in "
            "`enterprise_prolocalisation` as for `pro_localisations`.",
        ),
    ],
    check_specs=blocking_check_specs(stock_partitions, STOCK_ASSETS),
    # One run per département: runs are queued, retried and monitored one by one, and fan
    # out to as many workers as the pool allows.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    pool=DIRECTORY_WRITES_POOL,
)
def directory_stock(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Writes one département of the staged stock, audits it whole in the same transaction
    and publishes it only when every blocking check passes."""
    partition = context.partition_key
    started = time.perf_counter()

    def progress(change: DirectoryChange) -> None:
        if change.batches % _PROGRESS_EVERY_BATCHES == 0:
            context.log.info(f"{partition}: {change.records:,} rows applied so far")

    try:
        with postgres.connection() as conn:
            published = publish_stock_partition(
                conn, partition, run_id=context.run.run_id, on_batch=progress
            )
            tables = directory_catalog(conn, f"stock:{partition}")
    except StockFileError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except PublicationHeld as held:
        yield from held_results(held, f"Stock partition {partition}", STOCK_ASSETS)
    counts = published.result.entreprises
    context.log.info(
        f"{partition}: {published.result.records:,} rows, {counts.inserted:,} inserted, "
        f"{counts.updated:,} updated, {counts.unchanged:,} unchanged in "
        f"{time.perf_counter() - started:.1f} s"
    )
    yield from directory_results(published, tables, STOCK_ASSETS)


sirene_stock_backfill_job = dg.define_asset_job(
    name="sirene_stock_backfill",
    selection=dg.AssetSelection.assets(directory_stock),
    description="Load the staged SIRENE stock into the directory, one département per run: "
    "launch a backfill of all partitions (after sirene_stock_stage). Re-running a "
    "partition rewrites nothing already there.",
    tags={"foxreviews/kind": "stock"},
    owners=OWNERS,
)
