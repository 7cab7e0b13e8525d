"""A lost or unreachable database, told in one line.

The drivers (psycopg 3 for our data, psycopg2 under SQLAlchemy for Dagster's storage) report
a lost server in several shapes and many lines; the operator needs the cause and where.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg

from foxreviews_pipeline.lib.settings import redact_url

# Seconds a probe waits for the server: a host that drops packets would otherwise hang it.
PROBE_TIMEOUT_S = 10

# Exception class names, across drivers, that mean the connection to the server failed or
# was lost (psycopg/psycopg2 OperationalError also covers some server-side errors: those
# are told apart by probing the server).
_CONNECTION_ERROR_NAMES = {
    "OperationalError",
    "InterfaceError",
    "DagsterPostgresException",
    "AdminShutdown",
    "ConnectionFailure",
    "ConnectionException",
}
_CONNECTION_MESSAGES = re.compile(
    r"connection refused|server closed the connection|terminating connection|"
    r"could not connect|connection (?:is|already) (?:bad|closed|lost)|ssl connection has been closed|"
    r"too many retries for db connection|no route to host|timeout expired|"
    r"could not translate host name|consuming input failed|server conn crashed|the connection is lost",
    re.IGNORECASE,
)
_LIBPQ_PREFIX = re.compile(r'^.*?connection to server (?:at|on) .*? failed: ', re.IGNORECASE)
_DRIVER_PREFIX = re.compile(r"^\((?:[\w.]+)\)\s*")


class DatabaseUnreachable(RuntimeError):
    """The database cannot be reached; the message is one line, without the password."""

    def __init__(self, url: str, cause: str, what: str = "database"):
        self.url = redact_url(url)
        self.cause = cause
        super().__init__(f"{what} unreachable at {self.url}: {cause}")


def one_line_cause(message: str) -> str:
    """`connection refused` out of libpq's `connection to server at "h", port 5432 failed:
    Connection refused\\n\\tIs the server running…`."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    first = _DRIVER_PREFIX.sub("", lines[0]) if lines else "unknown error"
    first = _LIBPQ_PREFIX.sub("", first).strip() or first
    # The server's own severity word adds nothing to the line: `FATAL:  database … does not exist`.
    first = re.sub(r"^(FATAL|ERROR|PANIC):\s*", "", first) or first
    return first[:1].lower() + first[1:]


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def looks_like_connection_error(cls_name: str, message: str) -> bool:
    """Whether an error (by class name and message, e.g. from a run's recorded failure) is a
    failed or lost connection to PostgreSQL."""
    return cls_name in _CONNECTION_ERROR_NAMES and bool(_CONNECTION_MESSAGES.search(message or ""))


def connection_error_in(exc: BaseException) -> BaseException | None:
    """The first failed-or-lost-connection error in `exc`'s chain, if any."""
    for link in _chain(exc):
        if looks_like_connection_error(type(link).__name__, str(link)):
            return link
    return None


def probe(url: str, timeout_s: int = PROBE_TIMEOUT_S) -> str | None:
    """None when the database answers, else the one-line cause."""
    try:
        with psycopg.connect(url, connect_timeout=timeout_s, application_name="foxreviews") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return one_line_cause(str(exc))
    return None


def require_reachable(url: str) -> None:
    """Raise `DatabaseUnreachable` unless the database answers."""
    cause = probe(url)
    if cause is not None:
        raise DatabaseUnreachable(url, cause)
