"""What the catalog says of a table, read from PostgreSQL itself: its columns as they are
now, its keys and indexes as the migrations made them, and how many rows it (or one
partition of it) holds."""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class TableKeys:
    """The primary keys, unique and exclusion constraints, foreign keys (theirs and those
    referencing them) and other indexes of some tables, as the catalog defines them: what
    pg_restore creates after the data. NOT NULL and CHECK constraints are not in it."""

    constraints: tuple[tuple[str, str, str, str], ...]  # (table, name, contype, definition)
    indexes: tuple[tuple[str, str], ...]  # (index, CREATE INDEX …)

    def drops(self) -> list[sql.SQL | sql.Composed]:
        foreign = [c for c in self.constraints if c[2] == "f"]
        keys = [c for c in self.constraints if c[2] != "f"]
        return [
            *(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(t), sql.Identifier(n)) for t, n, _, _ in foreign + keys),
            *(sql.SQL("DROP INDEX {}").format(sql.SQL(index)) for index, _ in self.indexes),
        ]

    def creates(self) -> list[sql.SQL | sql.Composed]:
        """pg_restore's order: keys, indexes, then foreign keys."""
        foreign = [c for c in self.constraints if c[2] == "f"]
        keys = [c for c in self.constraints if c[2] != "f"]
        add = [
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(sql.SQL(t), sql.Identifier(n), sql.SQL(d))
            for t, n, _, d in keys + foreign
        ]
        return [*add[: len(keys)], *(sql.SQL(d) for _, d in self.indexes), *add[len(keys) :]]


def table_keys(conn: psycopg.Connection, tables: Sequence[str]) -> TableKeys:
    """The keys and indexes of `tables` (names as `regclass` reads them) from the catalog."""
    oids = [one_row(conn.execute("SELECT %s::regclass::oid", (t,)))[0] for t in tables]
    constraints = conn.execute(
        """
        SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE contype IN ('p', 'u', 'x', 'f')
          AND (conrelid = ANY(%s::oid[]) OR (contype = 'f' AND confrelid = ANY(%s::oid[])))
        ORDER BY 1, 2
        """,
        (oids, oids),
    ).fetchall()
    indexes = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%s::oid[])
          AND NOT EXISTS (SELECT FROM pg_constraint c
                          WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                            AND c.contype IN ('p', 'u', 'x'))
        ORDER BY 1
        """,
        (oids,),
    ).fetchall()
    return TableKeys(tuple(constraints), tuple(indexes))
