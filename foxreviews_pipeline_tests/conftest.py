"""Test databases on a real PostgreSQL.

By default the suite starts its own embedded server in a temporary folder (what a user of
the README gets). With `FOXREVIEWS_TEST_DATABASE_URL` (e.g.
`postgresql://postgres@127.0.0.1:5432/postgres`) it uses that server instead. Either way
each test gets a fresh database, cloned from a migrated template (or, for a test that asks
for `reference_db`, from a template with the reference data loaded), and dropped afterwards.

Ctrl-C stops the suite, even when it lands inside an in-process Dagster run: see
`_stop_requested`.
"""

from __future__ import annotations

import os
import shutil
import signal
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


# -- Ctrl-C -------------------------------------------------------------------------------
# While a run executes in process (`dg.materialize`, `execute_in_process`), Dagster replaces
# the SIGINT handler (and points SIGTERM at it): a Ctrl-C then becomes an error inside the
# running step, the run fails, the test fails, and on leaving the run Dagster forgets the
# signal -- so pytest went on with the next test. The interpreter's C-level handler writes
# every signal to the wakeup fd whichever Python handler is installed, so the suite reads
# that pipe after each test and, on SIGINT or SIGTERM, stops as Ctrl-C does.
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
_wakeup: tuple[int, int] | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _wakeup
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    _wakeup = (read, write)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _wakeup
    if _wakeup is None:
        return
    current = signal.set_wakeup_fd(-1)
    if current != _wakeup[1]:  # not ours: leave it as it was
        signal.set_wakeup_fd(current)
    for fd in _wakeup:
        os.close(fd)
    _wakeup = None


def _stop_requested() -> bool:
    """Whether SIGINT or SIGTERM reached this process since the last look (and re-arm the
    wakeup fd, in case a test's code replaced it)."""
    if _wakeup is None:
        return False
    read, write = _wakeup
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    seen = False
    try:
        while data := os.read(read, 512):
            seen = seen or any(b in _STOP_SIGNALS for b in data)
    except BlockingIOError:
        pass
    return seen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        result = yield
    except KeyboardInterrupt:
        # Interrupted before its reports, the test's `tmp_path` has no result recorded, and
        # pytest's teardown of it at the end of the session would fail with a KeyError.
        from _pytest.tmpdir import tmppath_result_key

        item.stash.setdefault(tmppath_result_key, {})
        raise
    if _stop_requested():  # the test ran to its end, reported and torn down: stop here
        raise KeyboardInterrupt
    return result


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


@pytest.fixture(scope="session")
def reference_template(pg_server_url: str, template_database: str) -> Iterator[str]:
    """The migrated template with the NAF codes, the taxonomy and the communes loaded, made
    once for the session (loading them takes longer than cloning a database)."""
    from foxreviews_pipeline_tests.pipeline.conftest import load_reference

    name = f"{TEST_DB_PREFIX}reftemplate_{uuid.uuid4().hex[:8]}"
    url = _create_database(pg_server_url, name, template_database)
    load_reference(url)
    yield name
    drop_database(pg_server_url, name)


@pytest.fixture
def new_database(pg_server_url: str, template_database: str, request: pytest.FixtureRequest):
    """A factory of fresh migrated databases, all dropped at the end of the test."""
    created: list[str] = []

    def make(migrated: bool = True, *, reference: bool = False) -> str:
        name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
        created.append(name)
        template = template_database if migrated else None
        if reference:
            template = request.getfixturevalue("reference_template")
        return _create_database(pg_server_url, name, template)

    yield make
    for name in created:
        drop_database(pg_server_url, name)


@pytest.fixture
def database_url(new_database, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated, empty database for this test (with the reference data when the test
    also asks for `reference_db`)."""
    return new_database(reference="reference_db" in request.fixturenames)


@pytest.fixture
def reference_db(database_url: str) -> str:
    """A migrated database with the NAF codes, the taxonomy and the communes loaded: this
    test's `database_url`, cloned from `reference_template`."""
    return database_url


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
