"""A day from INSEE is landed page by page, one record per SIRET, and only when whole."""

from __future__ import annotations

import gzip
from datetime import date, datetime
from pathlib import Path

import pytest

from foxreviews_pipeline.lib.sirene import landing as landing_module
from foxreviews_pipeline.lib.sirene.client import InseeApiError, InseeClient
from foxreviews_pipeline.lib.sirene.landing import (
    LandedName,
    LandingError,
    PartitionWriter,
    columns_path,
    parse_landed_name,
    partition_path,
    read_columns,
    read_partition,
    write_partition,
)
from foxreviews_pipeline.lib.sirene.mapping import records_table
from foxreviews_pipeline.lib.sirene.sources import land_day_with_client
from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.fake_server import FakeInseeServer, Fault
from foxreviews_pipeline_tests.sirene.client_helpers import fetch_day, latest_per_siret

KEY = "landing-key"
DAY = date(2025, 3, 10)


@pytest.fixture(scope="module")
def day_records() -> list[dict]:
    return generate_day(DAY, n=450, seed=5)


@pytest.fixture
def server(day_records):
    with FakeInseeServer(day_records, api_key=KEY, last_processed_at=datetime(2025, 3, 11, 6, 30)) as srv:
        yield srv


def make_client(server) -> InseeClient:
    return InseeClient(server.base_url, KEY, 6000, max_attempts=3, backoff_initial_s=0.01)


def spools(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".spool")]


def test_pages_reach_the_disk_as_they_arrive(server, day_records, tmp_path, monkeypatch):
    client = make_client(server)
    on_disk: list[tuple[int, int]] = []
    original = client.iter_day

    def watched(day, **kwargs):
        received = 0
        for page in original(day, page_size=100):
            yield page
            # Back here, the writer has stored the page: it is in the spool, not in memory.
            received += len(page)
            (spool,) = spools(tmp_path)
            on_disk.append((received, spool.read_bytes().count(b"\n")))

    monkeypatch.setattr(client, "iter_day", watched)
    landed = land_day_with_client(client, DAY, tmp_path, {"source": "test"})
    assert len(on_disk) == 5
    assert [lines for _, lines in on_disk[:-1]] == [received for received, _ in on_disk[:-1]]
    assert landed.rows == landed.received == landed.total == len(day_records)
    assert spools(tmp_path) == []  # the spool is gone once the partition is in place


def test_the_streamed_partition_is_what_the_in_memory_path_wrote(server, tmp_path):
    # INSEE may send a SIRET twice. Request 1 is /informations, 2 the first page.
    server.set_faults({2: Fault.duplicate(7)})
    landed = land_day_with_client(make_client(server), DAY, tmp_path / "streamed", {"source": "t"})
    server.reset()
    server.set_faults({1: Fault.duplicate(7)})
    received = fetch_day(make_client(server), DAY)
    assert (landed.received, landed.rows) == (len(received), len(latest_per_siret(received)))
    assert (landed.received, landed.rows) == (457, 450)

    streamed = read_partition(tmp_path / "streamed", DAY)
    reference = write_partition(tmp_path / "memory", DAY, latest_per_siret(received), streamed.meta)
    assert gzip.decompress(landed.path.read_bytes()) == gzip.decompress(reference.read_bytes())
    assert streamed.meta["received"] == len(received) and streamed.meta["total"] == 450


def test_the_writer_keeps_the_latest_version_in_first_seen_order(tmp_path):
    stamp = "dateDernierTraitementEtablissement"
    a1 = {"siret": "A", stamp: "2025-03-10T05:00:00.000", "v": 1}
    b1 = {"siret": "B", stamp: "2025-03-10T05:00:00.000", "v": 1}
    a2 = {"siret": "A", stamp: "2025-03-10T09:00:00.000", "v": 2}
    a0 = {"siret": "A", stamp: "2025-03-10T01:00:00.000", "v": 0}
    b2 = {"siret": "B", stamp: "2025-03-10T05:00:00.000", "v": 2}
    with PartitionWriter(tmp_path, DAY) as writer:
        writer.add([a1, b1])
        writer.add([a2, a0, b2])
        writer.commit({"source": "t"})
    assert read_partition(tmp_path, DAY).records == [a2, b2] == latest_per_siret([a1, b1, a2, a0, b2])


def test_a_read_that_fails_lands_nothing_and_keeps_the_previous_partition(server, tmp_path):
    previous = write_partition(tmp_path, DAY, [{"siret": "00000000000000"}], {"source": "old"})
    before = previous.read_bytes()
    server.set_faults({2: Fault.drop(2)})
    with pytest.raises(InseeApiError, match="448 of the 450"):
        land_day_with_client(make_client(server), DAY, tmp_path, {"source": "t"})
    assert previous.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [columns_path(tmp_path, DAY), partition_path(tmp_path, DAY)]


def test_a_day_not_complete_reads_and_lands_nothing(server, tmp_path):
    server.last_processed_at = datetime(2025, 3, 9, 23, 50)
    server.made_available_at = datetime(2025, 3, 10, 6, 10)
    landed = land_day_with_client(make_client(server), DAY, tmp_path)
    assert not landed.published and landed.path is None
    assert [r.path for r in server.requests] == ["/informations"]
    assert list(tmp_path.iterdir()) == []


def test_landed_names_are_read_back_by_one_function(tmp_path):
    path = partition_path(tmp_path, DAY)
    assert parse_landed_name(path.name) == LandedName(DAY, is_partition=True)
    assert parse_landed_name("2025-03-10.json.gz.meta") == LandedName(DAY, is_partition=False)
    assert parse_landed_name("2025-03-10.tmp") == LandedName(DAY, is_partition=False)
    for other in (".2025-03-10.json.gz.wait.json", "2025-13-40.json.gz", "2025-03-10", "notes.txt"):
        assert parse_landed_name(other) is None, other


def _json_never_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the partition's JSON was parsed")

    monkeypatch.setattr(landing_module, "read_partition", refuse)


def test_a_landed_day_has_its_columns_read_without_parsing_json(server, tmp_path, monkeypatch):
    server.set_faults({2: Fault.duplicate(7)})
    landed = land_day_with_client(make_client(server), DAY, tmp_path, {"source": "t"})
    expected = records_table(read_partition(tmp_path, DAY).records)
    with monkeypatch.context() as m:
        _json_never_read(m)
        columns = read_columns(tmp_path, DAY)
    assert columns.path == partition_path(tmp_path, DAY)
    assert columns.table.num_rows == landed.rows == 450
    assert columns.table.equals(expected)


def _record(siret: str, nom: str) -> dict:
    return {"siret": siret, "uniteLegale": {"denominationUniteLegale": nom}}


def test_columns_that_are_not_of_the_partition_are_rebuilt_from_it(tmp_path, monkeypatch):
    write_partition(tmp_path, DAY, [_record("11111111111111", "Ancienne")], {})
    previous_columns = columns_path(tmp_path, DAY).read_bytes()
    write_partition(tmp_path, DAY, [_record("22222222222222", "Nouvelle")], {})
    wanted = [("22222222222222", "Nouvelle")]

    def names(table):
        return list(zip(table.column("siret").to_pylist(),
                        table.column("denominationUniteLegale").to_pylist(), strict=True))

    # The columns of the previous partition (a crash between the two renames), damaged
    # columns, no columns: each time the partition is read and the columns made again.
    for damage in (
        lambda path: path.write_bytes(previous_columns),
        lambda path: path.write_bytes(previous_columns[: len(previous_columns) // 2]),
        lambda path: path.unlink(),
    ):
        damage(columns_path(tmp_path, DAY))
        assert names(read_columns(tmp_path, DAY).table) == wanted
        with monkeypatch.context() as m:
            _json_never_read(m)
            assert names(read_columns(tmp_path, DAY).table) == wanted


def test_columns_of_a_day_not_landed_are_a_clear_error(tmp_path):
    with pytest.raises(LandingError, match="has not been landed"):
        read_columns(tmp_path, DAY)
    assert not columns_path(tmp_path, DAY).exists()
