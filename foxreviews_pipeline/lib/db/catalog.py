"""What the catalog says of a table, read from PostgreSQL itself: its columns as they are
now, and how many rows it (or one partition of it) holds."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.database import one_row


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    description: str | None


def columns(conn: psycopg.Connection, table: str, schema: str = "public") -> list[Column]:
    """The live columns of a table or materialized view, in order, with their comments."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
               col_description(c.oid, a.attnum)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, table),
    ).fetchall()
    return [Column(name, type_, nullable, description) for name, type_, nullable, description in rows]


def row_count(conn: psycopg.Connection, table: str) -> int:
    """The rows of a table or materialized view, counted."""
    return int(one_row(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))[0])
