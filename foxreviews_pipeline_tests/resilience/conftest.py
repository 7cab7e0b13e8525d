"""Helpers for the resilience tests: `foxreviews run-day` as a subprocess, watched through the
Dagster instance, and a digest of the directory tables that ignores timestamps and run ids."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.lib.settings import PROJECT_ROOT, load_settings
from foxreviews_pipeline.run_day import project_instance
from foxreviews_pipeline_tests.pipeline import conftest as pipeline_conftest

DAY = "2026-11-20"

# The fixture that drops the Dagster database run-day creates beside the test database.
dagster_storage_db = pipeline_conftest.dagster_storage_db

# Content of the two tables the web app reads, by natural keys (ids, timestamps and run ids
# differ from one database to the other and from one run to the next).
DIGEST_SQL = """
SELECT
  (SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.siret), ''))
     FROM (SELECT siret, siren, nom, nom_commercial, adresse, code_postal, ville_nom,
                  code_commune, naf_code, naf_libelle, naf_nomenclature, naf25_code, is_active,
                  date_creation, date_fermeture, est_siege, tranche_effectifs, statut_diffusion,
                  date_dernier_traitement, source, last_partition, mapping_version
             FROM enterprise_entreprise) t),
  (SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.siret, t.slug, t.code_insee), ''))
     FROM (SELECT e.siret, s.slug, v.code_insee, p.is_active, p.deactivation_reason,
                  p.last_partition
             FROM enterprise_prolocalisation p
             JOIN enterprise_entreprise e ON e.id = p.entreprise_id
             JOIN subcategory_souscategorie s ON s.id = p.sous_categorie_id
             JOIN location_ville v ON v.id = p.ville_id) t),
  (SELECT count(*) FROM enterprise_entreprise),
  (SELECT count(*) FROM enterprise_prolocalisation)
"""


def table_digest(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(DIGEST_SQL).fetchone()


def foxreviews_command() -> list[str]:
    script = Path(sys.executable).with_name("foxreviews")
    return [str(script)] if script.exists() else [sys.executable, "-m", "foxreviews_pipeline.cli"]


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)  # platform_env has pointed FOXREVIEWS_* at the test database
    env.pop("DAGSTER_HOME", None)
    env.update(overrides)
    return env


def run_foxreviews(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(
        [*foxreviews_command(), *args], cwd=PROJECT_ROOT, env=env or subprocess_env(),
        check=False, capture_output=True, text=True, timeout=timeout,
    )


def start_run_day(env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*foxreviews_command(), "run-day", "--date", DAY], cwd=PROJECT_ROOT,
        env=env or subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_step_start(
    instance: dg.DagsterInstance, step_key: str, proc: subprocess.Popen, *, known: set[str],
    timeout_s: float = 300,
) -> str:
    """The run id of a run not in `known` once its STEP_START for `step_key` is stored."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run-day ended before {step_key} started: {proc.communicate()}"
        for run in instance.get_runs(limit=10):
            if run.run_id in known:
                continue
            starts = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_START
            ).records
            if any(r.event_log_entry.step_key == step_key for r in starts):
                return run.run_id
        time.sleep(0.1)
    raise AssertionError(f"no STEP_START of {step_key} within {timeout_s} s")


@pytest.fixture
def instance(platform_env, dagster_storage_db):
    """The project's Dagster instance on this test's databases (as run-day and the daemon see it)."""
    with project_instance(load_settings()) as inst:
        yield inst


class TcpProxy:
    """127.0.0.1:<port> → the PostgreSQL server; `cut()` closes the port and every connection,
    as a server lost mid-run would."""

    def __init__(self, target: tuple[str, int] | str):
        self._target = target  # (host, port), or a Unix socket's path
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                if isinstance(self._target, str):
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(self._target)
                else:
                    upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._listener.close()
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
