"""Staging a stock and loading its partitions through the real Dagster assets, in process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg

from foxreviews_pipeline.defs.directory.stock import directory_stock
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.defs.sirene.stock import sirene_stock


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
