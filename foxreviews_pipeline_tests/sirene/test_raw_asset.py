"""etablissements_raw through Dagster: permanent errors, and a day not published yet, fail
once, at once."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from foxreviews_pipeline.defs.resources import LandingZone
from foxreviews_pipeline.defs.sirene.assets import RAW_DATASET
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw as declared
from foxreviews_pipeline.defs.sirene.partitions import with_daily_partitions
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.landing import columns_path, partition_path
from foxreviews_pipeline.sample.fake_server import FakeInseeServer

DAY = "2026-08-04"
KEY = "right-key-7c1e"
# DAY comes before the default first partition.
etablissements_raw = with_daily_partitions(declared, date(2026, 1, 1))


def materialize(sirene: SireneSource, root, instance=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [etablissements_raw],
        partition_key=DAY,
        resources={"sirene": sirene, "landing_zone": LandingZone(root=str(root))},
        raise_on_error=False,
        instance=instance,
    )


def step_events(result, event_type: dg.DagsterEventType) -> list:
    return [e for e in result.all_events if e.event_type == event_type]


def failure_message(result) -> str:
    (failure,) = step_events(result, dg.DagsterEventType.STEP_FAILURE)
    return failure.step_failure_data.error.message


def test_a_refused_key_fails_the_step_once_naming_the_status_not_the_key(tmp_path):
    wrong = "wrong-key-5d2a90"
    with FakeInseeServer(api_key=KEY) as server:
        sirene = SireneSource(source="api", insee_base_url=server.base_url, insee_api_key=wrong,
                              insee_requests_per_minute=6000)
        result = materialize(sirene, tmp_path)
        calls = len(server.requests)
    assert not result.success
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert calls == 1
    message = failure_message(result)
    assert "HTTP 401" in message and wrong not in message
    assert len(message.strip().splitlines()) == 1


def test_a_missing_key_fails_at_once_naming_the_variable(tmp_path):
    result = materialize(SireneSource(source="api", insee_api_key=None), tmp_path)
    assert not result.success
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    assert "FOXREVIEWS_INSEE_API_KEY" in failure_message(result)


def test_a_day_not_published_fails_at_once_in_one_line(tmp_path):
    # Waiting is the publication sensor's (and `run-day`'s): the step does not.
    with FakeInseeServer(api_key=KEY, last_processed_at=datetime(2026, 8, 3, 23, 50),
                         made_available_at=datetime(2026, 8, 4, 6, 10)) as server:
        sirene = SireneSource(source="api", insee_base_url=server.base_url, insee_api_key=KEY,
                              insee_requests_per_minute=60_000)
        result = materialize(sirene, tmp_path)
        paths = [r.path for r in server.requests]
    assert not result.success
    assert paths == ["/informations"]  # asked once; nothing of the day was read
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    message = failure_message(result)
    assert len(message.strip().splitlines()) == 1
    assert "INSEE has not published 2026-08-04 yet" in message
    assert "sirene_publication_sensor requests the day once it is published" in message
    assert "dateDerniereMiseADisposition=2026-08-04T06:10:00.000" in message
    assert "dateDernierTraitementMaximum=2026-08-03T23:50:00.000" in message
    folder = tmp_path / RAW_DATASET
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_published_day_lands_and_leaves_only_the_partition(tmp_path):
    result = materialize(SireneSource(source="sample", sample_size=300), tmp_path)
    assert result.success
    folder = tmp_path / RAW_DATASET
    assert sorted(p.name for p in folder.iterdir()) == [
        columns_path(folder, DAY).name, partition_path(folder, DAY).name
    ]


def test_transient_failures_past_the_budget_fail_the_step_once(tmp_path):
    from foxreviews_pipeline.sample.fake_server import Fault

    with FakeInseeServer(api_key=KEY) as server:
        server.set_faults({n: Fault.http(503) for n in range(1, 100)})
        sirene = SireneSource(source="api", insee_base_url=server.base_url, insee_api_key=KEY,
                              insee_requests_per_minute=6000, insee_retry_budget_s=0)
        result = materialize(sirene, tmp_path)
    assert not result.success
    # The client's budget is the whole retry policy: the step is not retried on top of it.
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    message = failure_message(result)
    assert "retry budget of 0 s for the day is spent" in message and "HTTP 503" in message


def test_a_full_disk_fails_the_step_at_once_naming_the_landing_zone(tmp_path, monkeypatch):
    import errno

    from foxreviews_pipeline.lib.sirene import sources

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources, "land_day_with_client", no_space)
    with FakeInseeServer(api_key=KEY) as server:
        sirene = SireneSource(source="api", insee_base_url=server.base_url, insee_api_key=KEY,
                              insee_requests_per_minute=6000)
        result = materialize(sirene, tmp_path)
    assert not result.success
    assert step_events(result, dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    message = failure_message(result)
    assert "cannot be written: No space left on device" in message and str(tmp_path) in message
