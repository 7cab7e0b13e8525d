"""A database lost mid-run, or unreachable at start, ends `run-day` with one line naming the
cause (the password hidden), a non-zero exit code, and a next run that recovers."""

from __future__ import annotations

import re
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dagster as dg
import pytest

from .conftest import (
    DAY,
    TcpProxy,
    run_foxreviews,
    start_run_day,
    subprocess_env,
    wait_for_step_start,
)

PASSWORD = "s3cret-pw"


def _via(url: str, port: int) -> str:
    """`url` through 127.0.0.1:port, with a password (ignored by a trust server) to redact.
    A Unix-socket folder (`?host=…`, the embedded server) gives way to the TCP port."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@127.0.0.1:{port}", query=query))


def _server_address(url: str) -> tuple[str, int] | str:
    """Where the test's server listens: (host, port), or the Unix socket's path."""
    parts = urlsplit(url)
    port = parts.port or 5432
    socket_dir = dict(parse_qsl(parts.query)).get("host", "")
    if socket_dir.startswith("/"):
        return f"{socket_dir}/.s.PGSQL.{port}"
    return (parts.hostname or "127.0.0.1", port)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_database_lost_mid_run_ends_in_one_line_and_the_next_run_recovers(instance, database_url):
    proxy = TcpProxy(_server_address(database_url))
    env = subprocess_env(FOXREVIEWS_DATABASE_URL=_via(database_url, proxy.port))
    known = {run.run_id for run in instance.get_runs()}
    proc = start_run_day(env)
    try:
        run_id = wait_for_step_start(instance, "directory_day", proc, known=known)
        proxy.cut()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None)
    lines = _lines(out) + _lines(err)
    assert len(lines) <= 3, "\n".join(lines)
    assert re.fullmatch(
        rf"foxreviews: database unreachable at postgresql://postgres:\*\*\*@127\.0\.0\.1:{proxy.port}/"
        r"fxtest_\w+: connection refused",
        _lines(err)[-1],
    ), err
    assert PASSWORD not in out + err

    # The next run, with the database back, recovers the day and the dead run's leftovers.
    done = run_foxreviews("run-day", "--date", DAY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Day {DAY}: done in" in done.stdout
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize("command", [("run-day", "--date", DAY), ("check",)])
def test_an_unreachable_database_at_start_is_one_line(platform_env, database_url, command):
    port = _closed_port()
    done = run_foxreviews(*command, env=subprocess_env(FOXREVIEWS_DATABASE_URL=_via(database_url, port)))
    assert done.returncode != 0
    assert _lines(done.stdout) == []
    database = urlsplit(database_url).path.lstrip("/")
    expected = (
        f"foxreviews: database unreachable at postgresql://postgres:***@127.0.0.1:{port}/{database}: "
        "connection refused"
    )
    assert _lines(done.stderr) == [expected]


@pytest.mark.slow
def test_dagster_database_down_with_the_data_up_names_dagster_database(
    platform_env, database_url, dagster_storage_db, tmp_path
):
    """Dagster's storage refuses connections while the data database answers: the line
    names Dagster's database, not the data's."""
    import psycopg

    from foxreviews_pipeline.lib.db.server import with_database

    # Creates Dagster's database (its .env block goes to a file of the test's own).
    assert run_foxreviews("instance", "--env-file", str(tmp_path / ".env")).returncode == 0
    admin = with_database(database_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dagster_storage_db}" ALLOW_CONNECTIONS false')
    try:
        done = run_foxreviews("run-day", "--date", DAY)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dagster_storage_db}" ALLOW_CONNECTIONS true')
    assert done.returncode != 0
    last = _lines(done.stderr)[-1]
    assert last.startswith("foxreviews: Dagster's database unreachable at "), done.stderr[-2000:]
    assert dagster_storage_db in last and "not currently accepting connections" in last
