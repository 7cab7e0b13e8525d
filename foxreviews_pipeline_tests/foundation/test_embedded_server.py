"""The embedded default: one server, shared by every process, surviving them, stoppable."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from foxreviews_pipeline.lib.db.server import stop_embedded_server

HOLDER = r"""
import sys, psycopg
from foxreviews_pipeline.lib.db.database import ready_database_url
from foxreviews_pipeline.lib.settings import load_settings
url = ready_database_url(load_settings())
with psycopg.connect(url) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS shared_probe (who text)")
    conn.execute("INSERT INTO shared_probe VALUES ('holder')")
    conn.commit()
    print(url, flush=True)
    sys.stdin.readline()  # keep the connection open until told
"""

READER = r"""
import psycopg
from foxreviews_pipeline.lib.db.database import ready_database_url
from foxreviews_pipeline.lib.settings import load_settings
url = ready_database_url(load_settings())
with psycopg.connect(url) as conn:
    print(url)
    print(conn.execute("SELECT string_agg(who, ',') FROM shared_probe").fetchone()[0])
    print(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'").fetchone()[0])
"""


@pytest.fixture
def embedded_home():
    home = Path(tempfile.mkdtemp(prefix="fxhome-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOXREVIEWS_")}
    env["FOXREVIEWS_HOME"] = str(home)
    yield home, env
    stop_embedded_server(home)
    shutil.rmtree(home, ignore_errors=True)


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "foxreviews_pipeline.cli", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_two_processes_share_one_server_that_keeps_its_data(embedded_home):
    home, env = embedded_home
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        holder_url = holder.stdout.readline().strip()
        reader = subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True,
                                text=True, timeout=120)
        assert reader.returncode == 0, reader.stderr
        reader_url, seen, clients = reader.stdout.split()
        assert reader_url == holder_url
        assert str(home / "pgdata") in holder_url
        assert seen == "holder"
        assert int(clients) == 2  # the holder's connection and the reader's, on one server
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0

    # The server outlives both processes…
    assert "running" in _cli(env, "db", "status").stdout
    # …stops on demand…
    assert _cli(env, "db", "stop").stdout.strip() == "embedded PostgreSQL stopped"
    assert "stopped" in _cli(env, "db", "status").stdout
    # …and starts again with its data.
    assert _cli(env, "db", "start").returncode == 0
    reader = subprocess.run([sys.executable, "-c", READER], env=env, capture_output=True, text=True, timeout=120)
    assert reader.stdout.split()[1] == "holder"
