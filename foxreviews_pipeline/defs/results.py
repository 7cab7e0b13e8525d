"""A publication as Dagster shows it: one builder of metadata and check results for every
writer (a SIRENE day, a stock partition, an upload, a reference load), so the UI shows the
same keys for the same facts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import psycopg

from foxreviews_pipeline.lib.asset_keys import ENTREPRISES, PRO_LOCALISATIONS
from foxreviews_pipeline.lib.db import catalog
from foxreviews_pipeline.lib.directory.publication import TABLES, DirectoryChange, partition_rows
from foxreviews_pipeline.lib.publish import CheckOutcome, PublicationHeld, Published


def metadata_value(value: Any) -> dg.MetadataValue:
    """A figure as Dagster metadata: numbers as numbers, the rest as JSON."""
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    return dg.MetadataValue.json(value)


def metadata(figures: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    return {name: metadata_value(value) for name, value in figures.items()}


def table_name(table: str) -> dict[str, dg.MetadataValue]:
    """The catalog's name of a table asset (on its definition: known before any run)."""
    return {"dagster/table_name": dg.MetadataValue.text(f"public.{table}")}


def table_metadata(
    conn: psycopg.Connection, table: str, row_count: int | None = None
) -> dict[str, dg.MetadataValue]:
    """A table asset's catalog entry as it is now: its name, its live column schema and its
    row count (`row_count` when the caller counted a part of it, a partition)."""
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in catalog.columns(conn, table)
        ]
    )
    count = catalog.row_count(conn, table) if row_count is None else row_count
    return {
        **table_name(table),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
        "dagster/row_count": dg.MetadataValue.int(count),
    }


def directory_catalog(
    conn: psycopg.Connection, last_partition: str
) -> dict[str, dict[str, dg.MetadataValue]]:
    """The catalog entries of the directory's two tables for one partition: the row count
    is what that partition wrote last."""
    rows = partition_rows(conn, last_partition)
    return {asset: table_metadata(conn, table, rows[asset]) for asset, table in TABLES.items()}


def check_result(outcome: CheckOutcome, assets: Mapping[str, str] | None = None) -> dg.AssetCheckResult:
    """The Dagster result of a check outcome; `assets` renames the asset it belongs to."""
    return dg.AssetCheckResult(
        asset_key=(assets or {}).get(outcome.asset, outcome.asset),
        check_name=outcome.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata(outcome.metadata),
    )


def held_back(held: PublicationHeld, what: str) -> dg.Failure:
    """The failure of a step whose publication the blocking checks refused: one line naming
    the failed checks, their counts and samples as metadata, no retry (the data is wrong,
    not the moment)."""
    return dg.Failure(
        description=f"{what} {held}",
        metadata={o.label: dg.MetadataValue.json(o.metadata) for o in held.failed},
        allow_retries=False,
    )


def held_results(
    held: PublicationHeld, what: str, assets: Mapping[str, str] | None = None
) -> Iterator[dg.AssetCheckResult]:
    """Every outcome of a held publication as a check result; then the step fails (raised)."""
    for outcome in held.outcomes:
        yield check_result(outcome, assets)
    raise held_back(held, what) from None


def _markdown_counts(title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return f"**{title}**: none"
    lines = [f"**{title}**", "", "| reason | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in counts.items()]
    return "\n".join(lines)


# The départements the positions summary lists: those with the most establishments.
_TOP_DEPARTEMENTS = 20


def _markdown_positions(by_departement: Mapping[str, Mapping[str, Any]]) -> str:
    top = sorted(by_departement.items(), key=lambda kv: (-kv[1]["establishments"], kv[0]))
    lines = [
        f"**Positioned establishments, top {min(_TOP_DEPARTEMENTS, len(top))} départements**",
        "",
        "| département | establishments | positioned | share |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {dep} | {f['establishments']} | {f['positioned']} | {f['share']:.1%} |"
        for dep, f in top[:_TOP_DEPARTEMENTS]
    ]
    return "\n".join(lines)


def directory_results(
    published: Published[DirectoryChange],
    tables: Mapping[str, Mapping[str, dg.MetadataValue]],
    assets: Mapping[str, str] | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """A directory publication's materializations (entreprises, ProLocalisations, under the
    names `assets` gives them, with their `tables` catalog entries) and check results."""
    change = published.result
    for asset, figures in change.figures().items():
        shown = {**metadata(figures), **tables.get(asset, {})}
        if asset == ENTREPRISES and figures.get("positioned_by_departement"):
            shown["positions_summary"] = dg.MetadataValue.md(
                _markdown_positions(figures["positioned_by_departement"])
            )
        if asset == PRO_LOCALISATIONS:
            shown["summary"] = dg.MetadataValue.md(
                _markdown_counts("Unmatched", change.prolocalisations.unmatched_by_reason)
            )
        yield dg.MaterializeResult(asset_key=(assets or {}).get(asset, asset), metadata=shown)
    yield from outcome_results(published.outcomes, assets)


def outcome_results(
    outcomes: Sequence[CheckOutcome], assets: Mapping[str, str] | None = None
) -> Iterator[dg.AssetCheckResult]:
    for outcome in outcomes:
        yield check_result(outcome, assets)
