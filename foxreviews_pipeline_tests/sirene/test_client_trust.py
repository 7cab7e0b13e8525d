"""The INSEE client trusts no server: publication signal, counts, cursors, headers, deadlines."""

from __future__ import annotations

import math
import time
from datetime import date, datetime

import pytest

from foxreviews_pipeline.lib.sirene.client import InseeApiError, InseeClient
from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.fake_server import DROP, FakeInseeServer, Fault, encode_cursor
from foxreviews_pipeline_tests.sirene.client_helpers import fetch_day, latest_per_siret

KEY = "trust-key-91ab"
DAY = date(2025, 3, 10)
PAGE = 100


@pytest.fixture(scope="module")
def day_records() -> list[dict]:
    return generate_day(DAY, n=1050, seed=11)


@pytest.fixture
def server(day_records):
    with FakeInseeServer(day_records, api_key=KEY) as srv:
        yield srv


def make_client(server: FakeInseeServer, **kwargs) -> InseeClient:
    # Timeouts far above what a local answer takes, even on a loaded machine, so that the
    # counts asserted are the client's decisions; tests about deadlines set their own.
    options = {
        "requests_per_minute": 6000,
        "timeout": (5.0, 10.0),
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    options.update(kwargs)
    return InseeClient(server.base_url, KEY, **options)


def fetch(client: InseeClient) -> list[dict]:
    return fetch_day(client, DAY, page_size=PAGE)


# -- publication ------------------------------------------------------------------------


def test_last_processing_just_after_midnight_completes_the_day(server):
    server.last_processed_at = datetime(2026, 8, 5, 0, 5, 52, 648000)
    server.made_available_at = datetime(2026, 8, 5, 7, 20, 43)
    client = make_client(server)
    publication = client.publication(date(2026, 8, 4))
    assert publication.complete
    assert publication.collection == "Établissements"
    assert publication.last_processed_at == datetime(2026, 8, 5, 0, 5, 52, 648000)
    assert not client.publication(date(2026, 8, 5)).complete


def test_processing_ending_before_midnight_is_complete_once_made_available(server):
    # The batch ended at 23:48 on the day and was made available at 06:08 the next morning.
    server.last_processed_at = datetime(2026, 8, 4, 23, 48)
    server.made_available_at = datetime(2026, 8, 5, 6, 8)
    client = make_client(server)
    assert client.publication(date(2026, 8, 4)).complete


def test_a_day_not_yet_made_available_is_not_complete_and_says_why(server):
    # Yesterday's delivery: processed up to 23:50 on the 3rd, made available on the 4th.
    server.last_processed_at = datetime(2026, 8, 3, 23, 50)
    server.made_available_at = datetime(2026, 8, 4, 6, 10)
    publication = make_client(server).publication(date(2026, 8, 4))
    assert not publication.complete
    text = publication.describe()
    assert "dateDerniereMiseADisposition=2026-08-04T06:10:00.000" in text
    assert "dateDernierTraitementMaximum=2026-08-03T23:50:00.000" in text
    assert "etatCollection=UP" in text


@pytest.mark.parametrize("down", ["collection", "service"])
def test_a_collection_reported_down_is_not_complete(server, down):
    server.last_processed_at = datetime(2026, 8, 5, 0, 5, 52, 648000)
    server.made_available_at = datetime(2026, 8, 5, 7, 20, 43)
    if down == "collection":
        server.collection_states["Établissements"] = "DOWN"
    else:
        server.service_state = "DOWN"
    publication = make_client(server).publication(date(2026, 8, 4))
    assert not publication.complete
    expected = "etatCollection=DOWN" if down == "collection" else "etatService=DOWN"
    assert expected in publication.describe()


def _informations_with(server: FakeInseeServer, change) -> dict:
    document = server.informations()
    change(document)
    return document


def _establishments(document: dict) -> dict:
    return next(
        c for c in document["datesDernieresMisesAJourDesDonnees"] if c["collection"] == "Établissements"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("etatsDesServices"),
        lambda d: d.pop("etatService"),
        lambda d: d.update(etatsDesServices="UP"),
        lambda d: d.update(etatsDesServices=[{"Collection": "Établissements"}]),
        # Field names in other letter case.
        lambda d: d.update(EtatService=d.pop("etatService"), EtatsDesServices=d.pop("etatsDesServices")),
        lambda d: d.update(
            DatesDernieresMisesAJourDesDonnees=[
                {k[0].upper() + k[1:]: v for k, v in c.items()}
                for c in d.pop("datesDernieresMisesAJourDesDonnees")
            ]
        ),
    ],
    ids=["no_etatsDesServices", "no_etatService", "not_a_list", "no_etatCollection",
         "capitalised_states", "capitalised_dates"],
)
def test_optional_informations_fields_never_hold_a_published_day(server, change):
    """Every field of `/informations` is optional in INSEE's OpenAPI: a state not reported is
    not a reason to wait; the publication dates alone decide."""
    server.last_processed_at = datetime(2026, 8, 5, 0, 5, 52, 648000)
    server.made_available_at = datetime(2026, 8, 5, 7, 20, 43)
    server.informations_document = _informations_with(server, change)
    publication = make_client(server).publication(date(2026, 8, 4))
    assert publication.complete, publication.describe()
    assert not make_client(server).publication(date(2026, 8, 5)).complete


@pytest.mark.parametrize(
    ("change", "missing"),
    [
        (lambda d: _establishments(d).pop("dateDerniereMiseADisposition"), "dateDerniereMiseADisposition=missing"),
        (lambda d: _establishments(d).update(dateDernierTraitementMaximum="hier soir"),
         "dateDernierTraitementMaximum=missing"),
        (lambda d: d.update(datesDernieresMisesAJourDesDonnees=[]), "dateDerniereMiseADisposition=missing"),
        (lambda d: d.pop("datesDernieresMisesAJourDesDonnees"), "dateDernierTraitementMaximum=missing"),
    ],
)
def test_missing_or_unreadable_dates_leave_the_day_waiting_and_say_which(server, change, missing):
    server.last_processed_at = datetime(2026, 8, 3, 23, 50)
    server.made_available_at = datetime(2026, 8, 4, 6, 10)
    server.informations_document = _informations_with(server, change)
    publication = make_client(server).publication(date(2026, 8, 4))
    assert not publication.complete
    assert missing in publication.describe()


# -- counts against header.total --------------------------------------------------------


def test_fewer_records_than_announced_is_an_error_naming_both_numbers(server):
    # The read reaches INSEE's end (the cursor repeated) four records short.
    server.set_faults({3: Fault.drop(4)})
    with pytest.raises(InseeApiError, match=r"after 1046 of the 1050 records announced"):
        fetch(make_client(server))


def test_a_404_before_the_total_is_reached_is_an_error_naming_both_numbers(server):
    server.set_faults({4: Fault.http(404, message="Aucun élément trouvé")})
    with pytest.raises(InseeApiError, match=r"announced 1050 records but sent 300"):
        fetch(make_client(server))


def test_duplicates_beyond_the_total_are_tolerated(server, day_records):
    server.set_faults({2: Fault.duplicate(5)})
    client = make_client(server)
    records = fetch(client)
    assert len(records) == 1055
    assert len(latest_per_siret(records)) == 1050
    assert (client.stats.total, client.stats.distinct) == (1050, 1050)


# -- cursors ----------------------------------------------------------------------------


def test_a_cursor_repeated_once_too_early_is_asked_again(server, day_records):
    server.set_faults({3: Fault.repeat_cursor()})
    records = fetch(make_client(server))
    assert {r["siret"] for r in records} == {r["siret"] for r in day_records}


def test_a_cursor_that_keeps_repeating_early_fails_after_a_bound(server):
    server.set_faults({n: Fault.repeat_cursor() for n in range(3, 40)})
    with pytest.raises(InseeApiError) as caught:
        fetch(make_client(server))
    message = str(caught.value)
    assert "repeated cursor" in message and "after 200 of the 1050" in message
    assert server.requests[-1].params["curseur"] in message
    assert len(server.requests) == 5  # two pages, then the repeat asked again twice


def test_a_cursor_seen_before_is_an_error_naming_it(server, day_records):
    sirets = sorted(r["siret"] for r in day_records)
    first_next = encode_cursor(sirets[PAGE - 1])
    server.set_faults({3: Fault.with_header(curseurSuivant=first_next)})
    with pytest.raises(InseeApiError, match="a second time") as caught:
        fetch(make_client(server))
    assert first_next in str(caught.value)


def test_paging_past_what_total_allows_fails_after_a_bound(server):
    # The server announces 150 results but keeps serving its 1,050.
    server.set_faults({n: Fault.with_header(total=150) for n in range(1, 40)})
    with pytest.raises(InseeApiError, match="kept paging past the 150 records announced") as caught:
        fetch(make_client(server))
    assert "next cursor" in str(caught.value) and "records received" in str(caught.value)
    # ceil(150 x 1.01 / 100) + 1 pages, the final page and two repeats at most.
    assert len(server.requests) <= math.ceil(151.5 / PAGE) + 1 + 1 + 2


def test_a_day_larger_than_our_cap_fails_at_once(server):
    client = make_client(server, max_day_records=500)
    with pytest.raises(InseeApiError, match=r"1050 records.*more than the 500") as caught:
        fetch(client)
    assert caught.value.permanent
    assert len(server.requests) == 1


# -- headers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        (Fault.with_header(total="beaucoup"), "header.total"),
        (Fault.with_header(curseurSuivant=DROP), "header.curseurSuivant"),
        (Fault.with_header(total=DROP), "header.total"),
        (Fault.with_header(nombre="cent"), "header.nombre"),
    ],
)
def test_malformed_page_headers_name_the_field(server, fault, named):
    server.set_faults({2: fault})
    with pytest.raises(InseeApiError, match=named):
        fetch(make_client(server))


# -- an overall deadline per request ----------------------------------------------------


def test_a_trickling_response_hits_the_overall_deadline_and_is_retried(server, day_records):
    # One byte every 0.3 s never trips the 2 s per-read timeout; the 1.5 s deadline does.
    server.set_faults({2: Fault.trickle(0.3, max_bytes=200)})
    client = make_client(server, timeout=(1.0, 2.0), deadline_s=1.5)
    records = fetch(client)
    assert {r["siret"] for r in records} == {r["siret"] for r in day_records}
    assert client.stats.retries == 1
    trickled = None
    for _ in range(200):  # the server notices the client left at its next write
        trickled = next((r for r in server.requests if r.fault == "trickle"), None)
        if trickled is not None:
            break
        time.sleep(0.1)
    assert trickled is not None
    assert trickled.sent_bytes < 200  # the client gave up, not the server


def test_a_server_that_keeps_trickling_is_given_up_within_the_day_budget(server):
    # Every attempt trickles: each is cut at its deadline, and those attempts use up the
    # day's retry budget, so the call ends instead of trickling through all its attempts.
    server.set_faults({n: Fault.trickle(0.2, max_bytes=200) for n in range(1, 30)})
    client = make_client(server, timeout=(1.0, 2.0), deadline_s=0.5, max_attempts=20, retry_budget_s=1.2)
    with pytest.raises(InseeApiError, match=r"retry budget of 1\.2 s for the day is spent") as caught:
        fetch(client)
    assert not caught.value.permanent
    # Each failed attempt took at least its 0.5 s deadline: after two, a third may start
    # (its time counts after it), never a fifth; the overshoot is at most the last attempt.
    assert 2 <= client.stats.api_calls <= 4
    assert client.retry_spent_s < 1.2 + 2.0


# -- permanent and transient failures ---------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refusals_are_permanent(server, status):
    server.set_faults({1: Fault.http(status)})
    with pytest.raises(InseeApiError) as caught:
        fetch(make_client(server))
    assert caught.value.permanent and caught.value.status == status
    assert len(server.requests) == 1


def test_exhausted_transient_failures_are_not_permanent(server):
    server.set_faults({n: Fault.http(503) for n in range(1, 10)})
    with pytest.raises(InseeApiError) as caught:
        fetch(make_client(server, max_attempts=2))
    assert not caught.value.permanent


# -- the day's retry budget ------------------------------------------------------------


def test_a_huge_retry_after_fails_at_once_within_the_budget(server):
    server.set_faults({1: Fault.http(429, retry_after=100_000)})
    waits: list[float] = []
    client = make_client(server, max_attempts=8, retry_budget_s=60, sleep=waits.append)
    with pytest.raises(InseeApiError, match=r"retry budget of 60 s for the day is spent"):
        fetch(client)
    # Retry-After is capped (300 s), which is past the budget: no wait at all.
    assert waits == [] and len(server.requests) == 1


def test_a_storm_of_5xx_stops_when_the_budget_is_spent(server):
    server.set_faults({n: Fault.http(503) for n in range(1, 200)})
    waits: list[float] = []
    # A clock that does not move: only the waits count (on a busy machine the attempts'
    # own time would vary the count of waits).
    client = make_client(
        server, max_attempts=50, retry_budget_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.3,
        sleep=waits.append, clock=lambda: 0.0,
    )
    with pytest.raises(InseeApiError, match="retry budget of 1 s") as caught:
        fetch(client)
    assert not caught.value.permanent
    assert 0 < sum(waits) <= 1.0
    assert client.retry_spent_s <= 1.0 + 1e-6
    assert len(server.requests) == len(waits) + 1 < 50


def test_the_budget_is_shared_by_every_call_of_the_day(server):
    # Two separate outages in one day's fetch: the second has only what the first left.
    server.set_faults({1: Fault.http(503), 2: Fault.http(503), 5: Fault.http(503), 6: Fault.http(503),
                       7: Fault.http(503), 8: Fault.http(503)})
    waits: list[float] = []
    # A clock that does not move: only the waits count, so the arithmetic below is exact.
    client = make_client(
        server, max_attempts=10, retry_budget_s=1.0, backoff_initial_s=0.3, backoff_max_s=0.3,
        sleep=waits.append, clock=lambda: 0.0,
    )
    with pytest.raises(InseeApiError, match="retry budget"):
        fetch(client)
    assert sum(waits) <= 1.0 and len(waits) == 3  # 2 for the first outage, 1 for the second
