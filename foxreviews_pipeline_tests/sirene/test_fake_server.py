"""The local INSEE stand-in speaks INSEE's formats and misbehaves on demand."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime

import pytest
import requests

from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.fake_server import FakeInseeServer, Fault, decode_cursor

KEY = "k-123"
DAY = date(2025, 6, 2)
HEADERS = {"X-INSEE-Api-Key-Integration": KEY}
Q = f"dateDernierTraitementEtablissement:[{DAY} TO {DAY}]"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return generate_day(DAY, n=250, seed=3)


@pytest.fixture
def server(records):
    with FakeInseeServer(records, api_key=KEY) as srv:
        yield srv


def get(server, path="/siret", headers=HEADERS, **params):
    return requests.get(server.base_url + path, params=params, headers=headers, timeout=5)


def test_binds_to_localhost_on_a_free_port(server):
    assert server.base_url.startswith("http://127.0.0.1:")
    assert not server.base_url.endswith(":0")


def test_requires_the_key_header(server):
    response = get(server, headers={}, q=Q)
    assert response.status_code == 401
    assert response.json()["header"]["statut"] == 401
    assert get(server, headers={"X-INSEE-Api-Key-Integration": "nope"}, q=Q).status_code == 401


def test_informations_has_insee_shape(server):
    server.last_processed_at = datetime(2024, 3, 26, 7, 21, 46, 628000)
    body = get(server, "/informations").json()
    assert body["etatService"] == "UP"
    etablissements = [
        c for c in body["datesDernieresMisesAJourDesDonnees"] if c["collection"] == "Établissements"
    ]
    assert etablissements[0]["dateDernierTraitementMaximum"] == "2024-03-26T07:21:46.628"
    expected = {"dateDerniereMiseADisposition", "dateDernierTraitementDeMasse"}
    assert expected <= set(etablissements[0])


def test_cursor_paging_like_insee(server, records):
    seen: list[str] = []
    cursor = "*"
    while True:
        body = get(server, q=Q, nombre=100, curseur=cursor).json()
        header = body["header"]
        assert header["statut"] == 200 and header["total"] == len(records)
        assert header["curseur"] == cursor
        assert header["nombre"] == len(body["etablissements"])
        seen += [r["siret"] for r in body["etablissements"]]
        if header["curseurSuivant"] == cursor:
            assert header["nombre"] == 0 and body["etablissements"] == []
            break
        decode_cursor(header["curseurSuivant"])  # opaque but well formed
        cursor = header["curseurSuivant"]
    assert sorted(seen) == sorted(r["siret"] for r in records)
    assert len(seen) == len(set(seen))


def test_both_day_query_forms_match(server, records):
    short = get(server, q=f"dateDernierTraitementEtablissement:{DAY}", nombre=0).json()
    assert short["header"]["total"] == len(records)


def test_no_result_is_a_404_with_insee_body(server):
    response = get(server, q="dateDernierTraitementEtablissement:[2020-01-01 TO 2020-01-01]")
    assert response.status_code == 404
    header = response.json()["header"]
    assert header["statut"] == 404
    assert header["message"].startswith("Aucun élément trouvé pour q=")


def test_bad_requests_are_400(server):
    assert get(server, q=Q, curseur="*", tri="siret").status_code == 400
    assert get(server, q=Q, nombre=1001).status_code == 400
    assert get(server, q=Q, champs="siret,pasUnChamp").status_code == 400
    assert get(server, q="foo bar").status_code == 400
    assert get(server, q=Q, curseur="pas-un-curseur!").status_code == 400
    body = get(server, q=Q, nombre=1001).json()
    assert body["header"]["statut"] == 400 and body["header"]["message"]


def test_champs_filters_each_level(server):
    body = get(server, q=Q, nombre=5, champs="siret,codeCommuneEtablissement,dateDebut").json()
    for record in body["etablissements"]:
        assert set(record) == {"siret", "adresseEtablissement", "periodesEtablissement"}
        assert set(record["adresseEtablissement"]) == {"codeCommuneEtablissement"}
        assert all(set(p) == {"dateDebut"} for p in record["periodesEtablissement"])


def test_post_form_is_accepted(server, records):
    response = requests.post(
        server.base_url + "/siret",
        data={"q": f"siret:{records[0]['siret']} OR siret:{records[1]['siret']}", "nombre": "10"},
        headers=HEADERS,
        timeout=5,
    )
    assert response.status_code == 200
    assert {r["siret"] for r in response.json()["etablissements"]} == {
        records[0]["siret"], records[1]["siret"]
    }
    assert server.requests[-1].method == "POST"


def test_scripted_faults_by_request_number(server):
    server.set_faults({
        1: Fault.http(429, retry_after=3),
        2: Fault.http(503),
        3: Fault.truncated(),
        4: Fault.invalid_json(),
    })
    first = get(server, q=Q)
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert get(server, q=Q).status_code == 503
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(server, q=Q)
    broken = get(server, q=Q)
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        broken.json()
    assert get(server, q=Q).status_code == 200
    faults = [r.fault for r in server.requests]
    assert faults == ["status", "status", "truncated", "invalid_json", None]


def test_delay_fault_outlasts_a_client_timeout(server):
    server.set_faults({1: Fault.delay(1.0)})
    with pytest.raises(requests.Timeout):
        requests.get(server.base_url + "/siret", params={"q": Q}, headers=HEADERS, timeout=0.2)
    assert get(server, q=Q, nombre=1).status_code == 200


def test_quota_mode_uses_a_sliding_window(records):
    with FakeInseeServer(records, api_key=KEY, quota=3, quota_window_s=0.5) as server:
        statuses = [get(server, q=Q, nombre=1).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        time.sleep(0.55)
        assert get(server, q=Q, nombre=1).status_code == 200
        assert server.max_requests_in_window(0.5) >= 3


def test_request_log_and_reset(server):
    get(server, q=Q, nombre=7)
    entry = server.requests[0]
    assert entry.number == 1 and entry.path == "/siret" and entry.method == "GET"
    assert entry.params == {"q": Q, "nombre": "7"}
    assert entry.status == 200 and entry.at > 0
    server.reset()
    assert server.requests == []
    get(server, q=Q, nombre=1)
    assert server.requests[0].number == 1


def test_serves_generated_days_on_demand():
    calls: list[date] = []

    def source(day: date) -> list[dict]:
        calls.append(day)
        return generate_day(day, n=30)

    with FakeInseeServer(day_source=source, api_key=KEY) as server:
        q = "dateDernierTraitementEtablissement:[2025-01-05 TO 2025-01-05]"
        first = get(server, q=q, nombre=0).json()
        again = get(server, q=q, nombre=10, curseur="*").json()
    assert first["header"]["total"] == 30
    assert again["header"]["nombre"] == 10
    assert calls == [date(2025, 1, 5)]  # cached between pages


def test_concurrent_requests_are_all_answered(server, records):
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: get(server, q=Q, nombre=50).status_code, range(40)))
    assert statuses == [200] * 40
    assert sorted(r.number for r in server.requests) == list(range(1, 41))


def test_context_manager_stops_the_server(records):
    with FakeInseeServer(records, api_key=KEY) as server:
        url = server.base_url
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/informations", headers=HEADERS, timeout=1)
