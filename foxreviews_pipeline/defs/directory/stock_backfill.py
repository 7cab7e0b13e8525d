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
from foxreviews_pipeline.defs.results import (
    directory_catalog,
    directory_results,
    held_results,
    metadata,
)
from foxreviews_pipeline.defs.sirene.partitions import stock_partitions
from foxreviews_pipeline.lib.asset_keys import (
    ENTREPRISES,
    NAF_NOMENCLATURE,
    PRO_LOCALISATIONS,
    SIRENE_STOCK,
    STOCK_BULK_LOAD,
    STOCK_ENTREPRISES,
    STOCK_PRO_LOCALISATIONS,
    TRADE_TAXONOMY,
    VILLES,
)
from foxreviews_pipeline.lib.db import catalog
from foxreviews_pipeline.lib.directory.bulk_load import (
    BULK_MAX_ESTABLISHMENTS,
    BulkLoadRefused,
    bulk_load_stock,
)
from foxreviews_pipeline.lib.directory.publication import TABLES, DirectoryChange
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


@dg.asset(
    name=STOCK_BULK_LOAD,
    deps=[SIRENE_STOCK, NAF_NOMENCLATURE, TRADE_TAXONOMY, VILLES],
    group_name="directory",
    kinds={"postgres"},
    owners=OWNERS,
    code_version="1",
    pool=DIRECTORY_WRITES_POOL,
    description=f"The first load of an empty or nearly empty directory (at most "
    f"{BULK_MAX_ESTABLISHMENTS:,} establishments): every département of the staged stock "
    "published into shadow tables by the rules and audit of `directory_stock`, swapped in at "
    "once. Until the swap the web app reads the tables as they were; a crash leaves them so.",
    check_specs=[
        dg.AssetCheckSpec(
            "every_partition_published",
            asset=STOCK_BULK_LOAD,
            description="Every staged département passed its blocking checks and was "
            "swapped in; a held one keeps nothing and can be loaded again by partition.",
        )
    ],
)
def stock_bulk_load(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Loads every département of the staged stock into shadow tables, publishes each by
    `directory_stock`'s rules and audit, builds the indexes and constraints after, and swaps
    the tables in at once (lib/directory/bulk_load.py)."""

    def progress(partition: str, outcome: DirectoryChange | PublicationHeld) -> None:
        if isinstance(outcome, PublicationHeld):
            context.log.warning(f"{partition}: {outcome}")
        else:
            context.log.info(f"{partition}: {outcome.records:,} rows in the shadow tables")

    try:
        loaded = bulk_load_stock(postgres.url, run_id=context.run.run_id, on_partition=progress)
    except (BulkLoadRefused, StockFileError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    # The stock's partitions show what each département now holds, as a backfill would.
    for partition, change in loaded.partitions.items():
        for asset, figures in change.figures().items():
            context.log_event(
                dg.AssetMaterialization(STOCK_ASSETS[asset], partition=partition, metadata=metadata(figures))
            )
    records = sum(c.records for c in loaded.partitions.values())
    context.log.info(
        f"bulk load: {len(loaded.partitions)} partitions, {records:,} rows in "
        f"{loaded.duration_s:.1f} s (swap {loaded.swap_s:.2f} s); {len(loaded.held)} held"
    )
    with postgres.connection() as conn:
        # What the directory's tables hold now (their catalog entries are the table assets').
        table_rows = {asset: catalog.row_count(conn, table) for asset, table in TABLES.items()}
    yield dg.MaterializeResult(
        metadata={
            **metadata({
                "partitions": len(loaded.partitions),
                "records": records,
                "inserted": sum(c.entreprises.inserted for c in loaded.partitions.values()),
                "prolocalisations_created": sum(
                    c.prolocalisations.created for c in loaded.partitions.values()
                ),
                "live_rows_kept": loaded.live_rows,
                "load_s": round(loaded.load_s, 3),
                "build_s": round(loaded.build_s, 3),
                "swap_s": round(loaded.swap_s, 3),
                "duration_s": round(loaded.duration_s, 3),
                "table_rows": table_rows,
            }),
        }
    )
    yield dg.AssetCheckResult(
        check_name="every_partition_published",
        passed=not loaded.held,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "held": dg.MetadataValue.json({p: str(h) for p, h in sorted(loaded.held.items())}),
            "published": len(loaded.partitions),
        },
    )


sirene_stock_bulk_load_job = dg.define_asset_job(
    name="sirene_stock_bulk_load",
    selection=dg.AssetSelection.assets(stock_bulk_load),
    description="First load of an empty or nearly empty directory from the staged stock "
    "(after sirene_stock_stage): all départements through shadow tables, swapped in at once. "
    "A populated directory is loaded by sirene_stock_backfill instead.",
    tags={"foxreviews/kind": "stock"},
    owners=OWNERS,
)
