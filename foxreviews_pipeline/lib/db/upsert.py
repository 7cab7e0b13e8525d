"""Staging and insert-or-update: the one way rows are written into a keyed table.

Rows are COPYed into a temporary staging table (`stage`), the caller may resolve or reject
staged rows with plain SQL, and one `INSERT … ON CONFLICT (key) DO UPDATE … WHERE (…) IS
DISTINCT FROM (…)` applies them (`upsert`, which can also stage the rows itself), so that a
row that would not change is not written at all.

The NULL rule is explicit at every call: `keep_existing_when_null` names the columns (or
all, with True) where an empty staged value keeps the stored one; in every other column the
staged value is written as it is, NULL included. The stored value is read in the statement
that proposes the row (`coalesce(staged, stored)`), so the proposed row is complete and
NOT NULL columns hold; `insert_defaults` fill what is still empty on a new row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import psycopg
import pyarrow as pa
from psycopg import sql

from foxreviews_pipeline.lib.db.copy import copy_rows, copy_table, drop_temp
from foxreviews_pipeline.lib.db.database import one_row


@dataclass
class UpsertCounts:
    staged: int = 0
    inserted: int = 0
    updated: int = 0

    @property
    def unchanged(self) -> int:
        """Staged rows that left their stored row as it was."""
        return self.staged - self.inserted - self.updated

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


def stage(
    conn: psycopg.Connection,
    name: str,
    *,
    like: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]] | pa.Table,
    types: Mapping[str, str] | None = None,
    computed: Mapping[str, str | None] | None = None,
    primary_key: Sequence[str] = (),
    analyze: bool | Sequence[str] = False,
) -> int:
    """A temporary table `name` (dropped at commit, replaced when staged again in the same
    transaction) holding `rows`; how many.

    `rows` may be an Arrow table whose columns are `columns`, in that order.
    Each of `columns` is typed as in table `like`, unless `types` gives its SQL type (a
    column `like` does not have); `computed` columns (name → SQL type, or None: as in
    `like`) start empty, for the caller to fill. `primary_key` rejects a duplicated key at
    COPY time; `analyze` gathers statistics (on the given columns only, or all with True)."""
    types = dict(types or {})
    computed = dict(computed or {})
    typed = [c for c in columns if c not in types] + [c for c, t in computed.items() if t is None]
    drop_temp(conn, name)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(name), _names(typed), sql.Identifier(like)
        )
    )
    added = {
        **{c: types[c] for c in columns if c in types},
        **{c: t for c, t in computed.items() if t is not None},
    }
    if added or primary_key:
        conn.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                sql.Identifier(name),
                sql.SQL(", ").join(
                    [
                        *(
                            sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c), sql.SQL(t))
                            for c, t in added.items()
                        ),
                        *(
                            [sql.SQL("ADD PRIMARY KEY ({})").format(_names(primary_key))]
                            if primary_key
                            else []
                        ),
                    ]
                ),
            )
        )
    if isinstance(rows, pa.Table):
        if rows.column_names != list(columns):
            raise ValueError(f"the table's columns {rows.column_names} are not {list(columns)}")
        count = copy_table(conn, name, rows)
    else:
        count = copy_rows(conn, name, columns, rows)
    if analyze is True:
        analyze_stage(conn, name)
    elif analyze:
        analyze_stage(conn, name, analyze)
    return count


# The statistics of a temporary stage only tell the planner its size and how distinct its
# join keys are: a 3,000-row sample (statistics target 10) says that as well as the default
# 30,000 rows — a whole day's stage — in a seventh of the time.
STAGE_STATISTICS_TARGET = 10


def analyze_stage(
    conn: psycopg.Connection, name: str, columns: Sequence[str] = (), *, schema: str | None = None
) -> None:
    """ANALYZE a temporary stage, or a table of `schema` (on `columns` only, if given) from a
    small sample; the transaction's statistics target is left as it was."""
    previous = one_row(
        conn.execute(
            "SELECT current_setting('default_statistics_target'), "
            "set_config('default_statistics_target', %s, true)",
            (str(STAGE_STATISTICS_TARGET),),
        )
    )[0]
    try:
        target = sql.Identifier(name) if schema is None else sql.Identifier(schema, name)
        if columns:
            conn.execute(sql.SQL("ANALYZE {} ({})").format(target, _names(columns)))
        else:
            conn.execute(sql.SQL("ANALYZE {}").format(target))
    finally:
        conn.execute("SELECT set_config('default_statistics_target', %s, true)", (previous,))


def keeps(keep_existing_when_null: bool | Collection[str], column: str) -> bool:
    """Whether an empty value of `column` keeps the stored one under this policy."""
    if isinstance(keep_existing_when_null, bool):
        return keep_existing_when_null
    return column in keep_existing_when_null


def new_value(
    column: str, keep_existing_when_null: bool | Collection[str], staged: str, stored: str
) -> sql.Composable:
    """The value a row ends with: the staged one, or the stored one where the policy keeps
    it and the staged one is NULL (aliases `staged` and `stored`)."""
    ident = sql.Identifier(column)
    if keeps(keep_existing_when_null, column):
        return sql.SQL("coalesce({s}.{c}, {e}.{c})").format(
            s=sql.Identifier(staged), e=sql.Identifier(stored), c=ident
        )
    return sql.SQL("{s}.{c}").format(s=sql.Identifier(staged), c=ident)


def upsert_statement(
    table: str,
    stage_name: str,
    *,
    key: Sequence[str],
    columns: Sequence[str],
    keep_existing_when_null: bool | Collection[str] = False,
    stored: str | None = None,
    fixed: Mapping[str, sql.Composable] | None = None,
    insert_defaults: Mapping[str, str] | None = None,
    only_changed: bool = True,
    touch: str | None = "updated_at",
    order_by: str | None = None,
    returning: sql.Composable | None = None,
) -> sql.Composed:
    """`INSERT INTO table … SELECT … FROM stage ON CONFLICT (key) DO UPDATE`.

    - `columns`: the staged data columns written on insert and update (the key is written
      on insert only);
    - `keep_existing_when_null`: the NULL rule (module docstring); the stored values are
      read from `stored` (default: `table` itself) joined on the key;
    - `fixed`: column → SQL value written on insert and update (e.g. `is_active = true`);
    - `insert_defaults`: column → SQL expression over the staged row `s`, for a new row whose
      value is still NULL;
    - `only_changed`: update only rows whose values differ (False when the caller already
      dropped the unchanged rows from the stage);
    - `touch`: a timestamp column set to now() on every update;
    - `returning`: what the statement returns, over alias `t` (default `(t.xmax = 0)`,
      true for an inserted row).
    """
    fixed = dict(fixed or {})
    insert_defaults = dict(insert_defaults or {})
    key = list(key)
    data = [c for c in columns if c not in key and c not in fixed]
    stored_alias = "cur"
    join = any(keeps(keep_existing_when_null, c) for c in data)

    def proposed(column: str) -> sql.Composable:
        value = (
            new_value(column, keep_existing_when_null, "s", stored_alias)
            if column in data
            else sql.SQL("s.{}").format(sql.Identifier(column))
        )
        if column in insert_defaults:
            value = sql.SQL("coalesce({}, {})").format(value, sql.SQL(insert_defaults[column]))
        return value

    insert_columns = [*key, *data, *fixed]
    values = [*(proposed(c) for c in [*key, *data]), *fixed.values()]
    source = sql.SQL("{} s").format(sql.Identifier(stage_name))
    if join:
        source = sql.SQL("{} LEFT JOIN {} {} ON {}").format(
            source,
            sql.Identifier(stored or table),
            sql.Identifier(stored_alias),
            sql.SQL(" AND ").join(
                sql.SQL("{a}.{c} = s.{c}").format(a=sql.Identifier(stored_alias), c=sql.Identifier(c))
                for c in key
            ),
        )
    updated = [*data, *fixed]
    assignments = [
        *(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in updated),
        *([sql.SQL("{} = now()").format(sql.Identifier(touch))] if touch else []),
    ]
    condition: sql.Composable = sql.SQL("")
    if only_changed:
        condition = sql.SQL(" WHERE ({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in updated),
            sql.SQL(", ").join(sql.SQL("excluded.{}").format(sql.Identifier(c)) for c in updated),
        )
    return sql.SQL(
        "INSERT INTO {table} AS t ({insert_columns}) SELECT {values} FROM {source}{order} "
        "ON CONFLICT ({key}) DO UPDATE SET {assignments}{condition} RETURNING {returning}"
    ).format(
        table=sql.Identifier(table),
        insert_columns=_names(insert_columns),
        values=sql.SQL(", ").join(values),
        source=source,
        order=sql.SQL(" ORDER BY s.{}").format(sql.Identifier(order_by)) if order_by else sql.SQL(""),
        key=_names(key),
        assignments=sql.SQL(", ").join(assignments),
        condition=condition,
        returning=returning if returning is not None else sql.SQL("(t.xmax = 0)"),
    )


def upsert(
    conn: psycopg.Connection,
    table: str,
    *,
    key: Sequence[str],
    columns: Sequence[str],
    rows: Iterable[Sequence[object]] | None = None,
    stage_name: str | None = None,
    keep_existing_when_null: bool | Collection[str] = False,
    fixed: Mapping[str, sql.Composable] | None = None,
    insert_defaults: Mapping[str, str] | None = None,
    order_by: str | None = None,
) -> UpsertCounts:
    """Insert or update into `table`, keyed by `key`; the counts (see `upsert_statement`).

    With `rows` (values for `columns`, the key among them), they are staged first (a key
    given twice is an error); without, `stage_name` is a stage the caller filled."""
    if rows is not None:
        stage_name = stage_name or f"stage_{table}"
        stage(conn, stage_name, like=table, columns=columns, rows=rows, primary_key=key)
    elif stage_name is None:
        raise ValueError("upsert needs rows, or the name of a staged table")
    statement = upsert_statement(
        table,
        stage_name,
        key=key,
        columns=columns,
        keep_existing_when_null=keep_existing_when_null,
        fixed=fixed,
        insert_defaults=insert_defaults,
        order_by=order_by,
        returning=sql.SQL("(t.xmax = 0) AS inserted"),
    )
    counted = sql.SQL(
        "WITH upserted AS ({statement}) SELECT (SELECT count(*) FROM {stage}), "
        "count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
    ).format(statement=statement, stage=sql.Identifier(stage_name))
    staged, inserted, updated = one_row(conn.execute(counted))
    return UpsertCounts(staged=staged, inserted=inserted, updated=updated)


def _names(columns: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)
