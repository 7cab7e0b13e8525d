"""The data database as the rest of the code sees it: a URL, migrated before first use."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg

from foxreviews_pipeline.lib.db.errors import probe, require_reachable
from foxreviews_pipeline.lib.db.migrations import migrate
from foxreviews_pipeline.lib.db.server import data_database_url, ensure_database, with_database
from foxreviews_pipeline.lib.settings import Settings

_Row = TypeVar("_Row")

_ready: set[str] = set()
_lock = threading.Lock()


def ready_database_url(settings: Settings) -> str:
    """Resolve the data database (starting the embedded server if needed), create it if it
    does not exist and apply pending migrations; done once per process."""
    url = data_database_url(settings)
    prepare(url)
    return url


def prepare(url: str) -> None:
    with _lock:
        if url in _ready:
            return
        ensure_database(url)
        migrate(url)
        _ready.add(url)


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection inside one transaction: committed on success, rolled back on error."""
    with psycopg.connect(url, application_name="foxreviews") as conn, conn.transaction():
        yield conn


def connect_like(conn: psycopg.Connection, application_name: str) -> psycopg.Connection:
    """Another connection to `conn`'s database, as the same user (work done beside it)."""
    return psycopg.connect(
        conn.info.dsn, password=conn.info.password or None, application_name=application_name
    )


def reachable_database_url(settings: Settings) -> str:
    """The data database's URL once it answers (starting the embedded server if needed);
    `DatabaseUnreachable`, one line without the password, otherwise."""
    url = data_database_url(settings)
    if probe(with_database(url, "postgres")) is None:
        # The server answers: create the data database if it is missing (a fresh embedded
        # server has none yet), as the first use of it would.
        with contextlib.suppress(psycopg.Error):
            ensure_database(url)
    require_reachable(url)
    return url


def one_row(cursor: psycopg.Cursor[_Row]) -> _Row:
    """The one row an executed query must return (an aggregate, a `RETURNING` of one row);
    a clear error, rather than a `None` to unpack, when it returned none."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a query that always returns one row returned none")
    return row
