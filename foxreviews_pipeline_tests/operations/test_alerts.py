"""Alerts: a failed run (a held-back day among them) and an asset turning stale each post one
Slack-compatible message to FOXREVIEWS_ALERT_WEBHOOK_URL, here a local receiver; nothing is
sent when it is unset, and a receiver that is down costs one warning, never a failed tick."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from foxreviews_pipeline.defs.alerts import (
    AlertWebhook,
    freshness_alert,
    run_failure_alert,
)
from foxreviews_pipeline.lib.alerts import post_alert
from foxreviews_pipeline.lib.settings import load_settings
from foxreviews_pipeline_tests.operations.alerts_location import location
from foxreviews_pipeline_tests.operations.conftest import bare_env, tool
from foxreviews_pipeline_tests.pipeline.conftest import load_reference

DAY = "2026-11-20"
UI = "http://fox-ui.example:3000"
SECRET_PATH = "/services/T000/B000/s3cr3t-path"
SECRET_QUERY = "token=t0k3n"


class Receiver:
    """A webhook on 127.0.0.1 that records the body of every POST and answers `status`."""

    def __init__(self, status: int = 200):
        self.status = status
        self.posts: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, self.headers.get("Content-Type") or "", body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}?{SECRET_QUERY}"

    def messages(self) -> list[dict]:
        return [json.loads(body) for _, _, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- post_alert -----------------------------------------------------------------------------


def test_post_alert_sends_one_slack_message(receiver):
    assert post_alert(receiver.url, "day 2026-11-20 held back", timeout=5) is True
    [(path, content_type, _)] = receiver.posts
    assert path == f"{SECRET_PATH}?{SECRET_QUERY}"
    assert content_type == "application/json"
    assert receiver.messages() == [{"text": "day 2026-11-20 held back"}]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_receiver_that_is_down_costs_one_warning_naming_its_host_only(caplog):
    url = f"http://127.0.0.1:{_closed_port()}{SECRET_PATH}?{SECRET_QUERY}"
    with caplog.at_level(logging.WARNING):
        assert post_alert(url, "hello", timeout=2) is False
    [warning] = _warnings(caplog)
    assert "127.0.0.1" in warning and "cannot connect" in warning
    assert "s3cr3t" not in warning and "t0k3n" not in warning and "services" not in warning


def test_a_receiver_that_answers_an_error_costs_one_warning(receiver, caplog):
    receiver.status = 500
    with caplog.at_level(logging.WARNING):
        assert post_alert(receiver.url, "hello", timeout=5) is False
    [warning] = _warnings(caplog)
    assert "HTTP 500" in warning and "127.0.0.1" in warning
    assert "s3cr3t" not in warning and "t0k3n" not in warning


# -- the run failure sensor -----------------------------------------------------------------


@dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"))
def broken_day() -> None:
    raise dg.Failure(
        description="Day held back, nothing published: blocking check failed: x:y (3 offending)",
        allow_retries=False,
    )


def _failed_run(instance: dg.DagsterInstance) -> tuple[dg.DagsterRun, dg.DagsterEvent]:
    result = dg.materialize([broken_day], partition_key=DAY, instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE]
    return run, failure


def test_with_the_webhook_unset_both_sensors_skip_saying_so(receiver):
    unset = AlertWebhook(ui_url=UI)
    with dg.instance_for_test() as instance:
        run, failure = _failed_run(instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_event=failure, dagster_instance=instance,
            dagster_run=run, resources={"alert_webhook": unset},
        ).for_run_failure()
        skipped = run_failure_alert(context, alert_webhook=unset)
        assert isinstance(skipped, dg.SkipReason)
        assert "FOXREVIEWS_ALERT_WEBHOOK_URL is unset" in (skipped.skip_message or "")

        for cursor in (None, "-1"):
            data = freshness_alert.evaluate_tick(dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"alert_webhook": unset}
            ))
            assert "FOXREVIEWS_ALERT_WEBHOOK_URL is unset" in (data.skip_message or "")
    assert receiver.posts == []


def test_a_failed_run_through_the_context_posts_its_job_partition_reason_and_link(receiver):
    webhook = AlertWebhook(webhook_url=receiver.url, ui_url=UI)
    with dg.instance_for_test() as instance:
        run, failure = _failed_run(instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_event=failure, dagster_instance=instance,
            dagster_run=run, resources={"alert_webhook": webhook},
        ).for_run_failure()
        assert run_failure_alert(context, alert_webhook=webhook) is None
    [message] = receiver.messages()
    text = message["text"]
    assert f"`{run.job_name}`" in text and f"partition {DAY}" in text
    assert "broken_day: Day held back, nothing published: blocking check failed: x:y" in text
    assert f"{UI}/runs/{run.run_id}" in text


def _tick(sensor: dg.SensorDefinition, instance, cursor: str | None, webhook: AlertWebhook):
    return sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alert_webhook": webhook}
    ))


def test_a_held_back_day_posts_one_alert_and_no_more(platform_env, database_url, receiver, monkeypatch):
    """The day's job on a real instance, held back because no ville is loaded: the sensor,
    evaluated against the instance as the daemon evaluates it, posts once."""
    load_reference(database_url, villes=False)
    monkeypatch.setenv("FOXREVIEWS_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("FOXREVIEWS_UI_URL", UI + "/")
    settings = load_settings()
    defs = location(settings)
    webhook = defs.resources["alert_webhook"]
    assert isinstance(webhook.webhook_url, dg.EnvVar)  # by name: never shown in the UI

    with dg.instance_for_test() as instance:
        first = _tick(run_failure_alert, instance, None, webhook)
        assert "Initiating" in (first.skip_message or "")
        result = defs.resolve_job_def("sirene_daily").execute_in_process(
            partition_key=DAY, instance=instance, raise_on_error=False
        )
        assert not result.success
        data = _tick(run_failure_alert, instance, first.cursor, webhook)
        [message] = receiver.messages()
        again = _tick(run_failure_alert, instance, data.cursor, webhook)
        assert len(receiver.messages()) == 1
        assert again.cursor == data.cursor

    text = message["text"]
    assert "`sirene_daily`" in text and f"partition {DAY}" in text
    assert "held back, nothing published: blocking check failed:" in text
    assert "villes_resolved" in text
    assert f"{UI}/runs/{result.run_id}" in text
    assert "\n" not in text.split("Reason: ", 1)[1].split("\n", 1)[0]  # the reason: one line


def test_a_receiver_that_is_down_never_fails_the_tick(capfd):
    down = AlertWebhook(webhook_url=f"http://127.0.0.1:{_closed_port()}{SECRET_PATH}", ui_url=UI)
    with dg.instance_for_test() as instance:
        first = _tick(run_failure_alert, instance, None, down)
        _failed_run(instance)
        capfd.readouterr()
        data = _tick(run_failure_alert, instance, first.cursor, down)  # raises nothing
        assert data.cursor != first.cursor  # handled: not sent again
    # One warning, in the tick's log, naming the host only.
    logged = capfd.readouterr()
    warnings = [line for line in (logged.out + logged.err).splitlines() if "alert not sent" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "127.0.0.1" in warnings[0]
    assert "s3cr3t" not in warnings[0] and "services" not in warnings[0]


# -- the freshness sensor -------------------------------------------------------------------


def _change(key: str, previous: FreshnessState, new: FreshnessState, at: float) -> FreshnessStateChange:
    return FreshnessStateChange(
        key=dg.AssetKey(key), previous_state=previous, new_state=new, state_change_timestamp=at
    )


def test_a_freshness_fail_is_announced_once_per_transition(receiver):
    webhook = AlertWebhook(webhook_url=receiver.url, ui_url=UI)
    with dg.instance_for_test() as instance:
        # Before the sensor's first tick: not announced afterwards.
        instance.report_runless_asset_event(
            _change("etablissements_raw", FreshnessState.WARN, FreshnessState.FAIL, time.time())
        )
        cursor = _tick(freshness_alert, instance, None, webhook).cursor
        assert receiver.posts == []

        stale_at = datetime(2026, 11, 18, 9, 46, tzinfo=UTC).timestamp()
        for previous, new in (
            (FreshnessState.PASS, FreshnessState.WARN),
            (FreshnessState.WARN, FreshnessState.FAIL),
        ):
            instance.report_runless_asset_event(_change("entreprises", previous, new, stale_at))
        data = _tick(freshness_alert, instance, cursor, webhook)
        [message] = receiver.messages()
        assert "entreprises" in (data.skip_message or "")
        again = _tick(freshness_alert, instance, data.cursor, webhook)
        assert len(receiver.posts) == 1 and again.cursor == data.cursor

        # Fresh again, then stale again: a new transition, a new message.
        for previous, new in (
            (FreshnessState.FAIL, FreshnessState.PASS),
            (FreshnessState.PASS, FreshnessState.FAIL),
        ):
            instance.report_runless_asset_event(_change("entreprises", previous, new, stale_at))
        _tick(freshness_alert, instance, again.cursor, webhook)
        assert len(receiver.posts) == 2

    text = message["text"]
    assert "`entreprises` is stale" in text
    assert "since 2026-11-18 10:46 CET" in text  # Paris time
    assert "last materialized: never" in text
    assert f"{UI}/assets/entreprises" in text


# -- end to end: the daemon -----------------------------------------------------------------

WORKSPACE = """\
load_from:
  - python_module:
      module_name: foxreviews_pipeline_tests.operations.alerts_location
      attribute: defs
      location_name: foxreviews
"""
# Background processes of a non-interactive shell inherit SIGINT ignored; the daemon gets
# default handlers, as under systemd.
_DEFAULT_SIGNALS_THEN_EXEC = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


@contextlib.contextmanager
def _background(command: list[str], folder: Path, log: Path) -> Iterator[subprocess.Popen]:
    """`command` in its own process group (as `set -m` would start it), killed with every
    child at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _DEFAULT_SIGNALS_THEN_EXEC, *command],
            cwd=folder, env=bare_env(), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # children left behind


def _wait(what: str, check, *, within_s: float, log: Path, daemon: subprocess.Popen):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"the daemon exited:\n{log.read_text(errors='replace')[-4000:]}"
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {within_s:g} s\n{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.slow
def test_the_daemon_posts_one_alert_for_a_held_back_day(
    project_folder, platform_env, database_url, receiver, tmp_path
):
    from dagster._core.definitions.run_request import InstigatorType

    from foxreviews_pipeline.run_day import project_instance

    load_reference(database_url, villes=False)  # the day cannot resolve its communes
    with (project_folder / ".env").open("a") as env:
        env.write(f"FOXREVIEWS_ALERT_WEBHOOK_URL={receiver.url}\nFOXREVIEWS_UI_URL={UI}\n")
    (project_folder / "alerts_workspace.yaml").write_text(WORKSPACE)
    log = tmp_path / "daemon.log"
    instance = project_instance(load_settings())

    def watching() -> bool:
        """The run failure sensor has had its first tick (it watches runs from then on)."""
        states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
        return any(
            s.name == "run_failure_alert" and s.instigator_data is not None
            and getattr(s.instigator_data, "cursor", None)
            for s in states
        )

    with _background(
        [tool("dagster-daemon"), "run", "-w", "alerts_workspace.yaml"], project_folder, log
    ) as daemon:
        _wait("the run failure sensor's first tick", watching, within_s=300, log=log, daemon=daemon)
        run_id = str(uuid.uuid4())
        launched = subprocess.run(
            [tool("dagster"), "job", "launch", "-w", "alerts_workspace.yaml", "-j", "sirene_daily",
             "--run-id", run_id, "--tags", json.dumps({"dagster/partition": DAY})],
            cwd=project_folder, env=bare_env(), capture_output=True, text=True, timeout=300,
            check=False,
        )
        assert launched.returncode == 0, launched.stderr[-3000:]

        def failed() -> bool:
            run = instance.get_run_by_id(run_id)
            assert run is None or run.status not in (
                dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.CANCELED
            ), run.status
            return run is not None and run.status == dg.DagsterRunStatus.FAILURE

        _wait("the held-back day's run to fail", failed, within_s=600, log=log, daemon=daemon)
        failed_at = time.monotonic()
        _wait("the alert", receiver.posts.copy, within_s=60, log=log, daemon=daemon)
        assert time.monotonic() - failed_at <= 60
        # Another two ticks of the sensor (every 30 s): still one message.
        time.sleep(65)
        assert daemon.poll() is None

    [message] = receiver.messages()
    text = message["text"]
    assert "`sirene_daily`" in text and f"partition {DAY}" in text
    assert "held back, nothing published: blocking check failed:" in text
    assert f"{UI}/runs/{run_id}" in text
