"""Unattended on one machine: a gRPC code server, the webserver and the daemon as three
processes, started as the README and the systemd units start them (from the project folder,
nothing else in their environment), on PostgreSQL.

A partition launched through the webserver's GraphQL API succeeds, the daemon evaluates the
upload sensor, the webserver and the daemon get over a code server killed and started again,
and every process stops on SIGINT, leaving no child behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from foxreviews_pipeline_tests.operations.conftest import bare_env, tool
from foxreviews_pipeline_tests.pipeline.conftest import load_reference

# The GraphQL client's own dependency warns about its call style; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")

DAY = "2026-11-20"
LOCATION = "foxreviews"
WAIT_S = 600  # generous: the machine is shared

# Background processes of a non-interactive shell inherit SIGINT (and here SIGTERM) ignored;
# systemd starts services with default handlers, so the test does too.
_DEFAULT_SIGNALS_THEN_EXEC = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, name: str, command: list[str], folder: Path, logs: Path):
        self.name, self.command, self.folder, self.log_path = name, command, folder, logs / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.seen: list[psutil.Process] = []

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _DEFAULT_SIGNALS_THEN_EXEC, *self.command],
            cwd=self.folder, env=bare_env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach its children
        )
        log.close()

    def note_children(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.seen += psutil.Process(self.process.pid).children(recursive=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 90) -> bool:
        """Signal the process group; True when the service exited on its own."""
        if self.process is None:
            return True
        self.note_children()
        clean = True
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                clean = False
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return clean

    def reap(self) -> list[psutil.Process]:
        """Kill whatever child is left; return those that were still alive."""
        alive = [p for p in self.seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        return alive


def wait_for(what: str, check: Callable[[], object], services: list[Service], timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            service.note_children()
            assert service.process.poll() is None, f"{service.name} exited:\n{service.log()}"
        try:
            value = check()
        except (requests.RequestException, OSError):
            value = None
        if value:
            return value
        time.sleep(1)
    logs = "\n".join(f"--- {s.name}\n{s.log()}" for s in services)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    response = requests.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": query, "variables": variables or {}},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["data"]


LOCATION_STATUS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename }
} } } }
"""

SENSOR_TICKS = """
query ($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { ticks(limit: 50) { status timestamp } } }
} }
"""


def location_loaded(port: int) -> bool:
    entries = graphql(port, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
    return any(
        e["name"] == LOCATION and e["locationOrLoadError"]
        and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        for e in entries
    )


def location_failed(port: int) -> bool:
    entries = graphql(port, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
    return any(
        e["name"] == LOCATION and e["locationOrLoadError"]
        and e["locationOrLoadError"]["__typename"] == "PythonError"
        for e in entries
    )


def sensor_ticks(port: int, after: float = 0.0) -> list[dict]:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                "sensorName": "upload_sensor"}
    data = graphql(port, SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    ticks = data["sensorState"]["ticks"] if data["__typename"] == "Sensor" else []
    return [t for t in ticks if t["timestamp"] > after and t["status"] in ("SKIPPED", "SUCCESS")]


@pytest.fixture
def services(project_folder: Path, tmp_path: Path) -> Iterator[dict]:
    grpc_port, web_port = _free_port(), _free_port()
    workspace = project_folder / "deploy" / "workspace.yaml"
    workspace.write_text(workspace.read_text().replace("port: 4266", f"port: {grpc_port}"))
    logs = tmp_path / "logs"
    logs.mkdir()
    made = {
        "code_server": Service("code_server", [
            tool("dagster"), "code-server", "start", "-m", "foxreviews_pipeline.definitions",
            "--location-name", LOCATION, "-h", "127.0.0.1", "-p", str(grpc_port)],
            project_folder, logs),
        "webserver": Service("webserver", [
            tool("dagster-webserver"), "-w", "deploy/workspace.yaml", "-h", "127.0.0.1",
            "-p", str(web_port)], project_folder, logs),
        "daemon": Service("daemon", [tool("dagster-daemon"), "run", "-w", "deploy/workspace.yaml"],
                          project_folder, logs),
        "web_port": web_port,
    }
    try:
        yield made
    finally:
        for name in ("daemon", "webserver", "code_server"):
            made[name].stop(signal.SIGKILL, timeout=30)
            made[name].reap()


def start_all(services: dict) -> tuple[Service, Service, Service, int, list[Service]]:
    """Start the three services and wait until the webserver has loaded the code location."""
    code_server, webserver, daemon = services["code_server"], services["webserver"], services["daemon"]
    port = services["web_port"]
    everyone = [code_server, webserver, daemon]
    for service in everyone:
        service.start()
    wait_for("the webserver to load the code location", lambda: location_loaded(port), everyone)
    return code_server, webserver, daemon, port, everyone


@pytest.mark.slow
def test_three_services_run_a_partition_and_survive_a_code_server_restart(
    services, database_url, platform_env
):
    load_reference(database_url)
    code_server, webserver, daemon, port, everyone = start_all(services)

    # A partition, launched through the webserver's GraphQL API; the daemon dequeues it.
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "sirene_daily", repository_location_name=LOCATION, tags={"dagster/partition": DAY}
    )
    status = wait_for(
        "the partition's run to finish",
        lambda: (s := client.get_run_status(run_id).value) in ("SUCCESS", "FAILURE", "CANCELED") and s,
        everyone,
    )
    assert status == "SUCCESS", "\n".join(s.log() for s in everyone)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0] > 30_000

    # The daemon evaluates the upload sensor (running by default) and records its ticks.
    wait_for("an upload sensor tick", lambda: sensor_ticks(port), everyone)

    # The code server dies: the webserver shows the location failing, the daemon carries on.
    code_server.stop(signal.SIGKILL, timeout=30)
    code_server.reap()
    wait_for("the webserver to notice", lambda: location_failed(port), [webserver, daemon])
    time.sleep(3)
    assert daemon.process.poll() is None, daemon.log()

    restarted = time.time()
    code_server.start()
    wait_for("the webserver to reload the location", lambda: location_loaded(port), everyone)
    wait_for("a sensor tick after the restart", lambda: sensor_ticks(port, after=restarted), everyone)
    run_id = client.submit_job_execution("ville_stats_refresh", repository_location_name=LOCATION)
    status = wait_for(
        "a run after the restart",
        lambda: (s := client.get_run_status(run_id).value) in ("SUCCESS", "FAILURE", "CANCELED") and s,
        everyone,
    )
    assert status == "SUCCESS", "\n".join(s.log() for s in everyone)

    # A clean stop: each service exits on SIGINT (as systemd's KillSignal), no child survives.
    for service in (daemon, webserver, code_server):
        assert service.stop(signal.SIGINT), f"{service.name} ignored SIGINT:\n{service.log()}"
    for service in everyone:
        assert service.reap() == [], f"{service.name} left children behind"


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
} }
"""
BACKFILL_STATUS = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs(limit: 10) { runId status } }
} }
"""
STOCK_BACKFILL = ("75", "69", "2A")


@pytest.mark.slow
def test_a_stock_backfill_of_three_partitions_runs_one_run_each(
    services, database_url, platform_env, tmp_path
):
    """The stock staged by one run, then three départements backfilled from the webserver as
    the UI launches them: the daemon submits one run per partition under the pool."""
    from foxreviews_pipeline.sample.stock_files import write_sample_stock

    load_reference(database_url)
    path, ul = tmp_path / "StockEtablissement_utf8.zip", tmp_path / "StockUniteLegale_utf8.zip"
    write_sample_stock(path, 3000, unites_legales_path=ul, seed=11)
    code_server, webserver, daemon, port, everyone = start_all(services)

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    run_id = client.submit_job_execution(
        "sirene_stock_stage",
        repository_location_name=LOCATION,
        run_config={"ops": {"sirene_stock": {"config": {"path": str(path), "unites_legales_path": str(ul)}}}},
    )
    status = wait_for(
        "the staging run to finish",
        lambda: (s := client.get_run_status(run_id).value) in ("SUCCESS", "FAILURE", "CANCELED") and s,
        everyone,
    )
    assert status == "SUCCESS", "\n".join(s.log() for s in everyone)

    params = {
        "assetSelection": [{"path": ["stock_entreprises"]}, {"path": ["stock_pro_localisations"]}],
        "partitionNames": list(STOCK_BACKFILL),
    }
    launched = graphql(port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished() -> dict | None:
        backfill = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        return backfill if backfill["status"] not in ("REQUESTED",) else None

    backfill = wait_for("the backfill to finish", finished, everyone)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        backfill, "\n".join(s.log() for s in everyone))
    assert len(backfill["runs"]) == 3 and {r["status"] for r in backfill["runs"]} == {"SUCCESS"}
    with psycopg.connect(database_url) as conn:
        loaded = dict(conn.execute(
            "SELECT last_partition, count(*) FROM enterprise_entreprise GROUP BY 1"
        ).fetchall())
        staged = conn.execute("SELECT rows_by_partition FROM sirene_stock.staged").fetchone()[0]
        pages = conn.execute(
            "SELECT count(*) FROM enterprise_prolocalisation WHERE last_partition LIKE 'stock:%'"
        ).fetchone()[0]
    assert set(loaded) == {f"stock:{p}" for p in STOCK_BACKFILL}
    for partition in STOCK_BACKFILL:
        # Every staged row of the partition is stored, but the few the mapping rejects.
        assert 0.9 * staged[partition] <= loaded[f"stock:{partition}"] <= staged[partition]
    assert pages > 0
    for service in (daemon, webserver, code_server):
        assert service.stop(signal.SIGINT), f"{service.name} ignored SIGINT:\n{service.log()}"
