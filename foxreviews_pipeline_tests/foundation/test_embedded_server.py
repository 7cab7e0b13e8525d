"""The embedded default: one server, shared by every process, surviving them, stoppable,
and keeping its data across a stop and a start."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from foxreviews_pipeline.lib.db.server import stop_embedded_server

# Process A: attaches (starting the server if needed), writes a row, and keeps its
# connection open until told to finish.
HOLDER = r"""
import sys, psycopg
from foxreviews_pipeline.lib.db.database import ready_database_url
from foxreviews_pipeline.lib.settings import load_settings
url = ready_database_url(load_settings())
with psycopg.connect(url) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS shared_probe (who text)")
    conn.execute("INSERT INTO shared_probe VALUES ('holder')")
    conn.commit()
    started = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()[0]
    print(url, flush=True)
    print(started, flush=True)
    sys.stdin.readline()
"""

# Process B: a plain psycopg client on the URL `foxreviews db url` printed.
READER = r"""
import sys, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    print(conn.execute("SELECT string_agg(who, ',') FROM shared_probe").fetchone()[0])
    print(conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend'"
    ).fetchone()[0])
    print(conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()[0])
"""


@pytest.fixture
def embedded_home():
    """A fresh FOXREVIEWS_HOME and an environment with no FOXREVIEWS_DATABASE_URL; the
    server started in it is stopped and the folder removed whatever happens."""
    home = Path(tempfile.mkdtemp(prefix="fxhome-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_")}
    env["FOXREVIEWS_HOME"] = str(home)
    try:
        yield home, env
    finally:
        # Stopped from a separate process, as an operator would: the test process itself
        # never attaches to this server (nor points its runtime folder into `home`).
        try:
            stopped = subprocess.run([*_foxreviews(), "db", "stop"], env=env, capture_output=True,
                                     timeout=120).returncode == 0
        except subprocess.SubprocessError:
            stopped = False
        try:
            if not stopped:
                stop_embedded_server(home)
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _foxreviews() -> list[str]:
    script = Path(sys.executable).with_name("foxreviews")
    return [str(script)] if script.exists() else [sys.executable, "-m", "foxreviews_pipeline.cli"]


def _cli(env, *args) -> str:
    result = subprocess.run([*_foxreviews(), *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def _read(env, url) -> list[str]:
    result = subprocess.run([sys.executable, "-c", READER, url], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split("\n")


@pytest.mark.slow
def test_two_processes_share_one_server_that_keeps_its_data(embedded_home):
    home, env = embedded_home
    pgdata = home / "pgdata"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        holder_url = holder.stdout.readline().strip()
        holder_started = holder.stdout.readline().strip()
        assert holder_url, holder.stderr.read() if holder.poll() is not None else "no URL printed"
        assert f"host={pgdata}" in holder_url  # the Unix socket in the data folder
        # While A still holds its connection, B finds the same server…
        url = _cli(env, "db", "url")
        assert url == holder_url
        seen, clients, started = _read(env, url)[:3]
        assert seen == "holder"
        assert int(clients) == 2  # A's connection and B's, on one server at once
        assert started == holder_started
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0

    # The server outlives both processes…
    assert _cli(env, "db", "status").startswith(f"embedded PostgreSQL in {pgdata}: running, pid ")
    # …stops on demand…
    assert _cli(env, "db", "stop") == "embedded PostgreSQL stopped"
    assert _cli(env, "db", "status") == f"embedded PostgreSQL in {pgdata}: stopped"
    assert _cli(env, "db", "stop") == "embedded PostgreSQL was not running"
    # …and starts again, a new server process on the same data.
    assert _cli(env, "db", "start") == "embedded PostgreSQL ready"
    assert "running" in _cli(env, "db", "status")
    seen, _, started = _read(env, _cli(env, "db", "url"))[:3]
    assert seen == "holder"
    assert started != holder_started
