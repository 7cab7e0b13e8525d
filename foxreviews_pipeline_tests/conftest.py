"""Test databases on a real PostgreSQL.

By default the suite starts its own embedded server in a temporary folder (what a user of
the README gets). With `FOXREVIEWS_TEST_DATABASE_URL` (e.g.
`postgresql://postgres@127.0.0.1:5432/postgres`) it uses that server instead. Either way
each test gets a fresh database, cloned from a migrated template, and dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from foxreviews_pipeline.lib.db.migrations import migrate
from foxreviews_pipeline.lib.db.server import (
    start_embedded_server,
    stop_embedded_server,
    with_database,
)

TEST_DB_PREFIX = "fxtest_"

# The schedule and ville_stats tests exercise the daylight-saving days of 2026 (March and
# October), before the default first partition: the suite's partitions start on 2026-01-01.
# (Set before any test imports the partitions definition; its default has its own test.)
os.environ["FOXREVIEWS_PARTITIONS_START"] = "2026-01-01"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A libpq URL of the `postgres` database of the server the tests use."""
    configured = os.environ.get("FOXREVIEWS_TEST_DATABASE_URL")
    if configured:
        yield with_database(configured, "postgres")
        return
    home = Path(tempfile.mkdtemp(prefix="fxpg-"))
    try:
        yield start_embedded_server(home)
    finally:
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(query)
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """A migrated database that each test's database is cloned from (fast)."""
    name = f"{TEST_DB_PREFIX}template_{uuid.uuid4().hex[:8]}"
    url = _create_database(pg_server_url, name)
    migrate(url)
    # A template must have no open connection when it is cloned.
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def new_database(pg_server_url: str, template_database: str):
    """A factory of fresh migrated databases, all dropped at the end of the test."""
    created: list[str] = []

    def make(migrated: bool = True) -> str:
        name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
        created.append(name)
        return _create_database(pg_server_url, name, template_database if migrated else None)

    yield make
    for name in created:
        drop_database(pg_server_url, name)


@pytest.fixture
def database_url(new_database) -> str:
    """A fresh, migrated, empty database for this test."""
    return new_database()


@pytest.fixture
def pg_conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as conn:
        yield conn


@pytest.fixture
def platform_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment a deployed platform would have, pointing at this test's database."""
    env = {
        "FOXREVIEWS_DATABASE_URL": database_url,
        "FOXREVIEWS_HOME": str(tmp_path / "home"),
        "FOXREVIEWS_SIRENE_SOURCE": "sample",
        "FOXREVIEWS_UPLOAD_DIR": str(tmp_path / "uploads"),
    }
    for name in list(os.environ):
        if name.startswith("FOXREVIEWS_") and name not in env and name != "FOXREVIEWS_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
