"""Staging a stock and loading its partitions: through the real Dagster assets, in process,
or through the functions they run (`stage_for_directory`, then `publish_stock_partition` per partition);
and what a stock file should leave in the directory, read without PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from foxreviews_pipeline.defs.directory.stock_backfill import directory_stock
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.defs.sirene.staged_stock import sirene_stock
from foxreviews_pipeline.lib.directory.publication import DirectoryChange
from foxreviews_pipeline.lib.directory.stock_load import (
    PARTITION_CHUNK_ROWS,
    publish_stock_partition,
    stage_for_directory,
)
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS, map_table
from foxreviews_pipeline.lib.sirene.stock_file import iter_stock_batches
from foxreviews_pipeline.lib.sirene.stock_staging import StagedStock
from foxreviews_pipeline_tests.sirene.row_mapping import table_rows


def resources(url: str, home: Path) -> dict:
    return {
        "postgres": PostgresResource(database_url=url, home=str(home)),
        "sirene": SireneSource(source="sample"),
    }


def stage(
    url: str, home: Path, path: Path, ul: Path | None, *, force: bool = False, **kwargs
) -> dg.ExecuteInProcessResult:
    config = {"path": str(path), "force": force} | ({"unites_legales_path": str(ul)} if ul else {})
    return dg.materialize(
        [sirene_stock],
        resources=resources(url, home),
        run_config={"ops": {"sirene_stock": {"config": config}}},
        **kwargs,
    )


def staged_partitions(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT rows_by_partition FROM sirene_stock.staged").fetchone()
    return sorted(row[0]) if row else []


def load(url: str, home: Path, partition: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [directory_stock], partition_key=partition, resources=resources(url, home), **kwargs
    )


def load_all(url: str, home: Path) -> dict[str, dg.ExecuteInProcessResult]:
    return {p: load(url, home, p) for p in staged_partitions(url)}


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The metadata of `asset`'s one materialization in `result`."""
    (event,) = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def stage_file(url: str, path: Path, ul: Path | None, *, force: bool = False) -> StagedStock:
    """`stage_for_directory`, as the `sirene_stock` asset runs it."""
    with psycopg.connect(url) as conn:
        return stage_for_directory(conn, path, ul, force=force)


def apply_partitions(
    url: str,
    partitions: Iterable[str],
    *,
    run_id: str | None = None,
    chunk_rows: int = PARTITION_CHUNK_ROWS,
    on_batch: Callable[[str, DirectoryChange], None] | None = None,
) -> dict[str, DirectoryChange]:
    """`publish_stock_partition` on each partition, in order, each in a transaction of its
    own (the backfill runs one partition per run); `on_batch(partition, change)` after each
    batch."""
    results = {}
    for partition in partitions:
        def progress(change: DirectoryChange, partition: str = partition) -> None:
            if on_batch is not None:
                on_batch(partition, change)

        with psycopg.connect(url) as conn, conn.transaction():
            results[partition] = publish_stock_partition(
                conn, partition, run_id=run_id, chunk_rows=chunk_rows, on_batch=progress
            ).result
    return results


def apply_file(url: str, path: Path, ul: Path | None, **kwargs: Any) -> dict[str, DirectoryChange]:
    """Stage a stock file and apply every partition it has (`apply_partitions`)."""
    return apply_partitions(url, sorted(stage_file(url, path, ul).rows_by_partition), **kwargs)


def total(results: Iterable[DirectoryChange]) -> DirectoryChange:
    """Several partitions' publications added up."""
    whole = DirectoryChange()
    rejected: Counter[str] = Counter()
    for result in results:
        whole.records += result.records
        whole.duplicates += result.duplicates
        whole.entreprises.add(result.entreprises)
        whole.prolocalisations.add(result.prolocalisations)
        whole.batches += result.batches
        rejected.update(result.rejected_by_reason)
    whole.rejected_by_reason = dict(sorted(rejected.items()))
    return whole


def expected(path: Path, ul: Path | None) -> tuple[dict[str, tuple], Counter[str]]:
    """What a stock file should leave in the directory, read without PostgreSQL: the stock
    reader's blocks mapped by `map_table`, the last row per SIRET; and the rejections by
    reason."""
    latest: dict[str, tuple] = {}
    rejected: Counter[str] = Counter()
    for batch in iter_stock_batches(path, unites_legales=ul):
        mapped, rejections = map_table(batch)
        latest.update((r[0], r) for r in table_rows(mapped))
        rejected.update(r.reason for r in rejections)
    return latest, rejected


def directory(conn: psycopg.Connection) -> dict[str, tuple]:
    """The directory's establishments, by SIRET, in `ENTREPRISE_COLUMNS` order."""
    cols = ", ".join(ENTREPRISE_COLUMNS)
    return {r[0]: tuple(r) for r in conn.execute(f"SELECT {cols} FROM enterprise_entreprise")}
