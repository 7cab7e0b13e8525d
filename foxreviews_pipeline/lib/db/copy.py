"""COPY helpers: the set-based way into PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

# COPY reads what Arrow's CSV writer writes: a NULL is an unquoted empty field, a string is
# always quoted (so an empty string stays one), booleans are true/false, dates and times ISO.
_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed", batch_size=8_192)
_CSV_CHUNK = 1 << 20


def copy_rows(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
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


def copy_table(conn: psycopg.Connection, table: str, data: pa.Table) -> int:
    """COPY an Arrow table into `table` (columns by name): written by Arrow as CSV, in C,
    with no Python object per value."""
    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, _CSV)
    query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in data.column_names)
    )
    view = buffer.getbuffer()
    with conn.cursor() as cur, cur.copy(query) as copy:
        for start in range(0, len(view), _CSV_CHUNK):
            copy.write(view[start : start + _CSV_CHUNK])
    view.release()
    return int(data.num_rows)


def drop_temp(conn: psycopg.Connection, *names: str) -> None:
    for name in names:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))
