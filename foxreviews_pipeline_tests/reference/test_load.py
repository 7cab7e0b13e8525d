"""Set-based reference writes against a real PostgreSQL."""

import dataclasses

import pytest

from foxreviews_pipeline.lib.reference.communes import (
    Commune,
    CommuneAlias,
    load_aliases,
    load_communes,
)
from foxreviews_pipeline.lib.reference.geo_api import fetch_communes
from foxreviews_pipeline.lib.reference.load import (
    load_naf_nomenclature,
    load_trade_taxonomy,
    load_villes,
)
from foxreviews_pipeline.lib.reference.naf import load_naf
from foxreviews_pipeline.lib.reference.taxonomy import NafMapping, TaxonomyError, load_taxonomy
from foxreviews_pipeline_tests.reference.geo_server import GeoApiServer


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy()


def _trade_ids(conn) -> dict[str, tuple[int, bool, str]]:
    return {slug: (id_, active, nom) for id_, slug, active, nom in
            conn.execute("SELECT id, slug, is_active, nom FROM subcategory_souscategorie")}


def _mapping(conn) -> dict[str, int | None]:
    return dict(conn.execute("SELECT naf_code, sous_categorie_id FROM ref_naf_mapping WHERE nomenclature = 'NAFRev2'"))


def test_naf_load_is_idempotent(pg_conn):
    first = load_naf_nomenclature(pg_conn, load_naf())
    assert (first.rows, first.inserted, first.updated) == (732, 732, 0)
    second = load_naf_nomenclature(pg_conn, load_naf())
    assert (second.rows, second.changed) == (732, 0)
    changed = [dataclasses.replace(n, libelle="Programmation") if n.code == "62.01Z" else n for n in load_naf()]
    third = load_naf_nomenclature(pg_conn, changed)
    assert (third.inserted, third.updated) == (0, 1)


def test_taxonomy_load_then_rerun_changes_nothing(pg_conn, taxonomy):
    load_naf_nomenclature(pg_conn, load_naf())
    first = load_trade_taxonomy(pg_conn, taxonomy)
    assert first.categories.inserted == len(taxonomy.categories)
    assert first.sous_categories.inserted == len(taxonomy.sous_categories)
    assert first.mapping.inserted == 732
    uncovered = pg_conn.execute("""
        SELECT count(*) FROM ref_naf_nomenclature n
        LEFT JOIN ref_naf_mapping m ON m.nomenclature = n.nomenclature AND m.naf_code = n.code
        WHERE m.naf_code IS NULL
    """).fetchone()[0]
    assert uncovered == 0
    plombier = pg_conn.execute("""
        SELECT s.slug FROM ref_naf_mapping m JOIN subcategory_souscategorie s ON s.id = m.sous_categorie_id
        WHERE m.naf_code = '43.22A'
    """).fetchone()[0]
    assert plombier == "plombier"
    assert load_trade_taxonomy(pg_conn, taxonomy).total.changed == 0


def test_a_renamed_trade_keeps_its_id_and_mappings(pg_conn, taxonomy):
    load_trade_taxonomy(pg_conn, taxonomy)
    before_ids, before_mapping = _trade_ids(pg_conn), _mapping(pg_conn)
    renamed = dataclasses.replace(taxonomy, sous_categories=tuple(
        dataclasses.replace(s, nom="Plombier et dépanneur") if s.slug == "plombier" else s
        for s in taxonomy.sous_categories
    ))
    counts = load_trade_taxonomy(pg_conn, renamed)
    assert (counts.sous_categories.updated, counts.sous_categories.inserted) == (1, 0)
    assert counts.mapping.changed == 0 and counts.categories.changed == 0
    after = _trade_ids(pg_conn)
    assert after["plombier"] == (before_ids["plombier"][0], True, "Plombier et dépanneur")
    assert _mapping(pg_conn) == before_mapping
    assert before_mapping["43.22A"] == before_ids["plombier"][0]


def test_a_removed_trade_is_deactivated_not_deleted(pg_conn, taxonomy):
    load_trade_taxonomy(pg_conn, taxonomy)
    casino_id = _trade_ids(pg_conn)["casino"][0]
    # A ProLocalisation refers to the trade: deleting it would break the web app's content.
    pg_conn.execute("""
        INSERT INTO location_ville (id, code_insee, nom, slug, nom_normalise, departement, region)
        VALUES (1, '06088', 'Nice', 'nice-06000', 'nice', '06', 'Provence-Alpes-Côte d''Azur');
        INSERT INTO enterprise_entreprise (id, siret, siren, nom) VALUES (1, '55208131766522', '552081317', 'Casino');
    """)
    pg_conn.execute("INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id) VALUES (1, %s, 1)",
                    (casino_id,))
    without = dataclasses.replace(
        taxonomy,
        sous_categories=tuple(s for s in taxonomy.sous_categories if s.slug != "casino"),
        mappings=tuple(
            NafMapping(m.nomenclature, m.naf_code, m.libelle, None, "Jeux d'argent : hors annuaire")
            if m.sous_categorie == "casino" else m
            for m in taxonomy.mappings
        ),
    )
    counts = load_trade_taxonomy(pg_conn, without)
    assert counts.sous_categories.deactivated == 1
    assert counts.mapping.updated == 1
    assert _trade_ids(pg_conn)["casino"] == (casino_id, False, "Casino et jeux")
    assert pg_conn.execute("SELECT excluded_reason FROM ref_naf_mapping WHERE naf_code = '92.00Z'").fetchone()[0]
    assert load_trade_taxonomy(pg_conn, without).total.changed == 0
    # Putting it back reactivates the same row.
    back = load_trade_taxonomy(pg_conn, taxonomy)
    assert back.sous_categories.updated == 1 and _trade_ids(pg_conn)["casino"] == (casino_id, True, "Casino et jeux")


def test_trades_created_by_uploads_are_left_alone(pg_conn, taxonomy):
    pg_conn.execute("INSERT INTO category_categorie (slug, nom) VALUES ('staff', 'Ajout du staff')")
    pg_conn.execute("""INSERT INTO subcategory_souscategorie (categorie_id, slug, nom, meta_description)
                       SELECT id, 'staff-trade', 'Métier du staff', '' FROM category_categorie WHERE slug = 'staff'""")
    load_trade_taxonomy(pg_conn, taxonomy)
    assert _trade_ids(pg_conn)["staff-trade"][1] is True


def test_meta_description_from_the_web_app_is_kept(pg_conn, taxonomy):
    load_trade_taxonomy(pg_conn, taxonomy)
    pg_conn.execute("UPDATE subcategory_souscategorie SET meta_description = 'SEO' WHERE slug = 'plombier'")
    assert load_trade_taxonomy(pg_conn, taxonomy).total.changed == 0
    assert pg_conn.execute("SELECT meta_description FROM subcategory_souscategorie WHERE slug = 'plombier'").fetchone()[0] == "SEO"


def test_an_inconsistent_taxonomy_writes_nothing(pg_conn, taxonomy):
    broken = dataclasses.replace(taxonomy, mappings=(*taxonomy.mappings, NafMapping("NAFRev2", "43.22A", "", "x", None)))
    with pytest.raises(TaxonomyError):
        load_trade_taxonomy(pg_conn, broken)
    assert pg_conn.execute("SELECT count(*) FROM subcategory_souscategorie").fetchone()[0] == 0


def test_villes_load_is_idempotent_and_resolves_aliases(pg_conn):
    communes, aliases = load_communes(), load_aliases()
    first = load_villes(pg_conn, communes, aliases)
    assert (first.villes.rows, first.villes.inserted) == (34_969, 34_969)
    assert first.aliases.inserted == len(aliases)
    second = load_villes(pg_conn, communes, aliases)
    assert second.villes.changed == 0 and second.aliases.changed == 0
    row = pg_conn.execute("""
        SELECT v.code_insee, v.nom, v.slug, v.departement, v.region, v.code_postal_principal, v.codes_postaux
        FROM location_commune_alias a JOIN location_ville v ON v.code_insee = a.ville_code_insee
        WHERE a.code_insee = '75115'
    """).fetchone()
    assert row[:6] == ("75056", "Paris", "paris-75001", "75", "Île-de-France", "75001")
    assert len(row[6]) == 21
    ajaccio = pg_conn.execute("SELECT departement, region, nom_normalise FROM location_ville WHERE code_insee = '2A004'").fetchone()
    assert ajaccio == ("2A", "Corse", "ajaccio")


def test_a_commune_that_leaves_is_deactivated_and_keeps_its_slug(pg_conn):
    a = Commune("50001", "Brix", ("50700",), "50", "Normandie", 100)
    b = Commune("50002", "Valognes", ("50700",), "50", "Normandie", 7000)
    load_villes(pg_conn, [a, b], [])
    counts = load_villes(pg_conn, [b], [CommuneAlias("50001", "50002", "ancienne-commune", "")])
    assert (counts.villes.deactivated, counts.villes.changed) == (1, 1)
    assert counts.aliases.inserted == 1
    assert pg_conn.execute("SELECT is_active, slug FROM location_ville WHERE code_insee = '50001'").fetchone() == (False, "brix-50700")
    # A new commune with the same name and postal code does not take the old URL.
    newcomer = Commune("50099", "Brix", ("50700",), "50", "Normandie", 150)
    load_villes(pg_conn, [b, newcomer], [])
    assert pg_conn.execute("SELECT slug FROM location_ville WHERE code_insee = '50099'").fetchone()[0] == "brix-50700-50099"


def test_villes_may_exchange_slugs_in_one_run(pg_conn):
    a = Commune("50001", "Brix", ("50700",), "50", "Normandie", 100)
    b = Commune("50002", "Valognes", ("50700",), "50", "Normandie", 7000)
    load_villes(pg_conn, [a, b], [])
    swapped = [dataclasses.replace(a, nom="Valognes"), dataclasses.replace(b, nom="Brix")]
    # Now homonyms: both get their INSEE code; then the names swap back cleanly.
    load_villes(pg_conn, swapped, [])
    load_villes(pg_conn, [dataclasses.replace(a, nom="Valognes"), dataclasses.replace(b, nom="Brixou")], [])
    slugs = dict(pg_conn.execute("SELECT code_insee, slug FROM location_ville"))
    assert slugs == {"50001": "valognes-50700", "50002": "brixou-50700"}
    counts = load_villes(pg_conn, [dataclasses.replace(a, nom="Brixou"), dataclasses.replace(b, nom="Valognes")], [])
    assert counts.villes.updated == 2
    assert dict(pg_conn.execute("SELECT code_insee, slug FROM location_ville")) == {"50001": "brixou-50700", "50002": "valognes-50700"}


def test_geo_api_coordinates_survive_a_snapshot_run(pg_conn):
    with GeoApiServer() as server:
        online = fetch_communes(server.base_url, fallback_regions={"97502": "Saint-Pierre-et-Miquelon"}).communes
    load_villes(pg_conn, online, [])
    assert pg_conn.execute("SELECT lat, lng FROM location_ville WHERE code_insee = '2A004'").fetchone() == (41.9347, 8.7376)
    offline = [dataclasses.replace(c, lat=None, lng=None) for c in online]
    assert load_villes(pg_conn, offline, []).villes.changed == 0
    assert pg_conn.execute("SELECT lat, lng FROM location_ville WHERE code_insee = '2A004'").fetchone() == (41.9347, 8.7376)
