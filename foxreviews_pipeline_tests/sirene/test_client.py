"""The INSEE client against a local server that misbehaves the way INSEE does."""

from __future__ import annotations

import itertools
import logging
import math
import sqlite3
from contextlib import closing
from datetime import date, datetime

import pytest

from foxreviews_pipeline.lib.sirene.client import (
    API_KEY_HEADER,
    CHAMPS,
    InseeApiError,
    InseeClient,
    day_query,
    make_limiter,
)
from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.fake_server import FakeInseeServer, Fault
from foxreviews_pipeline_tests.sirene.client_helpers import fetch_day

KEY = "secret-key-6f1d2c"
DAY = date(2025, 3, 10)
PAGE = 100


@pytest.fixture(scope="module")
def day_records() -> list[dict]:
    return generate_day(DAY, n=1050, seed=7)


@pytest.fixture
def server(day_records):
    with FakeInseeServer(day_records, api_key=KEY) as srv:
        yield srv


def make_client(server: FakeInseeServer, **kwargs) -> InseeClient:
    # Timeouts far above what a local answer takes, even on a loaded machine: the counts the
    # tests assert are then what the client decided, never a timeout that happened to fire.
    # Tests about timeouts set their own.
    options = {
        "requests_per_minute": 6000,
        "timeout": (5.0, 10.0),
        "max_attempts": 6,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    options.update(kwargs)
    return InseeClient(server.base_url, KEY, **options)


def fetch(client: InseeClient, day: date = DAY) -> list[dict]:
    return fetch_day(client, day, page_size=PAGE)


def assert_complete(records: list[dict], expected: list[dict]) -> None:
    sirets = [r["siret"] for r in records]
    assert len(sirets) == len(set(sirets)), "a record was duplicated"
    assert set(sirets) == {r["siret"] for r in expected}, "a record was lost"


def test_reads_every_page_until_the_cursor_repeats(server, day_records):
    client = make_client(server)
    records = fetch(client)

    assert_complete(records, day_records)
    pages = math.ceil(len(day_records) / PAGE)
    assert client.stats.pages == pages
    assert client.stats.records == len(day_records)
    assert client.stats.api_calls == pages + 1  # the last call returns nombre 0
    log = server.requests
    assert log[0].params["curseur"] == "*"
    assert all(r.params["q"] == day_query(DAY) for r in log)
    assert all(r.params["nombre"] == str(PAGE) for r in log)
    assert all("tri" not in r.params and "debut" not in r.params for r in log)
    assert all(r.params["champs"] == ",".join(CHAMPS) for r in log)
    assert len({r.params["curseur"] for r in log}) == pages + 1


def test_day_query_is_the_documented_one():
    expected = "dateDernierTraitementEtablissement:[2025-01-31 TO 2025-01-31]"
    assert day_query(date(2025, 1, 31)) == expected


def test_champs_keep_the_api_nesting_and_can_be_disabled(server, day_records):
    client = make_client(server)
    narrow = fetch(client)[0]
    nested = {"uniteLegale", "adresseEtablissement", "periodesEtablissement"}
    assert set(narrow) <= set(CHAMPS) | nested
    assert "codeCommuneEtablissement" in narrow["adresseEtablissement"]
    assert "etatAdministratifEtablissement" in narrow["periodesEtablissement"][0]
    assert "adresse2Etablissement" not in narrow

    full = fetch_day(client, DAY, page_size=PAGE, champs=None)
    by_siret = {r["siret"]: r for r in day_records}
    assert all(record == by_siret[record["siret"]] for record in full)


def test_a_day_without_result_is_empty_not_an_error(server):
    client = make_client(server)
    assert fetch(client, date(2024, 1, 1)) == []
    assert client.stats.api_calls == 1
    assert server.requests[0].status == 404


def test_429_503_truncated_and_invalid_bodies_are_retried_without_loss(server, day_records):
    server.set_faults({
        2: Fault.http(429),
        3: Fault.http(429, retry_after=0.05),
        5: Fault.http(503),
        6: Fault.http(502),
        8: Fault.truncated(),
        10: Fault.invalid_json(),
        12: Fault.http(500),
    })
    client = make_client(server)
    records = fetch(client)

    assert_complete(records, day_records)
    assert client.stats.retries == 7
    assert client.stats.http_429 == 2
    assert client.stats.api_calls == math.ceil(len(day_records) / PAGE) + 1 + 7


def test_a_timeout_is_retried(server, day_records):
    server.set_faults({3: Fault.delay(6.0)})
    client = make_client(server, timeout=(5.0, 1.0))
    records = fetch(client)
    assert_complete(records, day_records)
    # The delayed page timed out and was asked again. On a loaded machine another answer may
    # time out as well: the count is bounded, not exact.
    delayed = next(r for r in server.requests if r.fault == "delay")
    assert delayed.number == 3
    asked_again = [r for r in server.requests if r.number > 3 and r.params == delayed.params]
    assert asked_again and asked_again[0].status == 200
    pages = math.ceil(len(day_records) / PAGE) + 1
    assert 1 <= client.stats.retries <= pages * (client.max_attempts - 1)
    assert client.stats.api_calls == pages + client.stats.retries


def test_a_last_page_that_repeats_the_cursor_ends_the_read(server, day_records):
    client = make_client(server)
    fetch(client)
    last = server.requests[-1]
    previous = server.requests[-2]
    assert last.status == 200
    assert last.params["curseur"] != previous.params["curseur"]
    # The fake repeats the cursor on the empty page, as INSEE does; the client stopped there.
    assert client.stats.api_calls == len(server.requests)


def test_retry_after_is_honoured(server):
    slept: list[float] = []
    server.set_faults({1: Fault.http(429, retry_after=7)})
    client = make_client(server, sleep=slept.append)
    fetch(client)
    assert slept == [7.0]


def test_backoff_grows_exponentially_with_jitter(server):
    slept: list[float] = []
    server.set_faults({n: Fault.http(503) for n in range(1, 5)})
    client = make_client(server, sleep=slept.append, backoff_initial_s=1.0, backoff_max_s=60.0)
    fetch(client)
    assert len(slept) == 4
    for attempt, wait in enumerate(slept):
        assert 2**attempt <= wait <= 2**attempt + 1.0


def test_a_400_is_not_retried_and_carries_insee_message(server):
    server.set_faults({1: Fault.http(400, message="Erreur de syntaxe dans le paramètre q")})
    client = make_client(server)
    with pytest.raises(InseeApiError) as caught:
        fetch(client)
    assert caught.value.status == 400
    assert "Erreur de syntaxe" in str(caught.value)
    assert "/siret" in str(caught.value)
    assert client.stats.api_calls == 1


def test_a_refused_key_is_not_retried(server):
    client = InseeClient(server.base_url, "wrong", requests_per_minute=6000)
    with pytest.raises(InseeApiError, match="refused the API key") as caught:
        client.informations()
    assert caught.value.status == 401
    assert len(server.requests) == 1


def test_exhausted_retries_fail_clearly_and_never_show_the_key(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.set_faults({n: Fault.http(503) for n in range(1, 20)})
    client = make_client(server, max_attempts=3)
    with pytest.raises(InseeApiError) as caught:
        fetch(client)
    message = str(caught.value)
    assert "503" in message and "/siret" in message and "3 attempts" in message
    assert caught.value.status == 503
    assert client.stats.api_calls == 3 and client.stats.retries == 2
    for text in (message, repr(caught.value), repr(client), str(vars(client)), caplog.text):
        assert KEY not in text
    # The requests exception chain (which holds the prepared request) is not attached.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_key_is_sent_in_the_integration_header(server):
    # The fake answers 401 without the header; a 200 proves it was sent.
    client = make_client(server)
    assert client.informations()["etatService"] == "UP"
    assert API_KEY_HEADER == "X-INSEE-Api-Key-Integration"


class _RecordingStore:
    """Wraps the limiter's state store and keeps the instants (its own clock, in ms) at which
    it admitted a request: what the client's pacing decided, whatever the machine's load."""

    is_async = False

    def __init__(self, inner):
        self.inner = inner
        self.admitted: list[int] = []

    def check(self, algorithm, rates, now, weight):
        decision = self.inner.check(algorithm, rates, now, weight)
        if decision.allowed:
            self.admitted.append(now)
        return decision

    def read(self, algorithm, rates):
        return self.inner.read(algorithm, rates)

    def reset(self):
        self.inner.reset()


def test_pacing_never_exceeds_the_configured_rate(server, day_records):
    rpm = 600  # one call every 100 ms, 10 per second, no burst
    limiter = make_limiter(rpm)
    (bucket,) = limiter.buckets()
    bucket.store = recorder = _RecordingStore(bucket.store)
    client = make_client(server, requests_per_minute=rpm, limiter=limiter)
    records = fetch(client)

    assert_complete(records, day_records)
    # Every request went through the limiter, and the limiter spaced them all.
    assert len(recorder.admitted) == client.stats.api_calls == len(server.requests)
    spacing_ms = 60_000 // rpm
    gaps = [b - a for a, b in itertools.pairwise(recorder.admitted)]
    assert min(gaps) >= spacing_ms
    # No burst at the start either: the first two calls are already spaced.
    assert gaps[0] >= spacing_ms
    # So no 1-second window (the quota window scaled down) ever holds more than 10.
    admitted = recorder.admitted
    assert max(
        sum(1 for t in admitted if start <= t < start + 1000) for start in admitted
    ) <= rpm // 60


def test_quota_429_bursts_are_absorbed_by_backoff(day_records):
    # The client believes it may go much faster than the quota the server enforces.
    with FakeInseeServer(day_records, api_key=KEY, quota=4, quota_window_s=0.4) as server:
        client = make_client(server, backoff_initial_s=0.1, backoff_max_s=0.4, max_attempts=10)
        records = fetch(client)
    assert_complete(records, day_records)
    assert client.stats.http_429 > 0
    assert client.stats.retries == client.stats.http_429


def test_a_shared_limiter_paces_two_clients_together(server, tmp_path):
    rpm = 600
    state = tmp_path / "quota.sqlite"
    first = make_client(server, limiter=make_limiter(rpm, state_path=state))
    second = make_client(server, limiter=make_limiter(rpm, state_path=state))
    for _ in range(3):
        first.informations()
        second.informations()
    # The shared state is the limiter's log of admissions (its own clock, in ms): what the
    # pacing decided for both clients together, whatever the machine's load.
    with closing(sqlite3.connect(state)) as db:
        admitted = [t for (t,) in db.execute("SELECT item_timestamp FROM insee_quota ORDER BY 1")]
    assert len(admitted) == first.stats.api_calls + second.stats.api_calls == len(server.requests) == 6
    assert min(b - a for a, b in itertools.pairwise(admitted)) >= 60_000 // rpm


def test_long_queries_go_as_post_form(server, day_records):
    wanted = [r["siret"] for r in day_records[:150]]
    q = " OR ".join(f"siret:{s}" for s in wanted)
    assert len(q) > 2000
    client = make_client(server)
    records = [r for page in client.iter_pages(q, page_size=PAGE) for r in page]
    assert sorted(r["siret"] for r in records) == sorted(wanted)
    assert {r.method for r in server.requests} == {"POST"}


def test_informations_tell_whether_a_day_is_published(server):
    server.last_processed_at = datetime(2025, 3, 11, 7, 21, 46, 628000)
    client = make_client(server)
    info = client.informations()
    assert client.publication(date(2025, 3, 10), info).last_processed_at.date() == date(2025, 3, 11)
    assert client.publication(date(2025, 3, 10), info).complete
    assert not client.publication(date(2025, 3, 11), info).complete
    assert client.publication(date(2025, 3, 9)).complete


def test_stats_measure_duration_and_belong_to_one_client(server):
    client = make_client(server)
    fetch(client)
    stats = client.stats
    assert stats.duration_s > 0
    assert stats.as_dict()["api_calls"] == stats.api_calls
    assert make_client(server).stats.api_calls == 0


def test_client_requires_a_key():
    with pytest.raises(ValueError):
        InseeClient("http://127.0.0.1:9", "")
