"""What an import reports: row errors, file rejections, outcomes and the web app's statuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PENDING = "PENDING"
PROCESSING = "PROCESSING"
SUCCESS = "SUCCESS"
PARTIAL = "PARTIAL"
ERROR = "ERROR"

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
# Longest cell read (longer ones are reported as row errors), and most columns kept.
MAX_CELL_CHARS = 10_000
MAX_COLUMNS = 100


@dataclass(frozen=True)
class RowError:
    """One reason a row (or, with `row=None`, the whole file) was not imported.

    `row` is the row number staff see when they open the file: the header is row 1.
    """

    row: int | None
    column: str | None
    reason: str
    code: str

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason, "code": self.code}

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class FileRejected(Exception):
    """The file as a whole cannot be imported (format, size, type, columns…)."""

    def __init__(self, code: str, reason: str, column: str | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.column = column

    def as_error(self) -> RowError:
        return RowError(row=None, column=self.column, reason=self.reason, code=self.code)


@dataclass
class ImportOutcome:
    """The end of one import: what the log row and the file's folder say."""

    status: str
    import_type: str | None
    total_rows: int = 0
    success_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)
    folder: str = ""
    stored_path: str = ""
    log_id: int | None = None
    note: str = ""

    @property
    def error_rows(self) -> int:
        return self.total_rows - self.success_rows
