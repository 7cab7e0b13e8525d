"""Tables as Arrow: a query's rows streamed out of PostgreSQL by COPY and parsed by Arrow.

`COPY (…) TO STDOUT (FORMAT csv, HEADER)` is PostgreSQL's fastest way out, and Arrow's
CSV reader parses it in C, with the column types the live catalog states (never inferred:
a SIRET stays a string, an empty column keeps its type). No Python object per value.

In PostgreSQL's CSV a NULL is an unquoted empty field and an empty string is `""`: Arrow
reads the first as null and keeps the second as an empty string.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from foxreviews_pipeline.lib.db.catalog import Column

_BLOCK_SIZE = 1 << 22  # bytes of CSV per Arrow parse block
_TIMESTAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'

_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "date": pa.date32(),
    "json": pa.string(),
    "jsonb": pa.string(),
    "numeric": pa.string(),  # unconstrained: any precision, kept exact as its text
}
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_TIMESTAMP = re.compile(r"timestamp(?:\(\d\))? with(out)? time zone")
_MAX_DECIMAL128_PRECISION = 38


def arrow_type(pg_type: str) -> pa.DataType:
    """The Arrow type a column of this PostgreSQL type (as `format_type` spells it) is read
    as. Timestamps with a time zone are instants in UTC; a type with no closer Arrow type
    (arrays, varchar, uuid, intervals…) is read as its text."""
    pg_type = pg_type.replace(" ", "") if pg_type.startswith("numeric(") else pg_type
    if pg_type.endswith("[]"):
        return pa.string()
    if pg_type in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[pg_type]
    if numeric := _NUMERIC.fullmatch(pg_type):
        precision, scale = int(numeric[1]), int(numeric[2])
        if precision <= _MAX_DECIMAL128_PRECISION:
            return pa.decimal128(precision, scale)
        return pa.string()
    if timestamp := _TIMESTAMP.fullmatch(pg_type):
        return pa.timestamp("us") if timestamp[1] else pa.timestamp("us", tz="UTC")
    return pa.string()


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in columns])


def _select_expression(column: Column, data_type: pa.DataType) -> sql.Composable:
    """How a column is written out: dates and timestamps by an explicit format, so that the
    session's DateStyle and TimeZone never change what Arrow reads; the rest as COPY writes it."""
    name = sql.Identifier("q", column.name)
    if pa.types.is_timestamp(data_type):
        value = sql.SQL("({} AT TIME ZONE 'UTC')").format(name) if data_type.tz else name
        text = sql.SQL("to_char({}, {})").format(value, sql.Literal(_TIMESTAMP_FORMAT))
        if data_type.tz:
            text = sql.SQL("{} || 'Z'").format(text)
    elif pa.types.is_date32(data_type):
        text = sql.SQL("to_char({}, 'YYYY-MM-DD')").format(name)
    else:
        return name
    return sql.SQL("{} AS {}").format(text, sql.Identifier(column.name))


class _CopyStream(io.RawIOBase):
    """The bytes of a `COPY … TO STDOUT` as a readable binary file, for Arrow to pull from."""

    def __init__(self, copy: psycopg.Copy) -> None:
        super().__init__()
        self._copy = copy
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target):
            if not self._pending:
                if self._done:
                    break
                chunk = self._copy.read()
                if not chunk:
                    self._done = True
                    break
                self._pending = memoryview(chunk).cast("B")
            n = min(len(target) - filled, len(self._pending))
            target[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled


def _options(
    schema: pa.Schema,
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    return (
        pa_csv.ReadOptions(block_size=_BLOCK_SIZE),
        # A text value may hold a line break (quoted by COPY).
        pa_csv.ParseOptions(newlines_in_values=True),
        pa_csv.ConvertOptions(
            column_types={field.name: field.type for field in schema},
            include_columns=schema.names,
            # Only an unquoted empty field is NULL: `""` stays an empty string, and "NA",
            # "null" or "N/A" are values like any other.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def read_table(
    conn: psycopg.Connection,
    query: sql.Composable,
    params: Sequence[Any] | dict[str, Any] | None,
    columns: Sequence[Column],
) -> pa.Table:
    """The rows of `query` as an Arrow table typed by `columns` (the columns the query
    yields, by name, with their PostgreSQL types: `lib.db.catalog.columns` for a table).

    The query runs as one `COPY … TO STDOUT (FORMAT csv, HEADER)` (its parameters bound
    client-side, as COPY requires) and its output is streamed into Arrow's CSV reader."""
    if not columns:
        raise ValueError("read_table needs the columns the query yields")
    schema = arrow_schema(columns)
    select = sql.SQL(", ").join(
        _select_expression(column, field.type) for column, field in zip(columns, schema, strict=True)
    )
    statement = sql.SQL("COPY (SELECT {} FROM ({}) AS q) TO STDOUT (FORMAT csv, HEADER)").format(
        select, query
    )
    read_options, parse_options, convert_options = _options(schema)
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        table = pa_csv.read_csv(
            _CopyStream(copy),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
        _drain(copy)
    if table.column_names != schema.names:
        raise ValueError(f"the query yielded {table.column_names}, expected {schema.names}")
    return table.cast(schema)


def _drain(copy: psycopg.Copy) -> None:
    """Read what Arrow left (nothing, normally), so that the COPY ends cleanly."""
    while copy.read():
        pass
