"""The set-based write path on a real PostgreSQL: idempotence, ordering, ProLocalisations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime

import pytest

from foxreviews_pipeline.lib.directory.entreprises import (
    CREATED,
    SIRENE_COLUMNS,
    STORED,
    upsert_entreprises,
)
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations


def row(siret, *, nom="BOULANGERIE MARTIN", naf="10.71C", commune="69123", active=True,
        treated=datetime(2026, 11, 20, 3, 0), adresse="3 Rue de la Paix", cp="69001"):
    values = {
        "siret": siret, "siren": siret[:9], "nom": nom, "nom_commercial": None,
        "adresse": adresse, "code_postal": cp, "ville_nom": "LYON", "code_commune": commune,
        "naf_code": naf, "naf_nomenclature": "NAFRev2", "naf25_code": None,
        "is_active": active, "date_creation": date(2010, 5, 1),
        "date_fermeture": None if active else date(2026, 11, 19), "est_siege": True,
        "tranche_effectifs": "01", "statut_diffusion": "O", "date_dernier_traitement": treated,
        "sirene_lat": None, "sirene_lng": None, "sirene_epsg": None,
    }
    return tuple(values[c] for c in SIRENE_COLUMNS)


SIRETS = ["73282932000074", "55203253400646", "44306184100047"]


def seed_reference(conn):
    conn.execute(
        """
        INSERT INTO ref_naf_nomenclature (code, libelle, section, division, groupe, classe) VALUES
          ('10.71C', 'Boulangerie et boulangerie-pâtisserie', 'C', '10', '10.7', '10.71'),
          ('43.22A', 'Travaux d''installation d''eau et de gaz en tous locaux', 'F', '43', '43.2', '43.22'),
          ('64.20Z', 'Activités des sociétés holding', 'K', '64', '64.2', '64.20');
        INSERT INTO category_categorie (id, slug, nom) VALUES (1, 'alimentation', 'Alimentation'), (2, 'batiment', 'Bâtiment');
        INSERT INTO subcategory_souscategorie (id, categorie_id, slug, nom) VALUES
          (10, 1, 'boulangerie-patisserie', 'Boulangerie-pâtisserie'), (20, 2, 'plombier', 'Plombier');
        INSERT INTO ref_naf_mapping (naf_code, sous_categorie_id, excluded_reason) VALUES
          ('10.71C', 10, NULL), ('43.22A', 20, NULL), ('64.20Z', NULL, 'holding');
        INSERT INTO location_ville (id, code_insee, nom, slug, nom_normalise, code_postal_principal, codes_postaux, departement, region, population) VALUES
          (100, '69123', 'Lyon', 'lyon-69001', 'lyon', '69001', '["69001","69002","69003"]', '69', 'Auvergne-Rhône-Alpes', 520000),
          (200, '75056', 'Paris', 'paris-75001', 'paris', '75001', '["75001","75015"]', '75', 'Île-de-France', 2100000);
        INSERT INTO location_commune_alias (code_insee, ville_code_insee, kind, nom) VALUES
          ('69381', '69123', 'arrondissement-municipal', 'Lyon 1er Arrondissement'),
          ('75115', '75056', 'arrondissement-municipal', 'Paris 15e Arrondissement');
        """
    )


def state(conn):
    ent = conn.execute(
        "SELECT siret, nom, is_active, naf_code, naf_libelle, code_commune, xmin::text FROM enterprise_entreprise ORDER BY siret"
    ).fetchall()
    pl = conn.execute(
        "SELECT e.siret, p.sous_categorie_id, p.ville_id, p.is_active, p.deactivation_reason, p.xmin::text "
        "FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id ORDER BY 1, 2, 3"
    ).fetchall()
    return ent, pl


def test_upsert_is_idempotent_and_fills_naf_labels(pg_conn):
    seed_reference(pg_conn)
    rows = [row(SIRETS[0]), row(SIRETS[1], naf="43.22A")]
    first = upsert_entreprises(pg_conn, SIRENE_COLUMNS, rows, source="sirene", partition="2026-11-20", run_id="r1")
    pg_conn.commit()
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    before = state(pg_conn)
    labels = {r[0]: r[4] for r in before[0]}
    assert labels == {SIRETS[0]: "Boulangerie et boulangerie-pâtisserie",
                      SIRETS[1]: "Travaux d'installation d'eau et de gaz en tous locaux"}
    again = upsert_entreprises(pg_conn, SIRENE_COLUMNS, rows, source="sirene", partition="2026-11-20", run_id="r2")
    pg_conn.commit()
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    # Same xmin: the rows were not even rewritten (nor locked) by the re-run.
    assert state(pg_conn) == before


def test_older_data_never_overwrites_newer(pg_conn):
    seed_reference(pg_conn)
    newer = row(SIRETS[0], nom="NOUVEAU NOM", treated=datetime(2026, 11, 21, 2, 0))
    older = row(SIRETS[0], nom="ANCIEN NOM", treated=datetime(2026, 11, 20, 2, 0))
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [newer], source="sirene", partition="2026-11-21")
    counts = upsert_entreprises(pg_conn, SIRENE_COLUMNS, [older], source="sirene", partition="2026-11-20")
    assert (counts.stale, counts.updated, counts.inserted) == (1, 0, 0)
    assert pg_conn.execute("SELECT nom, last_partition FROM enterprise_entreprise").fetchone() == ("NOUVEAU NOM", "2026-11-21")


def test_web_app_columns_are_never_touched_by_sirene(pg_conn):
    seed_reference(pg_conn)
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0])], source="sirene")
    pg_conn.execute("UPDATE enterprise_entreprise SET telephone = '0478000000', email_contact = 'a@b.fr', google_rating = 4.5")
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0], nom="AUTRE", treated=datetime(2026, 11, 22))], source="sirene")
    assert pg_conn.execute("SELECT nom, telephone, email_contact, google_rating FROM enterprise_entreprise").fetchone() == (
        "AUTRE", "0478000000", "a@b.fr", 4.5)


def test_empty_values_keep_stored_ones_when_asked(pg_conn):
    seed_reference(pg_conn)
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0])], source="sirene")
    counts = upsert_entreprises(
        pg_conn, ("siret", "nom", "adresse", "telephone"), [(SIRETS[0], "MARTIN & FILS", None, "0102030405")],
        source="upload", keep_existing_when_null=True,
    )
    assert counts.updated == 1
    assert pg_conn.execute("SELECT nom, adresse, telephone, source FROM enterprise_entreprise").fetchone() == (
        "MARTIN & FILS", "3 Rue de la Paix", "0102030405", "upload")


def test_prolocalisations_follow_closure_trade_change_and_move(pg_conn):
    seed_reference(pg_conn)
    day1 = [row(SIRETS[0]), row(SIRETS[1], naf="43.22A", commune="75115", cp="75015"), row(SIRETS[2], naf="64.20Z")]
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, day1, source="sirene", partition="d1")
    c1 = sync_prolocalisations(pg_conn, SIRETS, partition="d1")
    assert (c1.created, c1.reactivated, c1.deactivated) == (2, 0, 0)
    assert c1.unmatched_by_reason == {"naf_excluded": 1}
    # Paris 15e resolves to Paris.
    assert pg_conn.execute(
        "SELECT p.ville_id FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE e.siret = %s",
        (SIRETS[1],)).fetchone() == (200,)
    assert sync_prolocalisations(pg_conn, SIRETS, partition="d1").changed == 0

    t2 = datetime(2026, 11, 21, 3, 0)
    day2 = [row(SIRETS[0], active=False, treated=t2), row(SIRETS[1], naf="10.71C", commune="69381", cp="69001", treated=t2)]
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, day2, source="sirene", partition="d2")
    c2 = sync_prolocalisations(pg_conn, SIRETS[:2], partition="d2")
    assert c2.created == 1
    assert c2.deactivated_by_reason == {"closed": 1, "trade_changed_and_moved": 1}
    rows = pg_conn.execute("SELECT count(*), count(*) FILTER (WHERE is_active) FROM enterprise_prolocalisation").fetchone()
    assert rows == (3, 1)  # retired, never deleted

    t3 = datetime(2026, 11, 22, 3, 0)
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0], treated=t3)], source="sirene", partition="d3")
    c3 = sync_prolocalisations(pg_conn, SIRETS[:1], partition="d3")
    assert (c3.created, c3.reactivated) == (0, 1)


def test_pages_of_created_establishments_go_in_as_they_are_and_the_others_by_what_is_missing(pg_conn):
    seed_reference(pg_conn)
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0])], source="sirene", partition="d1")
    sync_prolocalisations(pg_conn, SIRETS[:1], partition="d1", created=CREATED)
    stored_page = pg_conn.execute("SELECT id, xmin::text FROM enterprise_prolocalisation").fetchall()
    # A page another publish gave the second establishment (stored, without its page) since.
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[1], naf="43.22A")], source="upload", partition="d1")
    pg_conn.execute(
        "INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id) "
        "SELECT id, 20, 100 FROM enterprise_entreprise WHERE siret = %s", (SIRETS[1],)
    )

    t2 = datetime(2026, 11, 21, 3, 0)
    day2 = [
        row(SIRETS[0], nom="MARTIN ET FILS", treated=t2),  # stored, changed: keeps its page
        row(SIRETS[1], naf="43.22A", treated=t2),  # stored, and its page with it
        row(SIRETS[2], treated=t2),  # new
    ]
    counts = upsert_entreprises(pg_conn, SIRENE_COLUMNS, day2, source="sirene", partition="d2")
    assert (counts.inserted, counts.updated) == (1, 2)
    # Only the establishment this upsert inserted is listed as created.
    assert pg_conn.execute(f"SELECT e.siret FROM {CREATED} c JOIN enterprise_entreprise e USING (id)").fetchall() == [
        (SIRETS[2],)
    ]
    pages = sync_prolocalisations(pg_conn, SIRETS, partition="d2", created=CREATED)
    assert (pages.created, pages.reactivated, pages.deactivated) == (1, 0, 0)
    assert pg_conn.execute(
        "SELECT e.siret, p.last_partition FROM enterprise_prolocalisation p "
        "JOIN enterprise_entreprise e ON e.id = p.entreprise_id ORDER BY 1"
    ).fetchall() == sorted([(SIRETS[0], "d1"), (SIRETS[1], None), (SIRETS[2], "d2")])
    assert pg_conn.execute(
        "SELECT id, xmin::text FROM enterprise_prolocalisation p WHERE id = %s", (stored_page[0][0],)
    ).fetchall() == stored_page
    # Nothing created this time: nothing listed, nothing inserted.
    again = upsert_entreprises(pg_conn, SIRENE_COLUMNS, day2, source="sirene", partition="d2")
    assert again.inserted == 0
    assert pg_conn.execute(f"SELECT count(*) FROM {CREATED}").fetchone() == (0,)
    assert sync_prolocalisations(pg_conn, SIRETS, partition="d2", created=CREATED).changed == 0


def test_what_an_upsert_staged_is_kept_as_stored_and_its_pages_resolved_from_there(pg_conn):
    seed_reference(pg_conn)
    t0, t1, t2 = (datetime(2026, 11, d, 3, 0) for d in (19, 20, 21))
    other = "30613890003092"  # stored, and not in the second upsert
    day1 = [
        row(SIRETS[0], treated=t1),
        row(SIRETS[1], naf="43.22A", commune="75115", cp="75015", treated=t1),
        row(SIRETS[2], treated=t1),
        row(other, treated=t1),
    ]
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, day1, source="sirene", partition="d1")
    assert sync_prolocalisations(pg_conn, [*SIRETS, other], partition="d1").created == 4
    # Since: the plumbers' trade is retired, and another writer closed `other`.
    pg_conn.execute("UPDATE subcategory_souscategorie SET is_active = false WHERE id = 20")
    pg_conn.execute("UPDATE enterprise_entreprise SET is_active = false WHERE siret = %s", (other,))

    day2 = [
        row(SIRETS[0], nom="MARTIN ET FILS", treated=t2),  # changed
        day1[1],  # the same: left as it is
        row(SIRETS[2], nom="PLUS ANCIEN", treated=t0),  # older than the stored one: left as it is
    ]
    counts = upsert_entreprises(pg_conn, SIRENE_COLUMNS, day2, source="sirene", partition="d2")
    assert (counts.updated, counts.unchanged, counts.stale) == (1, 1, 1)
    columns = "siret, nom, is_active, naf_code, code_commune, id"
    assert pg_conn.execute(f"SELECT {columns} FROM {STORED} ORDER BY siret").fetchall() == pg_conn.execute(
        f"SELECT {columns} FROM enterprise_entreprise WHERE siret = ANY(%s) ORDER BY siret", (SIRETS,)
    ).fetchall()
    # The unchanged plumber's page follows its retired trade; `other`, looked up, its closure.
    pages = sync_prolocalisations(
        pg_conn, [*SIRETS, other], partition="d2", created=CREATED, stored=STORED, unstored=[other]
    )
    assert pages.establishments == 4
    assert (pages.created, pages.deactivated_by_reason) == (0, {"closed": 1, "trade_inactive": 1})
    assert pg_conn.execute(
        "SELECT e.siret FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
        "WHERE p.is_active ORDER BY 1"
    ).fetchall() == sorted([(SIRETS[0],), (SIRETS[2],)])


_KILLED_WRITER = r"""
import sys, psycopg
from datetime import datetime
sys.path.insert(0, sys.argv[2])
from test_write_path import row, SIRETS
from foxreviews_pipeline.lib.directory.entreprises import SIRENE_COLUMNS, upsert_entreprises
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations
# Like a real client, it is gone without a word; the server notices within 100 ms.
with psycopg.connect(sys.argv[1], options="-c client_connection_check_interval=100") as conn:
    rows = [row(s, nom="JOUR DEUX", active=False, treated=datetime(2026, 11, 21)) for s in SIRETS[:2]]
    upsert_entreprises(conn, SIRENE_COLUMNS, rows, source="sirene", partition="d2")
    sync_prolocalisations(conn, SIRETS[:2], partition="d2")
    print("written", flush=True)
    conn.execute("SELECT pg_sleep(60)")
"""


def test_a_writer_killed_mid_partition_leaves_the_previous_state(pg_conn, database_url):
    seed_reference(pg_conn)
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [row(SIRETS[0]), row(SIRETS[1])], source="sirene", partition="d1")
    sync_prolocalisations(pg_conn, SIRETS[:2], partition="d1")
    pg_conn.commit()
    before = state(pg_conn)

    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, database_url, os.path.dirname(__file__)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    pg_conn.rollback()
    deadline = time.monotonic() + 30
    while pg_conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' AND pid <> pg_backend_pid()").fetchone()[0]:
        pg_conn.rollback()
        if time.monotonic() > deadline:
            pytest.fail("the killed writer's session never went away")
        time.sleep(0.1)
    pg_conn.rollback()
    assert state(pg_conn) == before


def test_a_missing_commune_code_falls_back_to_postal_code_and_name(pg_conn):
    seed_reference(pg_conn)
    no_code = row(SIRETS[0], commune=None, cp="69003")
    upsert_entreprises(pg_conn, SIRENE_COLUMNS, [no_code, row(SIRETS[1], commune=None, cp="69003", nom="AUTRE")], source="sirene")
    # Same postal code, but a name that is not Lyon: not resolved.
    pg_conn.execute("UPDATE enterprise_entreprise SET ville_nom = 'VILLEURBANNE' WHERE siret = %s", (SIRETS[1],))
    counts = sync_prolocalisations(pg_conn, SIRETS[:2])
    assert counts.created == 1
    assert counts.unmatched_by_reason == {"no_commune": 1}
    assert pg_conn.execute("SELECT ville_id FROM enterprise_prolocalisation").fetchall() == [(100,)]


def test_a_day_applied_again_is_not_mapped_again_unless_the_rules_changed(pg_conn, monkeypatch):
    from foxreviews_pipeline.lib.directory import daily
    from foxreviews_pipeline.sample.day import generate_day

    records = generate_day(date(2026, 11, 20), n=300)
    first = daily.write_day(pg_conn, records, partition="2026-11-20", run_id="r1")
    assert first.entreprises.inserted > 250

    mapped = []
    real_map = daily.map_table
    monkeypatch.setattr(daily, "map_table", lambda t: mapped.append(t.num_rows) or real_map(t))
    again = daily.write_day(pg_conn, records, partition="2026-11-20", run_id="r2")
    # Only the records that were rejected (never stored) go through the mapping again.
    assert mapped == [first.rejected]
    assert (again.entreprises.inserted, again.entreprises.updated) == (0, 0)
    assert again.entreprises.unchanged == first.entreprises.inserted

    bumped_version = daily.MAPPING_VERSION + 1
    monkeypatch.setattr(daily, "MAPPING_VERSION", bumped_version)
    mapped.clear()
    bumped = daily.write_day(pg_conn, records, partition="2026-11-20", run_id="r3")
    assert mapped == [len(records)]
    # New rules: every row is rewritten once, to record the version that produced it.
    assert bumped.entreprises.updated == first.entreprises.inserted
    assert pg_conn.execute("SELECT DISTINCT mapping_version FROM enterprise_entreprise").fetchall() == [(bumped_version,)]
