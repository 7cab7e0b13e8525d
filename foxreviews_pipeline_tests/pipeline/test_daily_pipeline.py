"""The SIRENE chain through Dagster on a real PostgreSQL: idempotence, ordering, closures,
metadata, the landing zone.

Each test builds the platform's own resources from the settings (`build_resources`) with a
2,000-record sample source, materializes the reference assets once, then one or two SIRENE
days. The sample is deterministic per date, and about 20 % of a day's records are updates of
establishments first seen on earlier days, so consecutive days share a few SIRETs.
"""

from __future__ import annotations

import copy
import gzip
import json
import socket
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.reference.definitions import REFERENCE_ASSETS
from foxreviews_pipeline.defs.resources import build_resources
from foxreviews_pipeline.defs.sirene.assets import RAW_DATASET, etablissements_raw
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.settings import load_settings
from foxreviews_pipeline.lib.sirene import landing as landing_module
from foxreviews_pipeline.lib.sirene.landing import (
    columns_path,
    partition_path,
    read_partition,
    write_partition,
)
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS
from foxreviews_pipeline.sample.fake_server import FakeInseeServer, Fault
from foxreviews_pipeline.sample.source import sample_day_source
from foxreviews_pipeline_tests.sirene.row_mapping import map_records

from .conftest import load_reference

DAY1, DAY2 = "2026-11-19", "2026-11-20"
SIZE = 2_000
CHAIN = [etablissements_raw, directory_day]


@dataclass
class Pipeline:
    url: str
    landing: Path
    resources: dict

    def run(self, assets, day: str, *, raise_on_error: bool = True, **overrides):
        """Materialize `assets` for `day`; return the result and each asset's metadata."""
        result = dg.materialize(
            assets,
            partition_key=day,
            resources={**self.resources, **overrides},
            raise_on_error=raise_on_error,
        )
        return result, materialization_metadata(result)

    def records(self, day: str) -> dict[str, dict]:
        return {r["siret"]: r for r in read_partition(self.landing, day).records}


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return found


@pytest.fixture
def pipeline(platform_env, database_url) -> Pipeline:
    """The platform's resources on this test's database, a 2,000-record sample source, and
    the reference assets (NAF codes, trades, villes) materialized through Dagster."""
    settings = load_settings()
    resources = {
        **build_resources(settings),
        "sirene": SireneSource(source="sample", sample_size=SIZE),
    }
    result = dg.materialize(REFERENCE_ASSETS, resources=resources)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert materialization_metadata(result)["naf_nomenclature"]["rows_naf_rev2"] == 732
    return Pipeline(database_url, settings.home / "landing" / RAW_DATASET, resources)


def table_state(url: str) -> tuple[list, list]:
    """Every row of both tables, with its row version (xmin): any write would show."""
    with psycopg.connect(url) as conn:
        ent = conn.execute(
            "SELECT siret, xmin::text, e::text FROM enterprise_entreprise e ORDER BY siret"
        ).fetchall()
        pl = conn.execute(
            "SELECT id, xmin::text, p::text FROM enterprise_prolocalisation p ORDER BY id"
        ).fetchall()
    return ent, pl


def current_state(record: dict) -> str:
    return record["periodesEtablissement"][0]["etatAdministratifEtablissement"]


# -- (a) a day materialized twice ---------------------------------------------------------


def test_a_day_materialized_twice_changes_nothing_the_second_time(pipeline):
    result, first = pipeline.run(CHAIN, DAY1)
    assert first["etablissements_raw"]["rows"] == SIZE
    assert first["entreprises"]["inserted"] > SIZE * 0.9
    assert first["pro_localisations"]["created"] > 0
    assert all(e.passed for e in result.get_asset_check_evaluations())
    before = table_state(pipeline.url)
    assert len(before[0]) == first["entreprises"]["inserted"]
    assert len(before[1]) == first["pro_localisations"]["created"]
    # The change feed's counts (docs/change-feed.md), the same on both assets.
    assert first["entreprises"]["changes"] == first["pro_localisations"]["changes"] == {
        "entreprise": {"created": first["entreprises"]["inserted"]},
        "prolocalisation": {"created": first["pro_localisations"]["created"]},
    }

    result, again = pipeline.run(CHAIN, DAY1)
    assert result.success
    ent = again["entreprises"]
    assert (ent["inserted"], ent["updated"], ent["closed"], ent["reopened"]) == (0, 0, 0, 0)
    assert ent["unchanged"] == first["entreprises"]["inserted"]
    p = again["pro_localisations"]
    assert (p["created"], p["reactivated"], p["deactivated"]) == (0, 0, 0)
    assert table_state(pipeline.url) == before
    assert again["entreprises"]["changes"] == again["pro_localisations"]["changes"] == {}
    # Every blocking check ran and passed the second time too.
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "valid_identifiers", "records_usable", "one_row_per_siret", "no_nd_stored", "diffusion_policy",
        "positions_in_territory", "villes_resolved", "trades_resolved",
    }
    assert all(e.passed for e in evaluations)


# -- (b) an older day after a newer one ---------------------------------------------------


def test_an_older_day_after_a_newer_one_does_not_regress(pipeline):
    pipeline.run(CHAIN, DAY2)
    pipeline.run([etablissements_raw], DAY1)
    newer = {r[0]: r for r in map_records(pipeline.records(DAY2).values())[0]}
    older = {r[0]: r for r in map_records(pipeline.records(DAY1).values())[0]}
    both = sorted(set(older) & set(newer))
    assert both, "the sample re-uses SIRETs of earlier days"
    # The older versions really differ (closure, move, trade, sign…), not only by date.
    business = [i for i, c in enumerate(ENTREPRISE_COLUMNS) if c != "date_dernier_traitement"]
    assert any(older[s][i] != newer[s][i] for s in both for i in business)

    proloc_query = (
        "SELECT p.id, p.xmin::text, p::text FROM enterprise_prolocalisation p "
        "JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE e.siret = ANY(%s) ORDER BY p.id"
    )
    with psycopg.connect(pipeline.url) as conn:
        prolocs_before = conn.execute(proloc_query, (both,)).fetchall()

    _, day1 = pipeline.run([directory_day], DAY1)
    assert day1["entreprises"]["stale_skipped"] == len(both)

    cols = ", ".join(ENTREPRISE_COLUMNS)
    with psycopg.connect(pipeline.url) as conn:
        stored = {
            r[0]: r
            for r in conn.execute(
                f"SELECT {cols} FROM enterprise_entreprise WHERE siret = ANY(%s)", (both,)
            )
        }
        partitions = dict(conn.execute(
            "SELECT siret, last_partition FROM enterprise_entreprise WHERE siret = ANY(%s)", (both,)
        ))
        prolocs_after = conn.execute(proloc_query, (both,)).fetchall()
    for siret in both:
        assert stored[siret] == newer[siret], siret
        assert partitions[siret] == DAY2
    # Their ProLocalisations were not touched either.
    assert prolocs_after == prolocs_before


# -- (c) an establishment that closes on day 2 ----------------------------------------------


def test_an_establishment_closed_on_day_two_in_the_sample_has_its_prolocalisation_retired(pipeline):
    pipeline.run(CHAIN, DAY1)
    pipeline.run([etablissements_raw], DAY2)
    day1, day2 = pipeline.records(DAY1), pipeline.records(DAY2)
    with psycopg.connect(pipeline.url) as conn:
        active = {s for (s,) in conn.execute("SELECT siret FROM enterprise_entreprise WHERE is_active")}
        active_prolocs = dict(conn.execute(
            "SELECT e.siret, count(*) FROM enterprise_prolocalisation p "
            "JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE p.is_active GROUP BY 1"
        ).fetchall())
        total_before = conn.execute("SELECT count(*) FROM enterprise_prolocalisation").fetchone()[0]
    closing = sorted(
        s for s, r in day2.items()
        if s in day1 and s in active and current_state(day1[s]) == "A" and current_state(r) == "F"
    )
    with_page = [s for s in closing if s in active_prolocs]
    # The sample is deterministic: at 2,000 records these two days hold such a closure.
    assert with_page, "no establishment of day 1 with a ProLocalisation closes on day 2"

    _, found = pipeline.run([directory_day], DAY2)
    assert found["entreprises"]["closed"] == len(closing)
    assert found["pro_localisations"]["deactivated_by_reason"].get("closed") == sum(
        active_prolocs[s] for s in with_page
    )
    with psycopg.connect(pipeline.url) as conn:
        for siret in with_page:
            rows = conn.execute(
                "SELECT e.is_active, e.date_fermeture, p.is_active, p.deactivation_reason, "
                "p.deactivated_at IS NOT NULL, p.last_partition "
                "FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
                "WHERE e.siret = %s",
                (siret,),
            ).fetchall()
            closed_on = date.fromisoformat(day2[siret]["periodesEtablissement"][0]["dateDebut"])
            assert rows == [(False, closed_on, False, "closed", True, DAY2)] * active_prolocs[siret]
        # Retired, never deleted.
        total_after = conn.execute("SELECT count(*) FROM enterprise_prolocalisation").fetchone()[0]
    assert total_after >= total_before


def test_a_closure_crafted_into_day_two_retires_the_prolocalisation(pipeline):
    pipeline.run(CHAIN, DAY1)
    with psycopg.connect(pipeline.url) as conn:
        siret = conn.execute(
            "SELECT e.siret FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
            "WHERE p.is_active ORDER BY e.siret LIMIT 1"
        ).fetchone()[0]
    record = copy.deepcopy(pipeline.records(DAY1)[siret])
    record["dateDernierTraitementEtablissement"] = f"{DAY2}T05:00:00.000"
    closed = dict(record["periodesEtablissement"][0], dateDebut=DAY2, dateFin=None,
                  etatAdministratifEtablissement="F", changementEtatAdministratifEtablissement=True)
    record["periodesEtablissement"] = [closed] + [
        dict(p, dateFin="2026-11-19") if p.get("dateFin") is None else p
        for p in record["periodesEtablissement"]
    ]
    record["nombrePeriodesEtablissement"] = len(record["periodesEtablissement"])
    write_partition(pipeline.landing, date.fromisoformat(DAY2), [record], {"source": "test"})

    _, day2 = pipeline.run([directory_day], DAY2)
    assert day2["entreprises"]["closed"] == 1
    assert day2["pro_localisations"]["deactivated_by_reason"] == {"closed": 1}
    with psycopg.connect(pipeline.url) as conn:
        rows = conn.execute(
            "SELECT e.is_active, e.date_fermeture, p.is_active, p.deactivation_reason "
            "FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE e.siret = %s",
            (siret,),
        ).fetchall()
    assert rows == [(False, date.fromisoformat(DAY2), False, "closed")]


# -- (d) the metadata of etablissements_raw -------------------------------------------------


def test_etablissements_raw_reports_rows_api_calls_retries_and_429s(pipeline):
    # The api source against a local INSEE that answers one 429 and one 503 (both with
    # Retry-After: 0, so the retries cost no time).
    faults = {2: Fault.http(429, retry_after=0), 4: Fault.http(503, retry_after=0)}
    with FakeInseeServer(
        day_source=sample_day_source(SIZE), api_key="test-key", faults=faults,
        last_processed_at=datetime(2026, 11, 20, 6, 30),
    ) as server:
        source = SireneSource(source="api", insee_base_url=server.base_url, insee_api_key="test-key",
                              insee_requests_per_minute=10_000)
        result, found = pipeline.run([etablissements_raw], DAY1, sirene=source)
        requests = server.requests
    assert result.success
    raw = found["etablissements_raw"]
    assert raw["rows"] == SIZE
    assert raw["source"] == "api"
    assert raw["http_429"] == 1
    assert raw["retries"] == 2
    assert raw["api_calls"] == len(requests) >= 5  # /informations, 2+ pages, 2 retried calls
    assert raw["duration_s"] > 0
    assert raw["path"] == str(partition_path(pipeline.landing, DAY1))

    # The sample source through the same client: no retries, no 429.
    _, found = pipeline.run([etablissements_raw], DAY1)
    raw = found["etablissements_raw"]
    assert (raw["rows"], raw["source"], raw["retries"], raw["http_429"]) == (SIZE, "sample", 0, 0)
    assert raw["api_calls"] >= 3


# -- (e) the landing zone -------------------------------------------------------------------


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_landed_file_is_atomic_and_downstream_needs_no_insee(pipeline, monkeypatch):
    pipeline.run([etablissements_raw], DAY1)
    landed = partition_path(pipeline.landing, DAY1)
    columns = columns_path(pipeline.landing, DAY1)
    # No temporary file: the partition and its columns.
    assert sorted(p.name for p in pipeline.landing.iterdir()) == [columns.name, landed.name]
    document = json.loads(gzip.decompress(landed.read_bytes()))
    assert document["partition"] == DAY1 and len(document["etablissements"]) == SIZE

    # A write that fails once the data is out (here: the flush to disk) leaves the previous
    # file whole and no temporary file behind.
    before = landed.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(landing_module.os, "fsync", failing_fsync)
        with pytest.raises(OSError, match="No space left"):
            write_partition(pipeline.landing, date.fromisoformat(DAY1), [{"siret": "x"}] * 10, {})
    assert landed.read_bytes() == before
    assert sorted(p.name for p in pipeline.landing.iterdir()) == [columns.name, landed.name]

    # INSEE unreachable: the directory assets only read the landed file.
    assert _refused(9)
    dead = SireneSource(source="api", insee_api_key="k", insee_base_url="http://127.0.0.1:9/api-sirene/3.11")
    result, found = pipeline.run([directory_day], DAY1, sirene=dead)
    assert result.success
    assert found["entreprises"]["inserted"] > SIZE * 0.9
    assert found["pro_localisations"]["created"] > 0
    # And again, still without INSEE: nothing changes.
    _, found = pipeline.run([directory_day], DAY1, sirene=dead)
    assert (found["entreprises"]["inserted"], found["entreprises"]["updated"]) == (0, 0)


# -- failures that must stop the day --------------------------------------------------------


def test_a_day_with_no_villes_loaded_fails_the_blocking_check(platform_env, database_url):
    load_reference(database_url, villes=False)
    resources = {**build_resources(load_settings()), "sirene": SireneSource(sample_size=SIZE)}
    result = dg.materialize(CHAIN, partition_key=DAY1, resources=resources, raise_on_error=False)
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"villes_resolved"}
    meta = failed["villes_resolved"].metadata
    assert meta["unmatched_by_reason"].value.get("commune_unknown", 0) > 0
    # Held back: neither directory asset is materialized.
    assert "entreprises" not in materialization_metadata(result)


def test_a_partition_not_landed_names_the_missing_step(pipeline):
    with pytest.raises(Exception, match="materialize etablissements_raw for it first"):
        pipeline.run([directory_day], DAY1)


def test_the_catalog_shows_each_table_its_live_schema_and_its_rows(pipeline):
    result, metadata = pipeline.run(CHAIN, DAY1)
    # The checks are partitioned like their assets: each result names its day.
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 8 and {e.partition for e in evaluations} == {DAY1}
    with psycopg.connect(pipeline.url) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM enterprise_entreprise WHERE last_partition = %s", (DAY1,)
        ).fetchone()[0]
        pages = conn.execute(
            "SELECT count(*) FROM enterprise_prolocalisation p JOIN enterprise_entreprise e "
            "ON e.id = p.entreprise_id WHERE e.last_partition = %s", (DAY1,)
        ).fetchone()[0]
        conn.execute("ALTER TABLE enterprise_entreprise ADD COLUMN catalog_probe integer")
    entreprises, pages_meta = metadata["entreprises"], metadata["pro_localisations"]
    assert entreprises["dagster/table_name"] == "public.enterprise_entreprise"
    assert pages_meta["dagster/table_name"] == "public.enterprise_prolocalisation"
    # The rows this day wrote last: what the partition holds.
    assert (entreprises["dagster/row_count"], pages_meta["dagster/row_count"]) == (stored, pages)
    assert stored > 1_000 and pages > 0
    columns = {c.name: c for c in entreprises["dagster/column_schema"].columns}
    assert columns["siret"].constraints.nullable is False
    assert columns["siret"].type == "text" and columns["created_at"].type == "timestamp with time zone"
    assert "naf_rev2_code" in columns
    assert "catalog_probe" not in columns
    # Read from the live table: a column added since shows on the next materialization.
    _, again = pipeline.run(CHAIN, DAY1)
    assert "catalog_probe" in {c.name for c in again["entreprises"]["dagster/column_schema"].columns}
