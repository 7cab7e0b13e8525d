"""The SIRENE stock backfill: a StockEtablissement file loaded into the directory."""

from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS, held_back
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.lib.directory.checks import PublicationHeld
from foxreviews_pipeline.lib.directory.stock import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_WRITERS,
    StockLoadResult,
    load_stock,
)
from foxreviews_pipeline.lib.directory.ville_stats import refresh_ville_stats

_PROGRESS_EVERY_CHUNKS = 20


class StockBackfillConfig(dg.Config):
    path: str = Field(
        description="StockEtablissement file on the run worker: .zip (INSEE's download), .csv or .parquet."
    )
    unites_legales_path: str | None = Field(
        default=None,
        description="StockUniteLegale file (.zip, .csv or .parquet) for the legal-unit names. "
        "Without it every establishment lacks a name and is rejected (no_name).",
    )
    chunk_rows: int = Field(
        default=DEFAULT_CHUNK_ROWS, ge=1_000, description="Rows per upsert and per commit, per writer."
    )
    writers: int = Field(
        default=DEFAULT_WRITERS, ge=1, le=8, description="Database connections writing in parallel."
    )


def _metadata(result: StockLoadResult, path: Path) -> dict[str, dg.MetadataValue]:
    rate = result.rows_read / result.duration_s if result.duration_s else 0.0
    return {
        "path": dg.MetadataValue.path(str(path)),
        "rows_read": dg.MetadataValue.int(result.rows_read),
        "rows_written": dg.MetadataValue.int(result.rows_written),
        "inserted": dg.MetadataValue.int(result.inserted),
        "updated": dg.MetadataValue.int(result.updated),
        "unchanged": dg.MetadataValue.int(result.unchanged),
        "stale_skipped": dg.MetadataValue.int(result.stale),
        "duplicates_in_file": dg.MetadataValue.int(result.duplicates),
        "closed": dg.MetadataValue.int(result.closed),
        "reopened": dg.MetadataValue.int(result.reopened),
        "rejected": dg.MetadataValue.int(result.rejected),
        "rejected_by_reason": dg.MetadataValue.json(result.rejected_by_reason),
        "rejected_sample": dg.MetadataValue.json(result.rejected_sample),
        "prolocalisations_created": dg.MetadataValue.int(result.prolocalisations_created),
        "prolocalisations_reactivated": dg.MetadataValue.int(result.prolocalisations_reactivated),
        "prolocalisations_deactivated": dg.MetadataValue.int(result.prolocalisations_deactivated),
        "prolocalisations_deactivated_by_reason": dg.MetadataValue.json(
            result.prolocalisations_deactivated_by_reason
        ),
        "prolocalisations_unmatched_by_reason": dg.MetadataValue.json(
            result.prolocalisations_unmatched_by_reason
        ),
        "chunks": dg.MetadataValue.int(result.chunks),
        "writers": dg.MetadataValue.int(result.writers),
        "duration_s": dg.MetadataValue.float(result.duration_s),
        "rows_per_s": dg.MetadataValue.float(round(rate, 1)),
    }


@dg.op(out=dg.Out(dg.Nothing))
def load_sirene_stock(
    context: dg.OpExecutionContext, config: StockBackfillConfig, postgres: PostgresResource
) -> None:
    """Loads a StockEtablissement file into the directory, streamed and committed batch by
    batch after each batch's audit; re-running the same file finishes an interrupted load
    and rewrites nothing already there.
    """
    path = Path(config.path)
    if not path.is_file():
        raise dg.Failure(description=f"stock file not found on the run worker: {path}")
    unites_legales = None
    if config.unites_legales_path:
        unites_legales = Path(config.unites_legales_path)
        if not unites_legales.is_file():
            raise dg.Failure(description=f"StockUniteLegale file not found: {unites_legales}")
    else:
        context.log.warning("no unites_legales_path: establishments will have no name and be rejected")

    def progress(result: StockLoadResult) -> None:
        if result.chunks % _PROGRESS_EVERY_CHUNKS == 0:
            context.log.info(
                f"{result.chunks} batches committed, {result.rows_written:,} rows written, "
                f"{result.duration_s:.0f} s"
            )

    # Not `postgres.connection()`: that holds one transaction, and the load commits per batch.
    try:
        with psycopg.connect(postgres.url, application_name="foxreviews-stock") as conn:
            result = load_stock(
                conn,
                path,
                unites_legales=unites_legales,
                run_id=context.run.run_id,
                chunk_rows=config.chunk_rows,
                writers=config.writers,
                on_chunk=progress,
            )
    except PublicationHeld as held:
        raise held_back(held, "stock load stopped, batch") from None
    if result.rejected:
        context.log.warning(f"{result.rejected:,} row(s) rejected: {result.rejected_by_reason}")
    context.log.info(
        f"stock loaded: {result.rows_read:,} rows read, {result.inserted:,} inserted, "
        f"{result.updated:,} updated, {result.unchanged:,} unchanged in {result.duration_s:.0f} s"
    )
    # The directory changed outside the daily partitions: refresh the figures the web app
    # shows now rather than at 02:00.
    stats = refresh_ville_stats(postgres.url)
    context.log.info(f"ville_stats refreshed: {stats.get('total_entreprises_actives')} active entreprises")
    context.add_output_metadata(_metadata(result, path))


@dg.job(
    name="sirene_stock_backfill",
    description="Backfill the directory from an INSEE StockEtablissement file (+ StockUniteLegale "
    "for names): establishments upserted by SIRET, ProLocalisations synced, committed batch by "
    "batch; re-running the same file converges and changes nothing already applied.",
    tags={"foxreviews/kind": "backfill"},
    owners=OWNERS,
)
def sirene_stock_backfill_job() -> None:
    load_sirene_stock()
