"""End to end: a file dropped into incoming/ while the Dagster daemon runs is noticed by the
sensor, imported by a run, and archived, with its rows in PostgreSQL and a SUCCESS log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from foxreviews_pipeline.instance import write_instance_yaml
from foxreviews_pipeline.lib.db.server import dagster_storage_url, database_name
from foxreviews_pipeline.lib.settings import load_settings
from foxreviews_pipeline_tests.conftest import drop_database
from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, UploadEnv

CODE_LOCATION_MODULE = "foxreviews_pipeline.definitions"
# The sensor takes a file once it has been unchanged for the quiet period (60 s by default),
# seen by ticks 15 s apart; then the run starts and imports.
DEADLINE_S = 85 + 75


@pytest.mark.slow
def test_file_dropped_while_the_daemon_runs_ends_archived(
    env: UploadEnv, tmp_path: Path, pg_server_url: str
):
    dagster_home = tmp_path / "dagster_home"
    write_instance_yaml(dagster_home)
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FOXREVIEWS_", "DAGSTER_"))
    }
    child_env.update(
        DAGSTER_HOME=str(dagster_home),
        FOXREVIEWS_DAGSTER_DATABASE_URL=dagster_storage_url(load_settings({"FOXREVIEWS_DATABASE_URL": env.url})),
        FOXREVIEWS_DATABASE_URL=env.url,
        FOXREVIEWS_HOME=str(tmp_path / "home"),
        FOXREVIEWS_UPLOAD_DIR=str(env.paths.root),
        FOXREVIEWS_SIRENE_SOURCE="sample",
        # A short quiet period, once settings.py reads it (the deadline allows the default).
        FOXREVIEWS_UPLOAD_QUIET_SECONDS="5",
    )
    log_file = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-m", CODE_LOCATION_MODULE],
        cwd=tmp_path,
        env=child_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        time.sleep(3)
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
        env.drop(
            "entreprises_e2e.csv",
            f"siret;nom;code_postal;ville_nom;naf_code\n"
            f"{SIRET_A};BOULANGERIE MARTIN;69001;Lyon;10.71C\n"
            f"{SIRET_B};PLOMBERIE DUPONT;69002;Lyon;43.22A\n",
        )
        status = None
        while time.monotonic() - started < DEADLINE_S:
            rows = env.query("SELECT status, stored_path, run_id FROM core_importlog")
            status = rows[0][0] if rows else None
            if status in ("SUCCESS", "PARTIAL", "ERROR"):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(1)
        assert status == "SUCCESS", (tmp_path / "daemon.log").read_text()[-3000:]
        [(_, stored_path, run_id)] = rows
        assert run_id
        assert (env.paths.root / stored_path).is_file() and stored_path.startswith("archive/")
        assert env.files("incoming") == env.files("processing") == env.files("rejected") == []
        assert env.query("SELECT siret, nom, source FROM enterprise_entreprise ORDER BY siret") == [
            (SIRET_B, "PLOMBERIE DUPONT", "upload"),
            (SIRET_A, "BOULANGERIE MARTIN", "upload"),
        ]
        assert env.query("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active") == [
            (2,)
        ]
    finally:
        # The daemon's code server runs in a process group of its own: take note of every
        # descendant first, so none outlives the test.
        try:
            descendants = psutil.Process(daemon.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(descendants, timeout=10)
        log_file.close()
        drop_database(pg_server_url, database_name(env.url) + "_dagster")
