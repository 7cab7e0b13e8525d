"""The tables as pandas DataFrames (pandas 3, Arrow-backed), and a report built on them.

`PostgresTableIOManager` is the code location's `io_manager`. The table assets write their
tables themselves and return `MaterializeResult`s, so it stores nothing; it *loads*: an
asset's table as a DataFrame, for a notebook (`defs.load_asset_value("villes")`), a report
or a downstream asset (`AssetIn`). A partitioned directory asset loads one partition (or a
few): the establishments that partition last wrote and their ProLocalisations, never the
whole directory. Columns keep their PostgreSQL types as Arrow types (`lib/db/frames.py`).

`coverage_report`, weekly: per département × trade, the active establishments mapped to the
trade, the active ProLocalisations, and the establishments left without a page. The two big
tables are aggregated by PostgreSQL; the reference tables come in as DataFrames.
"""


from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.directory.stock_backfill import STOCK_ASSETS
from foxreviews_pipeline.defs.reference.assets import TABLES as REFERENCE_TABLES
from foxreviews_pipeline.defs.resources import PostgresResource, build_resources
from foxreviews_pipeline.lib.asset_keys import (
    COVERAGE_REPORT,
    ENTREPRISES,
    PRO_LOCALISATIONS,
    TRADE_TAXONOMY,
    UPLOADED_FILES,
    VILLE_STATS,
    VILLES,
)
from foxreviews_pipeline.lib.constants import PARIS_TIMEZONE
from foxreviews_pipeline.lib.db.catalog import Column, columns
from foxreviews_pipeline.lib.db.frames import read_table
from foxreviews_pipeline.lib.directory.publication import TABLES as DIRECTORY_TABLES
from foxreviews_pipeline.lib.settings import Settings

# The table (or materialized view) each asset is, whole.
WHOLE_TABLES: dict[str, str] = {**REFERENCE_TABLES, VILLE_STATS: VILLE_STATS}
# The directory assets: their table, and the `last_partition` a partition key stands for.
PARTITIONED_TABLES: dict[str, str] = {
    **DIRECTORY_TABLES,
    **{STOCK_ASSETS[asset]: table for asset, table in DIRECTORY_TABLES.items()},
}
_LAST_PARTITION_PREFIX = {
    **dict.fromkeys(DIRECTORY_TABLES, ""),
    **dict.fromkeys(STOCK_ASSETS.values(), "stock:"),
}


class UnknownTableError(Exception):
    """An asset the I/O manager has no table for."""


def _table_columns(conn: psycopg.Connection, table: str) -> list[Column]:
    found = columns(conn, table)
    if not found:
        raise UnknownTableError(f"Table {table} does not exist in the data database (migrated?)")
    return found


def _selected(alias: str, cols: Sequence[Column]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, c.name) for c in cols)


def table_query(
    conn: psycopg.Connection, asset: str, partition_keys: Sequence[str] | None
) -> tuple[sql.Composable, list[Any], list[Column]]:
    """The bounded query an asset (and its partitions, if it has any) loads as, with its
    parameters and columns: a whole reference table; for a directory asset, the
    establishments whose `last_partition` is one of the keys (`stock:<key>` for the stock)
    or the ProLocalisations of those establishments."""
    if asset in WHOLE_TABLES:
        if partition_keys:
            raise UnknownTableError(f"Asset {asset} has no partitions: load it without a partition key")
        cols = _table_columns(conn, WHOLE_TABLES[asset])
        query = sql.SQL("SELECT {} FROM {} AS t").format(
            _selected("t", cols), sql.Identifier(WHOLE_TABLES[asset])
        )
        return query, [], cols
    if asset not in PARTITIONED_TABLES:
        known = ", ".join(sorted([*WHOLE_TABLES, *PARTITIONED_TABLES]))
        raise UnknownTableError(
            f"Asset {asset} has no table the I/O manager can load (it loads: {known})"
        )
    if not partition_keys:
        raise UnknownTableError(
            f"Asset {asset} is partitioned: load one partition (e.g. "
            f"defs.load_asset_value({asset!r}, partition_key=...)), not the whole table"
        )
    table = PARTITIONED_TABLES[asset]
    cols = _table_columns(conn, table)
    partitions = [_LAST_PARTITION_PREFIX[asset] + key for key in partition_keys]
    entreprises = DIRECTORY_TABLES[ENTREPRISES]
    if table == entreprises:
        query = sql.SQL(
            "SELECT {} FROM {} AS e WHERE e.last_partition = ANY(%s) ORDER BY e.id"
        ).format(_selected("e", cols), sql.Identifier(table))
    else:
        query = sql.SQL(
            "SELECT {} FROM {} AS p JOIN {} AS e ON e.id = p.entreprise_id "
            "WHERE e.last_partition = ANY(%s) ORDER BY p.id"
        ).format(_selected("p", cols), sql.Identifier(table), sql.Identifier(entreprises))
    return query, [partitions], cols


def read_frame(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence[Any] | None, cols: Sequence[Column]
) -> pd.DataFrame:
    """A query's rows as an Arrow-backed DataFrame (every column an `ArrowDtype`)."""
    return read_table(conn, query, params, cols).to_pandas(types_mapper=pd.ArrowDtype)


class PostgresTableIOManager(dg.ConfigurableIOManager):
    """Loads a table asset as an Arrow-backed pandas DataFrame, bounded by its partition;
    stores nothing (the table assets write their tables themselves)."""

    postgres: dg.ResourceDependency[PostgresResource]

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        asset = context.asset_key.to_user_string() if context.has_asset_key else context.name
        raise TypeError(
            f"Asset {asset} returned a {type(obj).__name__}: the table I/O manager stores "
            "nothing. A table asset writes its table itself and returns a MaterializeResult."
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        asset = context.asset_key.to_user_string()
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else None
        with self.postgres.connection() as conn:
            query, params, cols = table_query(conn, asset, keys)
            frame = read_frame(conn, query, params, cols)
        context.log.debug(f"{asset}: {len(frame)} rows loaded" + (f" for {keys}" if keys else ""))
        return frame


# -- the coverage report ------------------------------------------------------------------

REPORTS = "reports"
COVERAGE_CRON = "0 6 * * 1"  # Mondays 06:00, Paris time
_TOP_ROWS = 20
_CHART_BARS = 10
_CHART_WIDTH = 30

# The mapping key an establishment's trade is found by: the nomenclature its record states,
# or, for a record that only switched to NAF 2025, the rév. 2 code it kept (as the
# ProLocalisations are synchronised: lib/directory/prolocalisations.py).
_NAF_KEY = """
    CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
         THEN 'NAFRev2' ELSE e.naf_nomenclature END AS nomenclature,
    CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
         THEN e.naf_rev2_code ELSE e.naf_code END AS naf_code
"""
# Active establishments per département (the one of their ville; the commune code's when
# it resolves to none) and NAF code, and how many of them have no active ProLocalisation.
_ESTABLISHMENTS = sql.SQL(
    f"""
    SELECT coalesce(v.departement, CASE WHEN e.code_commune ~ '^9[78]' THEN left(e.code_commune, 3)
                                        ELSE left(e.code_commune, 2) END) AS departement,
           {_NAF_KEY},
           count(*) AS establishments,
           count(*) FILTER (WHERE NOT EXISTS (
               SELECT 1 FROM enterprise_prolocalisation p
               WHERE p.entreprise_id = e.id AND p.is_active)) AS unmatched
    FROM enterprise_entreprise e
    LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
    LEFT JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
    WHERE e.is_active AND e.naf_code IS NOT NULL
    GROUP BY 1, 2, 3
    """
)
_ESTABLISHMENTS_COLUMNS = [
    Column("departement", "text", True, None),
    Column("nomenclature", "text", True, None),
    Column("naf_code", "text", True, None),
    Column("establishments", "bigint", False, None),
    Column("unmatched", "bigint", False, None),
]
# Active ProLocalisations per département (of their ville) and trade.
_PROLOCALISATIONS = sql.SQL(
    """
    SELECT v.departement, p.sous_categorie_id, count(*) AS prolocalisations
    FROM enterprise_prolocalisation p
    JOIN location_ville v ON v.id = p.ville_id
    WHERE p.is_active
    GROUP BY 1, 2
    """
)
_PROLOCALISATIONS_COLUMNS = [
    Column("departement", "text", False, None),
    Column("sous_categorie_id", "bigint", False, None),
    Column("prolocalisations", "bigint", False, None),
]
_TRADES = sql.SQL(
    """
    SELECT s.id AS sous_categorie_id, s.nom AS trade, c.nom AS category
    FROM subcategory_souscategorie s JOIN category_categorie c ON c.id = s.categorie_id
    """
)
_TRADES_COLUMNS = [
    Column("sous_categorie_id", "bigint", False, None),
    Column("trade", "text", False, None),
    Column("category", "text", False, None),
]
_COUNTS = ["establishments", "prolocalisations", "unmatched"]
_NO_DEPARTEMENT = "?"


def coverage(
    establishments: pd.DataFrame,
    prolocalisations: pd.DataFrame,
    trades: pd.DataFrame,
    villes: pd.DataFrame,
    trade_taxonomy: pd.DataFrame,
) -> pd.DataFrame:
    """Per département × trade: establishments mapped to the trade, active ProLocalisations,
    and establishments without one (`unmatched`), with the trade's and the département's
    names; the establishments of a NAF code mapped to no trade are left out."""
    mapping = trade_taxonomy.loc[
        trade_taxonomy["sous_categorie_id"].notna(), ["nomenclature", "naf_code", "sous_categorie_id"]
    ]
    mapped = establishments.merge(mapping, on=["nomenclature", "naf_code"], how="inner")
    # No commune, no département: counted under "?" (groupby would leave NA keys out).
    mapped["departement"] = mapped["departement"].fillna(_NO_DEPARTEMENT)
    keys = ["departement", "sous_categorie_id"]
    per_trade = mapped.groupby(keys, as_index=False)[["establishments", "unmatched"]].sum()
    report = per_trade.merge(prolocalisations, on=keys, how="outer")
    report[_COUNTS] = report[_COUNTS].fillna(0).astype("int64[pyarrow]")
    active = villes.loc[villes["is_active"].fillna(False)]
    departements = active.groupby("departement", as_index=False).agg(
        region=("region", "first"), villes=("id", "size"), population=("population", "sum")
    )
    report = report.merge(trades, on="sous_categorie_id", how="left").merge(
        departements, on="departement", how="left"
    )
    report["coverage"] = (
        1 - report["unmatched"] / report["establishments"].where(report["establishments"] > 0)
    ).round(4)
    columns_out = ["departement", "region", "category", "trade", "sous_categorie_id",
                   *_COUNTS, "coverage", "villes", "population"]
    return report[columns_out].sort_values(
        ["unmatched", "establishments", "departement", "trade"], ascending=[False, False, True, True]
    ).reset_index(drop=True)


def _cell(value: Any) -> Any:
    """A plain Python value for a metadata table cell (NA as None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def top_rows_table(report: pd.DataFrame, rows: int = _TOP_ROWS) -> dg.TableMetadataValue:
    shown = ["departement", "region", "trade", *_COUNTS, "coverage"]
    types = {"establishments": "int", "prolocalisations": "int", "unmatched": "int", "coverage": "float"}
    schema = dg.TableSchema(columns=[dg.TableColumn(c, types.get(c, "string")) for c in shown])
    records = [
        dg.TableRecord({c: _cell(v) for c, v in zip(shown, row, strict=True)})
        for row in report[shown].head(rows).itertuples(index=False)
    ]
    return dg.MetadataValue.table(records, schema=schema)


def _bar(matched: int, unmatched: int, scale: float) -> str:
    """A stacked bar: █ the establishments with a page, ░ those without (one cell at
    least when there are any)."""
    total = matched + unmatched
    cells = max(round(total / scale * _CHART_WIDTH), 1 if total else 0) if scale else 0
    without = min(cells, max(round(unmatched / scale * _CHART_WIDTH), 1 if unmatched else 0))
    return "█" * (cells - without) + "░" * without


def bar_chart(report: pd.DataFrame, bars: int = _CHART_BARS) -> str:
    """The trades with the most establishments nationwide, each a bar of its establishments
    with a page (█) and without (░), as markdown (matplotlib is not a dependency)."""
    per_trade = (
        report.assign(trade=report["trade"].fillna("?"))
        .groupby("trade", as_index=False)[["establishments", "unmatched"]].sum()
        .sort_values(["establishments", "unmatched", "trade"], ascending=[False, False, True])
        .head(bars)
    )
    if per_trade.empty or not per_trade["establishments"].sum():
        return "_No active establishment maps to a trade._"
    total, unmatched_total = int(report["establishments"].sum()), int(report["unmatched"].sum())
    scale = float(per_trade["establishments"].max())
    width = max(len(str(t)) for t in per_trade["trade"])
    lines = [
        f"Top {len(per_trade)} trades by active establishments (█ with a page, ░ without); "
        f"all trades: {total - unmatched_total:,} with a page, {unmatched_total:,} without.",
        "",
        "```text",
    ]
    for trade, establishments, unmatched in per_trade.itertuples(index=False):
        matched = int(establishments) - int(unmatched)
        bar = _bar(matched, int(unmatched), scale)
        lines.append(f"{trade:<{width}} {bar:<{_CHART_WIDTH}} {matched:>7,} + {int(unmatched):,}")
    lines.append("```")
    return "\n".join(lines)


# A multi-asset of one, for its op's name: the job that runs it is `coverage_report` too,
# and an op may not share a job's name.
@dg.multi_asset(
    name="coverage_report_build",
    specs=[
        dg.AssetSpec(
            COVERAGE_REPORT,
            group_name=REPORTS,
            kinds={"pandas"},
            owners=OWNERS,
            code_version="1",
            deps=[VILLES, TRADE_TAXONOMY, ENTREPRISES, PRO_LOCALISATIONS,
                  *STOCK_ASSETS.values(), UPLOADED_FILES],
            description="Weekly, per département × trade: the active establishments whose "
            "NAF code maps to the trade, the active ProLocalisations, and the establishments "
            "with no active ProLocalisation (`unmatched`: no ville, not diffusible, trade "
            "inactive…). The directory is aggregated by PostgreSQL; the towns and the "
            "NAF → trade mapping come in as DataFrames.",
        )
    ],
    ins={"villes": dg.AssetIn(VILLES), "trade_taxonomy": dg.AssetIn(TRADE_TAXONOMY)},
)
def coverage_report(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    villes: pd.DataFrame,
    trade_taxonomy: pd.DataFrame,
) -> dg.MaterializeResult:
    """The coverage report (its spec's description), as metadata: totals, the top rows, a
    chart. The report itself is not stored."""
    with postgres.connection() as conn:
        establishments = read_frame(conn, _ESTABLISHMENTS, None, _ESTABLISHMENTS_COLUMNS)
        prolocalisations = read_frame(conn, _PROLOCALISATIONS, None, _PROLOCALISATIONS_COLUMNS)
        trades = read_frame(conn, _TRADES, None, _TRADES_COLUMNS)
    report = coverage(establishments, prolocalisations, trades, villes, trade_taxonomy)
    totals = {name: int(report[name].sum()) for name in _COUNTS}
    share = 1 - totals["unmatched"] / totals["establishments"] if totals["establishments"] else None
    context.log.info(
        f"coverage: {totals['establishments']:,} establishments mapped to a trade, "
        f"{totals['prolocalisations']:,} active ProLocalisations, {totals['unmatched']:,} unmatched"
    )
    metadata: dict[str, Any] = {
        **{name: dg.MetadataValue.int(value) for name, value in totals.items()},
        "coverage": dg.MetadataValue.float(round(share, 4)) if share is not None else None,
        "departements": dg.MetadataValue.int(int(report["departement"].nunique())),
        "trades": dg.MetadataValue.int(int(report["sous_categorie_id"].nunique())),
        "dagster/row_count": dg.MetadataValue.int(len(report)),
        "top_unmatched": top_rows_table(report),
        "chart": dg.MetadataValue.md(bar_chart(report)),
    }
    return dg.MaterializeResult(metadata={k: v for k, v in metadata.items() if v is not None})


coverage_report_job = dg.define_asset_job(
    name=COVERAGE_REPORT,
    selection=dg.AssetSelection.assets(coverage_report),
    description="The weekly coverage report: establishments, ProLocalisations and the "
    "establishments without a page, per département × trade.",
    owners=OWNERS,
)

coverage_report_weekly = dg.ScheduleDefinition(
    name="coverage_report_weekly",
    job=coverage_report_job,
    cron_schedule=COVERAGE_CRON,
    execution_timezone=PARIS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    owners=OWNERS,
    tags={"foxreviews/trigger": "weekly"},
    description="Mondays at 06:00 Europe/Paris: the coverage report (running by default).",
)


def build_definitions(
    settings: Settings, postgres: PostgresResource | None = None
) -> dg.Definitions:
    """The table I/O manager (the location's `io_manager`) and the reports. The I/O manager
    reads through `postgres`: pass the location's own resource to share it; by default, one
    built from the same settings as the location's (`build_resources`)."""
    if postgres is None:
        shared = build_resources(settings)["postgres"]
        assert isinstance(shared, PostgresResource)
        postgres = shared
    return dg.Definitions(
        assets=[coverage_report],
        jobs=[coverage_report_job],
        schedules=[coverage_report_weekly],
        resources={"io_manager": PostgresTableIOManager(postgres=postgres)},
    )
