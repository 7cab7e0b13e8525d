"""Arrow tables as tuples, the shape the per-record rules and row-by-row writes take."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def _python_values(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    if pa.types.is_temporal(column.type):
        # numpy makes date and datetime objects much faster than Arrow's to_pylist.
        values: list[Any] = column.to_numpy().tolist()
        return values
    return column.to_pylist()


def table_rows(table: pa.Table | pa.RecordBatch) -> list[tuple[Any, ...]]:
    """A table as tuples of Python values, in its column order."""
    return list(zip(*(_python_values(column) for column in table.columns), strict=True))
