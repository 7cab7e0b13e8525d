"""The reference assets and their checks, materialized into a real PostgreSQL."""

import dagster as dg
import pytest

from foxreviews_pipeline.defs.reference.assets import naf_nomenclature, trade_taxonomy, villes
from foxreviews_pipeline.defs.reference.definitions import build_definitions
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.lib.reference.checks import REFERENCE_CHECKS
from foxreviews_pipeline.lib.reference.communes import load_communes
from foxreviews_pipeline.lib.reference.naf import load_naf
from foxreviews_pipeline_tests.reference.geo_server import GeoApiServer

ASSETS = [naf_nomenclature, trade_taxonomy, villes]


@pytest.fixture
def resources(database_url, tmp_path):
    return {"postgres": PostgresResource(database_url=database_url, home=str(tmp_path / "home"))}


def _materialize(resources, selection=None, run_config=None, raise_on_error=True):
    return dg.materialize(
        ASSETS, resources=resources, selection=selection,
        run_config=run_config, raise_on_error=raise_on_error,
    )


def _metadata(result, key):
    [mat] = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in mat.metadata.items()}


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_definitions_load():
    defs = dg.Definitions.merge(
        build_definitions(),
        dg.Definitions(resources={"postgres": PostgresResource(database_url="postgresql://u@127.0.0.1/x", home="/tmp/x")}),
    )
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"naf_nomenclature", "trade_taxonomy", "villes"}
    assert {k.name for k in graph.asset_check_keys} == {
        "naf_code_count", "naf_codes_well_formed", "every_naf_code_covered", "mapped_trades_reachable",
        "taxonomy_size", "villes_count", "villes_unique_keys", "villes_have_departement_and_region",
        "commune_aliases_resolve",
    }
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert "every_naf_code_covered" in blocking
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name == "reference" and node.kinds == {"postgres"} and node.description
    assert graph.get(dg.AssetKey("trade_taxonomy")).parent_keys == {dg.AssetKey("naf_nomenclature")}


def test_materialize_into_an_empty_database_then_again(resources, pg_conn):
    first = _materialize(resources)
    assert first.success
    assert all(_checks(first).values()), _checks(first)
    assert len(_checks(first)) == len(REFERENCE_CHECKS)
    naf, taxonomy, ville = (_metadata(first, k) for k in ("naf_nomenclature", "trade_taxonomy", "villes"))
    assert (naf["rows"], naf["inserted"]) == (732 + 747, 732 + 747)
    assert (naf["rows_naf_rev2"], naf["rows_naf2025"], naf["correspondence_pairs"]) == (732, 747, 1223)
    assert taxonomy["naf_codes_mapped"] + taxonomy["naf_codes_excluded"] == 732
    assert (ville["rows"], ville["inserted"], ville["source"]) == (34_969, 34_969, "snapshot")
    # The catalog: each table by name, its live columns, its rows.
    assert (ville["dagster/table_name"], ville["dagster/row_count"]) == ("public.location_ville", 34_969)
    assert naf["dagster/row_count"] == 732 + 747
    assert "code_insee" in {c.name for c in ville["dagster/column_schema"].columns}

    labels = dict(pg_conn.execute("SELECT code, libelle FROM ref_naf_nomenclature WHERE nomenclature = 'NAFRev2'"))
    assert labels == {n.code: n.libelle for n in load_naf()}
    covered = pg_conn.execute("""
        SELECT count(*) FROM ref_naf_nomenclature n
        JOIN ref_naf_mapping m ON m.nomenclature = n.nomenclature AND m.naf_code = n.code
        WHERE n.nomenclature = 'NAFRev2'
    """).fetchone()[0]
    assert covered == 732
    assert pg_conn.execute("SELECT count(*) FROM location_ville WHERE is_active").fetchone()[0] == 34_969
    pg_conn.commit()
    stamp = pg_conn.execute("""
        SELECT (SELECT max(updated_at) FROM location_ville), (SELECT max(updated_at) FROM ref_naf_mapping),
               (SELECT max(updated_at) FROM subcategory_souscategorie), (SELECT max(updated_at) FROM ref_naf_nomenclature)
    """).fetchone()
    pg_conn.commit()

    second = _materialize(resources)
    assert second.success and all(_checks(second).values())
    for key in ("naf_nomenclature", "trade_taxonomy", "villes"):
        meta = _metadata(second, key)
        assert (meta["inserted"], meta["updated"], meta["deactivated"]) == (0, 0, 0), key
    assert pg_conn.execute("""
        SELECT (SELECT max(updated_at) FROM location_ville), (SELECT max(updated_at) FROM ref_naf_mapping),
               (SELECT max(updated_at) FROM subcategory_souscategorie), (SELECT max(updated_at) FROM ref_naf_nomenclature)
    """).fetchone() == stamp


def test_an_uncovered_naf_code_fails_the_blocking_check(resources, pg_conn):
    assert _materialize(resources, selection=["naf_nomenclature", "trade_taxonomy"]).success
    pg_conn.execute("""
        INSERT INTO ref_naf_nomenclature (code, libelle, section, division, groupe, classe)
        VALUES ('99.99Z', 'Activité nouvelle', 'U', '99', '99.9', '99.99')
    """)
    pg_conn.commit()
    result = _materialize(resources, selection=["trade_taxonomy"], raise_on_error=False)
    assert not result.success
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == "every_naf_code_covered"]
    assert evaluation.passed is False
    assert evaluation.metadata["sample"].value == ["99.99Z"]
    assert evaluation.metadata["covered"].value == 732


def test_villes_from_geo_api(resources, pg_conn):
    # The whole country in the API's format, with coordinates, so that the count check holds.
    communes = [
        {"nom": c.nom, "code": c.code_insee, "codesPostaux": list(c.codes_postaux),
         "centre": {"type": "Point", "coordinates": [2.0 + i / 1e5, 46.0]}, "population": c.population,
         "codeDepartement": c.departement}
        for i, c in enumerate(load_communes())
    ]
    with GeoApiServer(communes, regions=[]) as server:
        result = _materialize(resources, selection=["villes"], run_config={
            "ops": {"villes": {"config": {"source": "geo_api", "geo_api_base_url": server.base_url}}}
        })
    meta = _metadata(result, "villes")
    assert (meta["source"], meta["rows"], meta["with_coordinates"]) == ("geo_api", 34_969, 34_969)
    assert all(_checks(result).values())
    lat, lng, region = pg_conn.execute("SELECT lat, lng, region FROM location_ville WHERE code_insee = '01001'").fetchone()
    assert (lat, lng, region) == (46.0, 2.0, "Auvergne-Rhône-Alpes")
    # The towns' changes are in the change feed under the asset's name and the run's id.
    recorded = pg_conn.execute(
        "SELECT partition, run_id, count(*) FROM directory_changes_since(0, 1000000) WHERE entity = 'ville' "
        "GROUP BY 1, 2"
    ).fetchall()
    assert [(p, r) for p, r, _ in recorded] == [("villes", result.run_id)]
    assert recorded[0][2] >= 34_969


def test_a_villes_load_that_fails_a_blocking_check_leaves_the_table_as_it_was(resources, pg_conn):
    assert _materialize(resources, selection=["villes"]).success
    before = pg_conn.execute("SELECT count(*), max(updated_at) FROM location_ville").fetchone()
    pg_conn.commit()
    # geo.api answering only a handful of communes, all renamed: far below the count check.
    communes = [
        {"nom": f"{c.nom} (renamed)", "code": c.code_insee, "codesPostaux": list(c.codes_postaux),
         "centre": {"type": "Point", "coordinates": [2.0, 46.0]}, "population": c.population,
         "codeDepartement": c.departement}
        for c in load_communes()[:10]
    ]
    with GeoApiServer(communes, regions=[]) as server:
        result = _materialize(resources, selection=["villes"], raise_on_error=False, run_config={
            "ops": {"villes": {"config": {"source": "geo_api", "geo_api_base_url": server.base_url}}}
        })
    assert not result.success
    assert _checks(result)["villes_count"] is False
    assert not result.asset_materializations_for_node("villes")
    # Held back: nothing of the load was committed, not even the ten renamed communes.
    assert pg_conn.execute("SELECT count(*), max(updated_at) FROM location_ville").fetchone() == before
    assert pg_conn.execute("SELECT count(*) FROM location_ville WHERE nom LIKE '%(renamed)'").fetchone()[0] == 0
