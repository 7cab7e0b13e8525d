"""The web app's import log (`core_importlog`): one row per file, PENDING → PROCESSING →
SUCCESS / PARTIAL / ERROR. Every row ends in one of the last three, also when its file is
removed or changes before it is imported (ERROR, with `file_missing` or `file_changed`).

The statuses are the web app's own choices; a file refused for what it is (a duplicate, a
bad format) is ERROR with an error code saying so, rather than a status the web app does not
know.

`stored_path` is relative to the upload folder (`processing/…`, `archive/…`,
`rejected/…`) and always names where the file is now (NULL when it is in none of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from foxreviews_pipeline.lib.uploads.model import (
    ERROR,
    PENDING,
    PROCESSING,
    ImportOutcome,
    RowError,
)

# Beyond this many row errors only a summary entry is kept, so that a file of 50,000 bad
# rows does not turn the log row into megabytes of JSON.
MAX_LOGGED_ERRORS = 5_000

DUPLICATE_CODE = "duplicate_upload"
FAILED_CODE = "import_failed"
# The file was removed before its import, or changed after it was taken: nothing imported.
MISSING_CODE = "file_missing"
CHANGED_CODE = "file_changed"
# Rows whose content was never imported nor refused for what it is: the same content
# dropped again is a new upload, not a duplicate of them.
NOT_AN_ORIGINAL = (DUPLICATE_CODE, MISSING_CODE, CHANGED_CODE)


@dataclass(frozen=True)
class LogRow:
    id: int
    file_name: str
    file_type: str | None
    status: str
    content_sha256: str | None
    stored_path: str | None
    created_at: datetime


_FIELDS = "id, file_name, file_type, status, content_sha256, stored_path, created_at"


def errors_json(errors: list[RowError]) -> Jsonb:
    entries = [e.as_json() for e in errors[:MAX_LOGGED_ERRORS]]
    if len(errors) > MAX_LOGGED_ERRORS:
        entries.append(
            {
                "row": None,
                "column": None,
                "reason": f"… and {len(errors) - MAX_LOGGED_ERRORS} more errors not listed",
                "code": "truncated",
            }
        )
    return Jsonb(entries)


def create(
    conn: psycopg.Connection,
    *,
    file_name: str,
    file_type: str | None,
    content_sha256: str | None,
    stored_path: str,
    status: str = PENDING,
    errors: list[RowError] | None = None,
    note: str = "",
) -> int:
    finished = status not in (PENDING, PROCESSING)
    row = conn.execute(
        """
        INSERT INTO core_importlog (file_name, file_type, status, content_sha256, stored_path,
                                    errors, note, completed_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)
        RETURNING id
        """,
        (
            file_name,
            file_type,
            status,
            content_sha256,
            stored_path,
            errors_json(errors or []),
            note,
            finished,
        ),
    ).fetchone()
    assert row is not None  # INSERT … RETURNING returns the row it inserted
    return int(row[0])


def original_import(conn: psycopg.Connection, content_sha256: str) -> LogRow | None:
    """The first log row of this content that was not itself a rejected duplicate (nor a
    file that went missing or changed before its import)."""
    row = conn.execute(
        f"""
        SELECT {_FIELDS} FROM core_importlog
        WHERE content_sha256 = %s
          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(errors) e WHERE e->>'code' = ANY(%s))
        ORDER BY id LIMIT 1
        """,
        (content_sha256, list(NOT_AN_ORIGINAL)),
    ).fetchone()
    return LogRow(*row) if row else None


def open_rows(conn: psycopg.Connection) -> list[LogRow]:
    """Rows not finished yet (PENDING or PROCESSING)."""
    rows = conn.execute(
        f"SELECT {_FIELDS} FROM core_importlog WHERE status IN (%s, %s) ORDER BY id",
        (PENDING, PROCESSING),
    ).fetchall()
    return [LogRow(*row) for row in rows]


def get_row(conn: psycopg.Connection, log_id: int) -> LogRow | None:
    row = conn.execute(f"SELECT {_FIELDS} FROM core_importlog WHERE id = %s", (log_id,)).fetchone()
    return LogRow(*row) if row else None


def latest_for_stored_name(conn: psycopg.Connection, stored_name: str) -> LogRow | None:
    row = conn.execute(
        f"""
        SELECT {_FIELDS} FROM core_importlog
        WHERE stored_path = ANY(%s)
        ORDER BY id DESC LIMIT 1
        """,
        ([f"{folder}/{stored_name}" for folder in ("processing", "archive", "rejected")],),
    ).fetchone()
    return LogRow(*row) if row else None


def start(conn: psycopg.Connection, log_id: int, run_id: str | None) -> None:
    conn.execute(
        """
        UPDATE core_importlog
        SET status = %s, run_id = %s, started_at = now(), completed_at = NULL,
            total_rows = 0, success_rows = 0, error_rows = 0, errors = '[]'::jsonb,
            note = '', updated_at = now()
        WHERE id = %s
        """,
        (PROCESSING, run_id, log_id),
    )


def finish(conn: psycopg.Connection, log_id: int, outcome: ImportOutcome) -> None:
    conn.execute(
        """
        UPDATE core_importlog
        SET status = %s, file_type = coalesce(%s, file_type), total_rows = %s,
            success_rows = %s, error_rows = %s, errors = %s, note = %s, stored_path = %s,
            completed_at = now(), updated_at = now()
        WHERE id = %s
        """,
        (
            outcome.status,
            outcome.import_type,
            outcome.total_rows,
            outcome.success_rows,
            outcome.error_rows,
            errors_json(outcome.errors),
            outcome.note,
            outcome.stored_path,
            log_id,
        ),
    )


def fail(
    conn: psycopg.Connection, log_id: int, reason: str, *, stored_path: str | None = None
) -> None:
    """An import that broke (not a bad file): the log says so and where the file now is."""
    conn.execute(
        """
        UPDATE core_importlog
        SET status = %s, errors = %s, note = %s, stored_path = coalesce(%s, stored_path),
            completed_at = now(), updated_at = now()
        WHERE id = %s
        """,
        (
            ERROR,
            Jsonb([{"row": None, "column": None, "reason": reason, "code": FAILED_CODE}]),
            f"the import failed and can be re-run: {reason}",
            stored_path,
            log_id,
        ),
    )


def close_unimported(
    conn: psycopg.Connection,
    log_id: int,
    *,
    code: str,
    reason: str,
    stored_path: str | None,
    only_open: bool = False,
) -> bool:
    """End a row ERROR for a file that was not imported and is not to blame (it went missing,
    or changed while being taken). With `only_open`, a row already finished is left alone.
    Whether the row was changed."""
    row = conn.execute(
        f"""
        UPDATE core_importlog
        SET status = %s, errors = %s, note = %s, stored_path = %s, total_rows = 0,
            success_rows = 0, error_rows = 0, completed_at = now(), updated_at = now()
        WHERE id = %s {"AND status IN (%s, %s)" if only_open else ""}
        RETURNING id
        """,
        (
            ERROR,
            Jsonb([{"row": None, "column": None, "reason": reason, "code": code}]),
            reason,
            stored_path,
            log_id,
            *((PENDING, PROCESSING) if only_open else ()),
        ),
    ).fetchone()
    return row is not None


def get(conn: psycopg.Connection, log_id: int) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM core_importlog WHERE id = %s", (log_id,))
    row = cur.fetchone()
    if row is None or cur.description is None:
        raise KeyError(f"no import log row {log_id}")
    return dict(zip([d.name for d in cur.description], row, strict=True))
