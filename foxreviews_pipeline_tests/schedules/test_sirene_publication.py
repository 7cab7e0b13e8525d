"""Waiting for INSEE to publish a day: `sirene_publication_sensor` requests the day's run once
`/informations` says it is complete, and `foxreviews run-day` polls on its own before it
starts the day."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import time_machine
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

from foxreviews_pipeline.defs.sirene.jobs import SIRENE_DAILY_ASSETS, sirene_daily_job
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions_def
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.defs.sirene.sensors import CHECK_EVERY_S, sirene_publication_sensor
from foxreviews_pipeline.run_day import (
    PUBLICATION_CHECK_S,
    PUBLICATION_MAX_WAIT,
    RunFailed,
    wait_for_publication,
)
from foxreviews_pipeline.sample.fake_server import FakeInseeServer

PARIS = ZoneInfo("Europe/Paris")
KEY = "publication-key-31c9"
# A Wednesday morning in Paris: the previous day is 4 August, the catch-up window 2–4 August.
NOW = datetime(2026, 8, 5, 9, 0, tzinfo=PARIS)
DAY, BEFORE, FIRST = "2026-08-04", "2026-08-03", "2026-08-02"
# What INSEE says at NOW when 4 August is not published yet: the last processing ended before
# midnight and the data made available that morning is the 3rd's.
PROCESSED = datetime(2026, 8, 3, 23, 50)
AVAILABLE_3RD = datetime(2026, 8, 4, 6, 10)
AVAILABLE_4TH = datetime(2026, 8, 5, 6, 10)


def _stub(key: str) -> dg.AssetsDefinition:
    # The first partition as FOXREVIEWS_PARTITIONS_START=2026-01-01 makes it.
    @dg.asset(name=key, partitions_def=daily_partitions_def(date(2026, 1, 1)))
    def _asset() -> None: ...

    return _asset


DEFS = dg.Definitions(
    assets=[_stub(key) for key in SIRENE_DAILY_ASSETS],
    jobs=[sirene_daily_job],
    sensors=[sirene_publication_sensor],
)
ORIGIN = RemoteRepositoryOrigin(
    code_location_origin=RegisteredCodeLocationOrigin("foxreviews_pipeline"),
    repository_name="__repository__",
)


@pytest.fixture
def insee():
    """INSEE with 4 August not published yet (3 August and before are)."""
    with FakeInseeServer(
        api_key=KEY, last_processed_at=PROCESSED, made_available_at=AVAILABLE_3RD
    ) as server:
        yield server


def api_source(server: FakeInseeServer, key: str = KEY) -> SireneSource:
    return SireneSource(
        source="api", insee_base_url=server.base_url, insee_api_key=key,
        insee_requests_per_minute=60_000,
    )


def tick(instance: dg.DagsterInstance, sirene: SireneSource, now: datetime = NOW):
    with time_machine.travel(now, tick=True):
        context = dg.build_sensor_context(
            instance=instance, resources={"sirene": sirene}, definitions=DEFS
        )
        return sirene_publication_sensor.evaluate_tick(context)


def imported(instance: dg.DagsterInstance, *days: str) -> None:
    for day in days:
        for key in SIRENE_DAILY_ASSETS:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=day))


def test_the_sensor_is_the_default_trigger_of_the_daily_job():
    assert sirene_publication_sensor.job_name == sirene_daily_job.name
    assert sirene_publication_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert 10 * 60 <= sirene_publication_sensor.minimum_interval_seconds == CHECK_EVERY_S <= 20 * 60
    assert sirene_publication_sensor.required_resource_keys == {"sirene"}


def test_nothing_requested_while_the_day_is_not_published_then_once_then_never_again(insee):
    instance = dg.DagsterInstance.ephemeral()
    imported(instance, FIRST, BEFORE)

    waiting = tick(instance, api_source(insee))
    assert not waiting.run_requests
    assert f"waiting for INSEE to publish {DAY}" in waiting.skip_message
    assert "dateDerniereMiseADisposition=2026-08-04T06:10:00.000" in waiting.skip_message
    assert [r.path for r in insee.requests] == ["/informations"]  # one question, no paging

    insee.made_available_at = AVAILABLE_4TH  # INSEE publishes the 4th
    published = tick(instance, api_source(insee), NOW + timedelta(minutes=15))
    [request] = published.run_requests
    assert (request.run_key, request.partition_key) == (DAY, DAY)
    assert request.tags["foxreviews/trigger"] == "publication"

    imported(instance, DAY)
    done = tick(instance, api_source(insee), NOW + timedelta(minutes=30))
    assert not done.run_requests
    assert f"every day from {FIRST} to {DAY} is imported" == done.skip_message


def test_missed_days_are_caught_up_while_the_last_one_waits(insee):
    instance = dg.DagsterInstance.ephemeral()
    imported(instance, FIRST)
    result = tick(instance, api_source(insee))
    assert [(r.run_key, r.partition_key) for r in result.run_requests] == [(BEFORE, BEFORE)]
    # A day older than the window is left to a backfill.
    assert all(r.partition_key >= FIRST for r in result.run_requests)


def test_a_day_being_imported_is_not_requested_again(insee):
    instance = dg.DagsterInstance.ephemeral()
    imported(instance, FIRST, BEFORE)
    insee.made_available_at = AVAILABLE_4TH
    run = instance.create_run_for_job(
        DEFS.resolve_job_def(sirene_daily_job.name), status=dg.DagsterRunStatus.QUEUED,
        tags={"dagster/partition": DAY}, remote_job_origin=ORIGIN.get_job_origin(sirene_daily_job.name),
    )
    result = tick(instance, api_source(insee))
    assert not result.run_requests
    assert f"{DAY} is being imported (run {run.run_id}, queued)" == result.skip_message


def test_the_sample_source_has_every_day_at_once():
    instance = dg.DagsterInstance.ephemeral()
    imported(instance, FIRST, BEFORE)
    [request] = tick(instance, SireneSource(source="sample")).run_requests
    assert request.run_key == DAY


def test_before_the_first_partition_the_skip_says_so():
    result = tick(dg.DagsterInstance.ephemeral(), SireneSource(source="sample"),
                  datetime(2025, 12, 20, 9, 0, tzinfo=PARIS))
    assert not result.run_requests
    assert "FOXREVIEWS_PARTITIONS_START" in result.skip_message and "2026-01-01" in result.skip_message


def test_an_insee_error_fails_the_tick_naming_the_status_not_the_key(insee):
    wrong = "wrong-key-0b7d"
    with pytest.raises(Exception, match="HTTP 401") as raised:
        tick(dg.DagsterInstance.ephemeral(), api_source(insee, wrong))
    assert wrong not in str(raised.value)


# --- foxreviews run-day: polls by itself before it starts the day ------------------------------


class FakeTime:
    """`sleep` and `clock` for `wait_for_publication`: sleeping moves the clock, at once."""

    def __init__(self, on_sleep=None):
        self.now, self.sleeps, self.on_sleep = 0.0, [], on_sleep

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps.append(seconds)
        if self.on_sleep:
            self.on_sleep(len(self.sleeps))

    def clock(self) -> float:
        return self.now


def test_run_day_waits_every_20_minutes_until_insee_publishes(insee):
    said: list[str] = []

    def publish_after_three_waits(waits: int) -> None:
        if waits == 3:
            insee.made_available_at = AVAILABLE_4TH

    fake = FakeTime(publish_after_three_waits)
    wait_for_publication(api_source(insee), datetime(2026, 8, 4).date(), said.append,
                         sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [PUBLICATION_CHECK_S] * 3 == [20 * 60] * 3
    waits, [done] = said[:3], said[3:]
    for n, line in enumerate(waits, 1):
        assert line.startswith(f"waiting for INSEE to publish {DAY}: ")
        assert "dateDerniereMiseADisposition=2026-08-04T06:10:00.000" in line
        assert f"check {n} " in line and "next in 20 min, gives up after 8 h 00 min" in line
    assert done == f"INSEE has published {DAY}, after waiting 1 h 00 min"


def test_run_day_gives_up_after_8_hours(insee):
    said: list[str] = []
    fake = FakeTime()
    with pytest.raises(RunFailed) as failed:
        wait_for_publication(api_source(insee), datetime(2026, 8, 4).date(), said.append,
                             sleep=fake.sleep, clock=fake.clock)
    assert PUBLICATION_MAX_WAIT == timedelta(hours=8)
    assert sum(fake.sleeps) == 8 * 3600 and len(fake.sleeps) == 24
    message = str(failed.value)
    assert len(message.splitlines()) == 1
    assert f"INSEE has still not published {DAY} after waiting 8 h 00 min" in message
    assert "(the bound is 8 h 00 min)" in message and "dateDerniereMiseADisposition" in message


def test_run_day_interval_and_bound_are_injectable(insee):
    said: list[str] = []
    with pytest.raises(RunFailed, match="the bound is 0 s"):
        wait_for_publication(api_source(insee), datetime(2026, 8, 4).date(), said.append,
                             check_every_s=0.01, max_wait=timedelta(seconds=0.05))
    assert said and all("next in 0 s" in line for line in said)


def test_run_day_does_not_wait_for_the_sample():
    said: list[str] = []
    fake = FakeTime()
    wait_for_publication(SireneSource(source="sample"), datetime(2026, 8, 4).date(), said.append,
                         sleep=fake.sleep, clock=fake.clock)
    assert said == [] and fake.sleeps == []
