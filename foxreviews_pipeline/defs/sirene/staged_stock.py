"""`sirene_stock`: INSEE's stock files staged in PostgreSQL, the source of the stock partitions
of the directory (docs/architecture.md, "The SIRENE stock")."""

import time
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.directory.stock_load import stage_for_directory
from foxreviews_pipeline.lib.sirene.stock_file import find_unites_legales
from foxreviews_pipeline.lib.sirene.stock_staging import StockFileError


class StockFilesConfig(dg.Config):
    path: str | None = Field(
        default=None,
        description="StockEtablissement file on the run worker (.zip as INSEE publishes it, "
        ".csv, .csv.gz or .parquet). Default: FOXREVIEWS_SIRENE_STOCK_PATH.",
    )
    unites_legales_path: str | None = Field(
        default=None,
        description="StockUniteLegale file of the same extract, for the legal units' names. "
        "Default: the StockUniteLegale file next to the StockEtablissement file.",
    )
    force: bool = Field(
        default=False,
        description="Copy the files again even when these very files are staged already.",
    )


def _files(config: StockFilesConfig, sirene: SireneSource) -> tuple[Path, Path | None]:
    raw = config.path or sirene.stock_path
    if not raw:
        raise StockFileError(
            "no StockEtablissement file: give `path` in the run config or set "
            "FOXREVIEWS_SIRENE_STOCK_PATH"
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        raise StockFileError(f"stock file not found on the run worker: {path}")
    if config.unites_legales_path:
        return path, Path(config.unites_legales_path).expanduser()
    return path, find_unites_legales(path)


@dg.asset(
    group_name="sirene",
    owners=OWNERS,
    kinds={"postgres"},
    code_version="1",
    tags={"foxreviews/kind": "stock"},
)
def sirene_stock(
    context: dg.AssetExecutionContext,
    config: StockFilesConfig,
    postgres: PostgresResource,
    sirene: SireneSource,
) -> dg.MaterializeResult:
    """INSEE's StockEtablissement and StockUniteLegale, COPYed into the schema `sirene_stock`
    and checked to belong together; each département of the directory's stock partitions
    is then loaded from here. A missing or mismatched StockUniteLegale stops here, before
    anything is written to the directory."""
    started = time.perf_counter()
    try:
        path, unites_legales = _files(config, sirene)
        with psycopg.connect(postgres.url, application_name="foxreviews-stock") as conn:
            staged = stage_for_directory(conn, path, unites_legales, force=config.force)
    except StockFileError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    pending = sum(staged.pending_by_partition.values())
    context.log.info(
        f"stock {'already staged' if staged.already_staged else 'staged'}: "
        f"{staged.etablissements:,} establishments, {staged.unites_legales:,} legal units, "
        f"{len(staged.rows_by_partition)} partitions, {pending:,} rows not yet in the directory"
    )
    return dg.MaterializeResult(
        metadata={
            "etablissement_file": dg.MetadataValue.path(str(path)),
            "unite_legale_file": dg.MetadataValue.path(str(unites_legales)),
            "fingerprint": dg.MetadataValue.text(staged.fingerprint),
            "etablissements": dg.MetadataValue.int(staged.etablissements),
            "unites_legales": dg.MetadataValue.int(staged.unites_legales),
            "without_legal_unit": dg.MetadataValue.int(staged.unmatched_sirens),
            "rows_by_partition": dg.MetadataValue.json(staged.rows_by_partition),
            "pending": dg.MetadataValue.int(pending),
            "pending_by_partition": dg.MetadataValue.json(staged.pending_by_partition),
            "already_staged": dg.MetadataValue.bool(staged.already_staged),
            "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        }
    )


sirene_stock_stage_job = dg.define_asset_job(
    name="sirene_stock_stage",
    selection=dg.AssetSelection.assets(sirene_stock),
    description="Stage a StockEtablissement + StockUniteLegale pair in PostgreSQL; then "
    "backfill the stock partitions (job sirene_stock_backfill).",
    tags={"foxreviews/kind": "stock"},
    owners=OWNERS,
)
