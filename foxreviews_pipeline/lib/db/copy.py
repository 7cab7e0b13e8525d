"""COPY helpers: the set-based way into PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql


def create_stage(conn: psycopg.Connection, name: str, like: str, columns: Sequence[str]) -> None:
    """A temporary table with `columns` typed as in table `like`, dropped at commit (or
    replaced when the same transaction stages again)."""
    drop_temp(conn, name)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(name),
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier(like),
        )
    )


def copy_rows(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]
) -> int:
    count = 0
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor() as cur, cur.copy(query) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def drop_temp(conn: psycopg.Connection, *names: str) -> None:
    for name in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))
