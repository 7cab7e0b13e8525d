"""The SIRENE chain through Dagster on a real PostgreSQL: idempotence, ordering, closures."""

import copy
import gzip
import json
from datetime import date
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.assets import entreprises, pro_localisations
from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.sirene.landing import partition_path, read_partition, write_partition
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS, map_records

from .conftest import load_reference

DAY1, DAY2 = "2026-11-19", "2026-11-20"
SIZE = 2_000


def resources(url: str, tmp_path: Path, **sirene) -> dict:
    return {
        "postgres": PostgresResource(database_url=url, home=str(tmp_path / "home")),
        "landing_zone": LandingZone(root=str(tmp_path / "landing")),
        "sirene": SireneSource(**({"source": "sample", "sample_size": SIZE} | sirene)),
    }


def materialize(assets, day, url, tmp_path, **kw):
    result = dg.materialize(assets, partition_key=day, resources=resources(url, tmp_path), **kw)
    found = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        found[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return result, found


CHAIN = [etablissements_raw, entreprises, pro_localisations]


def table_state(url):
    with psycopg.connect(url) as conn:
        ent = conn.execute(
            "SELECT siret, xmin::text, updated_at, is_active, nom FROM enterprise_entreprise ORDER BY siret"
        ).fetchall()
        pl = conn.execute(
            "SELECT id, xmin::text, is_active FROM enterprise_prolocalisation ORDER BY id"
        ).fetchall()
    return ent, pl


def test_a_day_materialized_twice_changes_nothing_the_second_time(reference_db, tmp_path):
    _, first = materialize(CHAIN, DAY1, reference_db, tmp_path)
    assert first["etablissements_raw"]["rows"] == SIZE
    assert first["etablissements_raw"]["api_calls"] >= 3  # /informations + pages through the real client
    assert {"retries", "http_429", "duration_s"} <= set(first["etablissements_raw"])
    assert first["entreprises"]["inserted"] > SIZE * 0.9
    assert first["pro_localisations"]["created"] > 0
    before = table_state(reference_db)

    result, again = materialize(CHAIN, DAY1, reference_db, tmp_path)
    assert result.success
    assert (again["entreprises"]["inserted"], again["entreprises"]["updated"]) == (0, 0)
    p = again["pro_localisations"]
    assert (p["created"], p["reactivated"], p["deactivated"]) == (0, 0, 0)
    assert table_state(reference_db) == before
    # Every blocking check passed.
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 5 and all(e.passed for e in evaluations)


def test_an_older_day_after_a_newer_one_does_not_regress(reference_db, tmp_path):
    materialize(CHAIN, DAY2, reference_db, tmp_path)
    _, older = materialize(CHAIN, DAY1, reference_db, tmp_path)
    landing = tmp_path / "landing" / "etablissements"
    newer_rows = {r[0]: r for r in map_records(read_partition(landing, DAY2).records)[0]}
    older_sirets = {r["siret"] for r in read_partition(landing, DAY1).records}
    both = sorted(older_sirets & set(newer_rows))
    assert both, "the sample re-uses SIRETs of earlier days"
    assert older["entreprises"]["stale_skipped"] >= 0
    cols = ", ".join(ENTREPRISE_COLUMNS)
    with psycopg.connect(reference_db) as conn:
        stored = {r[0]: r for r in conn.execute(
            f"SELECT {cols} FROM enterprise_entreprise WHERE siret = ANY(%s)", (both,))}
        partitions = dict(conn.execute(
            "SELECT siret, last_partition FROM enterprise_entreprise WHERE siret = ANY(%s)", (both,)))
    for siret in both:
        assert stored[siret] == newer_rows[siret]
        assert partitions[siret] == DAY2


def test_an_establishment_closed_on_day_two_has_its_prolocalisation_retired(reference_db, tmp_path):
    materialize(CHAIN, DAY1, reference_db, tmp_path)
    landing = tmp_path / "landing" / "etablissements"
    with psycopg.connect(reference_db) as conn:
        siret = conn.execute(
            "SELECT e.siret FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
            "WHERE p.is_active ORDER BY e.siret LIMIT 1"
        ).fetchone()[0]
    record = copy.deepcopy(next(r for r in read_partition(landing, DAY1).records if r["siret"] == siret))
    record["dateDernierTraitementEtablissement"] = f"{DAY2}T05:00:00.000"
    closed = dict(record["periodesEtablissement"][0], dateDebut=DAY2, etatAdministratifEtablissement="F")
    record["periodesEtablissement"] = [closed] + [
        dict(p, dateFin=DAY2) if p.get("dateFin") is None else p for p in record["periodesEtablissement"]
    ]
    write_partition(landing, date.fromisoformat(DAY2), [record], {"source": "test"})

    _, day2 = materialize([entreprises, pro_localisations], DAY2, reference_db, tmp_path)
    assert day2["entreprises"]["closed"] == 1
    assert day2["pro_localisations"]["deactivated_by_reason"] == {"closed": 1}
    with psycopg.connect(reference_db) as conn:
        rows = conn.execute(
            "SELECT e.is_active, e.date_fermeture, p.is_active, p.deactivation_reason "
            "FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE e.siret = %s",
            (siret,),
        ).fetchall()
    assert rows == [(False, date.fromisoformat(DAY2), False, "closed")]


def test_the_landed_file_is_atomic_and_downstream_needs_no_insee(reference_db, tmp_path):
    materialize([etablissements_raw], DAY1, reference_db, tmp_path)
    landing = tmp_path / "landing" / "etablissements"
    assert [p.name for p in landing.iterdir()] == [f"{DAY1}.json.gz"]
    document = json.loads(gzip.decompress(partition_path(landing, DAY1).read_bytes()))
    assert len(document["etablissements"]) == SIZE

    # INSEE unreachable: the directory assets only read the landed file.
    dead = resources(reference_db, tmp_path, source="api", insee_api_key="k",
                     insee_base_url="http://127.0.0.1:9/api-sirene/3.11")
    result = dg.materialize([entreprises, pro_localisations], partition_key=DAY1, resources=dead)
    assert result.success


def test_a_day_with_no_villes_loaded_fails_the_blocking_check(database_url, tmp_path):
    load_reference(database_url, villes=False)
    result, found = materialize(CHAIN, DAY1, database_url, tmp_path, raise_on_error=False)
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"villes_resolved"}
    assert found["pro_localisations"]["unmatched_by_reason"].get("commune_unknown", 0) > 0


def test_a_partition_not_landed_names_the_missing_step(reference_db, tmp_path):
    with pytest.raises(Exception, match="materialize etablissements_raw for it first"):
        materialize([entreprises], DAY1, reference_db, tmp_path)
