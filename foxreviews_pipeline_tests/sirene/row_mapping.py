"""Row-shaped views of the columnar mapping, for tests that state cases one row at a time.

The product maps Arrow tables (`records_table` / a stock block → `map_table`); these adapters
wrap that same path with tuples and dicts in and out. Mapped rows are tuples in
`ENTREPRISE_COLUMNS` order, flat rows tuples in `FLAT_FIELDS` order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from benchmarks.rows import table_rows  # the benchmarks' own: one copy for both
from foxreviews_pipeline.lib.sirene.mapping import (
    ENTREPRISE_COLUMNS,
    FLAT_FIELDS,
    Rejection,
    map_table,
    records_table,
)

_FLAT_ROW = pa.struct([(name, pa.string()) for name in FLAT_FIELDS])


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rows_table(rows: Iterable[Sequence[Any]]) -> pa.Table:
    """Flat rows (values in `FLAT_FIELDS` order) as `FLAT_FIELDS` string columns."""
    rows = rows if isinstance(rows, list) else list(rows)
    try:
        struct = pa.array(rows, _FLAT_ROW)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        struct = pa.array([tuple(_as_text(v) for v in row) for row in rows], _FLAT_ROW)
    return pa.Table.from_arrays(struct.flatten(), names=list(FLAT_FIELDS))


def map_records(
    records: Iterable[Mapping[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
    """Map API-shaped records: (rows in ENTREPRISE_COLUMNS order, rejections)."""
    table, rejections = map_table(records_table(records))
    return table_rows(table), rejections


def map_flat_rows(
    rows_in: Iterable[Sequence[Any]],
) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
    """Map flat rows (FLAT_FIELDS order): (rows in ENTREPRISE_COLUMNS order, rejections)."""
    table, rejections = map_table(rows_table(rows_in))
    return table_rows(table), rejections


def _one(mapped: tuple[list[tuple[Any, ...]], list[Rejection]]) -> tuple[Any, ...] | Rejection:
    rows, rejections = mapped
    return rows[0] if rows else rejections[0]


def map_record(record: Mapping[str, Any]) -> tuple[Any, ...] | Rejection:
    """Map one API-shaped record to a row (ENTREPRISE_COLUMNS order) or a Rejection."""
    return _one(map_records([record]))


def map_flat(values: Sequence[Any]) -> tuple[Any, ...] | Rejection:
    """Map one flat row (values in FLAT_FIELDS order, e.g. a joined stock row)."""
    return _one(map_flat_rows([values]))


def map_flat_dict(row: Mapping[str, Any]) -> tuple[Any, ...] | Rejection:
    """Map one flat row given as a dict keyed by SIRENE field names (missing keys are NULL)."""
    return map_flat([row.get(field) for field in FLAT_FIELDS])


def row_as_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A mapped row keyed by column name."""
    return dict(zip(ENTREPRISE_COLUMNS, row, strict=True))
