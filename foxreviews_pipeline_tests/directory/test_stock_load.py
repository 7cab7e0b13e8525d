"""The stock write path on a real PostgreSQL: counts, idempotence, duplicates, crash and
resume, bounded memory (the Dagster assets: test_stock_partitions.py)."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from foxreviews_pipeline.lib.directory.stock import dedupe_latest, load_stock
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS
from foxreviews_pipeline.lib.sirene.stock import iter_mapped_stock
from foxreviews_pipeline.sample.stock_files import write_sample_stock

# The sample's NAF codes that map to a trade (the others are excluded), and villes for some
# of its communes: Lyon and Paris through their arrondissements, Toulouse directly.
SEED = """
INSERT INTO ref_naf_nomenclature (code, libelle, section, division, groupe, classe) VALUES
  ('56.10A', 'Restauration traditionnelle', 'I', '56', '56.1', '56.10'),
  ('43.21A', 'Travaux d''installation électrique dans tous locaux', 'F', '43', '43.2', '43.21'),
  ('96.02A', 'Coiffure', 'S', '96', '96.0', '96.02'),
  ('70.22Z', 'Conseil pour les affaires et autres conseils de gestion', 'M', '70', '70.2', '70.22');
INSERT INTO category_categorie (id, slug, nom) VALUES (1, 'restauration', 'Restauration'), (2, 'batiment', 'Bâtiment'), (3, 'beaute', 'Beauté');
INSERT INTO subcategory_souscategorie (id, categorie_id, slug, nom) VALUES
  (10, 1, 'restaurant', 'Restaurant'), (20, 2, 'electricien', 'Électricien'), (30, 3, 'coiffure', 'Coiffure');
INSERT INTO ref_naf_mapping (naf_code, sous_categorie_id, excluded_reason) VALUES
  ('56.10A', 10, NULL), ('43.21A', 20, NULL), ('96.02A', 30, NULL), ('70.22Z', NULL, 'conseil aux entreprises');
INSERT INTO location_ville (id, code_insee, nom, slug, nom_normalise, code_postal_principal, codes_postaux, departement, region, population) VALUES
  (100, '69123', 'Lyon', 'lyon', 'lyon', '69001', '["69001","69003"]', '69', 'Auvergne-Rhône-Alpes', 520000),
  (200, '75056', 'Paris', 'paris', 'paris', '75001', '["75008","75011","75015"]', '75', 'Île-de-France', 2100000),
  (300, '31555', 'Toulouse', 'toulouse', 'toulouse', '31000', '["31000"]', '31', 'Occitanie', 500000);
INSERT INTO location_commune_alias (code_insee, ville_code_insee, kind, nom) VALUES
  ('69383', '69123', 'arrondissement-municipal', 'Lyon 3e Arrondissement'),
  ('75108', '75056', 'arrondissement-municipal', 'Paris 8e Arrondissement'),
  ('75111', '75056', 'arrondissement-municipal', 'Paris 11e Arrondissement'),
  ('75115', '75056', 'arrondissement-municipal', 'Paris 15e Arrondissement');
"""

# An establishment is expected to have an active ProLocalisation when it is active, its NAF
# maps to a trade and its commune resolves to a ville — computed here without the sync code.
EXPECTED_PROLOCALISATIONS = """
SELECT count(*) FROM enterprise_entreprise e
JOIN ref_naf_mapping m ON m.naf_code = e.naf_code AND m.nomenclature = e.naf_nomenclature
LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
  -- the diffusion policy: a person whose name INSEE masks gets no page
  AND NOT (e.statut_diffusion = 'P' AND e.nom IS NULL)
"""


@pytest.fixture
def seeded(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        conn.execute(SEED)
    return database_url


def _expected(path: Path, ul: Path) -> tuple[dict[str, tuple], Counter]:
    """What the file should leave in the table: the stock reader's rows, last one per SIRET."""
    latest: dict[str, tuple] = {}
    rejected: Counter = Counter()
    for rows, rejections in iter_mapped_stock(path, unites_legales=ul):
        latest.update((r[0], r) for r in rows)
        rejected.update(r.reason for r in rejections)
    return latest, rejected


def _table(conn: psycopg.Connection) -> dict[str, tuple]:
    cols = ", ".join(ENTREPRISE_COLUMNS)
    return {r[0]: tuple(r) for r in conn.execute(f"SELECT {cols} FROM enterprise_entreprise")}


def _versions(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT 'e', id, xmin::text FROM enterprise_entreprise UNION ALL "
        "SELECT 'p', id, xmin::text FROM enterprise_prolocalisation ORDER BY 1, 2"
    ).fetchall()


def _siret(siren8: str, nic4: str) -> tuple[str, str]:
    siren = siren8 + luhn_check_digit(siren8)
    siret = siren + nic4
    return siren, siret + luhn_check_digit(siret)


def _stock_row(siren8: str, nic4: str, *, name: str, treated: str, naf: str = "56.10A",
               commune: str = "69383", cp: str = "69003", etat: str = "A") -> dict:
    siren, siret = _siret(siren8, nic4)
    return {
        "siren": siren, "nic": siret[9:], "siret": siret,
        "statutDiffusionEtablissement": "O",
        "dateDernierTraitementEtablissement": treated,
        "etablissementSiege": "true",
        "numeroVoieEtablissement": "12", "typeVoieEtablissement": "RUE",
        "libelleVoieEtablissement": "DE LA REPUBLIQUE",
        "codePostalEtablissement": cp, "codeCommuneEtablissement": commune,
        "libelleCommuneEtablissement": "LYON 3EME",
        "dateDebut": "2020-01-01", "etatAdministratifEtablissement": etat,
        "activitePrincipaleEtablissement": naf,
        "nomenclatureActivitePrincipaleEtablissement": "NAFRev2",
        "denominationUniteLegale": name,
    }


@pytest.mark.parametrize(("layout", "suffix"), [(54, ".zip"), (48, ".csv")])
def test_load_counts_match_the_file(seeded, tmp_path, layout, suffix):
    path, ul = tmp_path / f"StockEtablissement{suffix}", tmp_path / "StockUniteLegale.csv"
    write_sample_stock(path, 3000, layout, unites_legales_path=ul, seed=11)
    expected, rejected = _expected(path, ul)

    with psycopg.connect(seeded) as conn:
        result = load_stock(conn, path, unites_legales=ul, run_id="run-1", chunk_rows=700)
        stored = _table(conn)
        lineage = conn.execute(
            "SELECT DISTINCT source, last_partition, last_run_id FROM enterprise_entreprise"
        ).fetchall()
        expected_pl = conn.execute(EXPECTED_PROLOCALISATIONS).fetchone()[0]
        active_pl, pl_villes = conn.execute(
            "SELECT count(*) FILTER (WHERE is_active), array_agg(DISTINCT ville_id ORDER BY ville_id) "
            "FROM enterprise_prolocalisation"
        ).fetchone()
        naf25 = conn.execute("SELECT count(naf25_code) FROM enterprise_entreprise").fetchone()[0]

    assert result.rows_read == 3000
    assert result.rejected_by_reason == dict(rejected)
    with psycopg.connect(seeded) as conn:
        masked = conn.execute(
            "SELECT count(*), count(p.id) FILTER (WHERE p.is_active) FROM enterprise_entreprise e "
            "LEFT JOIN enterprise_prolocalisation p ON p.entreprise_id = e.id "
            "WHERE e.statut_diffusion = 'P' AND e.nom IS NULL"
        ).fetchone()
    assert masked[0] > 0 and masked[1] == 0
    assert len(result.rejected_sample) == min(result.rejected, 20)
    assert stored == expected
    assert result.inserted == len(expected) and result.rows_written == len(expected)
    # Every row of the file is accounted for: written, superseded in its batch, already
    # there (a SIRET repeated in a later batch) or older than what is stored, or rejected.
    assert (
        result.inserted + result.updated + result.unchanged + result.stale
        + result.duplicates + result.rejected
    ) == 3000
    assert result.chunks >= 4 and result.writers == 2
    assert lineage == [("sirene", f"stock:{path.name}", "run-1")]
    assert expected_pl > 100
    assert result.prolocalisations_created == active_pl == expected_pl
    assert pl_villes == [100, 200, 300]  # arrondissements resolved to Lyon and Paris
    assert result.prolocalisations_unmatched_by_reason.get("naf_excluded", 0) > 0
    # The 48-column layout has no NAF 2025 column.
    assert (naf25 > 0) == (layout == 54)


def test_reloading_the_same_file_changes_nothing(seeded, tmp_path):
    path, ul = tmp_path / "e.zip", tmp_path / "ul.zip"
    write_sample_stock(path, 2500, unites_legales_path=ul, seed=3)
    with psycopg.connect(seeded) as conn:
        first = load_stock(conn, path, unites_legales=ul, chunk_rows=500)
        before = _versions(conn)
        again = load_stock(conn, path, unites_legales=ul, chunk_rows=500, run_id="rerun")
        after = _versions(conn)
        reruns = conn.execute(
            "SELECT count(*) FROM enterprise_entreprise WHERE last_run_id = 'rerun'"
        ).fetchone()[0]
    assert first.rows_written > 2000
    assert (again.rows_written, again.inserted, again.updated) == (0, 0, 0)
    assert again.unchanged + again.stale == first.inserted + first.updated + first.unchanged + first.stale
    assert again.prolocalisations_created == again.prolocalisations_reactivated == 0
    assert again.prolocalisations_deactivated == 0
    # Not a single row version rewritten, and the lineage still names the first run.
    assert after == before and reruns == 0


def test_duplicate_sirets_keep_the_latest_version(seeded, tmp_path):
    rows = [
        _stock_row("12345678", "0001", name="NOUVEAU NOM", treated="2024-03-10T08:00:00"),
        _stock_row("12345678", "0001", name="ANCIEN NOM", treated="2024-03-01T08:00:00"),
        _stock_row("23456789", "0001", name="PREMIER", treated="2024-03-05T08:00:00"),
        _stock_row("23456789", "0001", name="SECOND", treated="2024-03-05T08:00:00"),
        _stock_row("34567890", "0001", name="FERME", treated="2024-03-02T08:00:00", etat="A"),
        _stock_row("34567890", "0001", name="FERME", treated="2024-03-09T08:00:00", etat="F"),
    ]
    path, ul = tmp_path / "dups.csv", tmp_path / "ul.csv"
    write_sample_stock(path, rows, unites_legales_path=ul)
    with psycopg.connect(seeded) as conn:
        result = load_stock(conn, path, unites_legales=ul, chunk_rows=100)
        stored = conn.execute(
            "SELECT siret, nom, date_dernier_traitement::text, is_active FROM enterprise_entreprise ORDER BY siret"
        ).fetchall()
        pl = conn.execute("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active").fetchone()[0]
    assert result.rows_read == 6 and result.duplicates == 3
    assert result.inserted == 3 and result.rejected == 0
    assert stored == [
        (_siret("12345678", "0001")[1], "NOUVEAU NOM", "2024-03-10 08:00:00", True),
        (_siret("23456789", "0001")[1], "PREMIER", "2024-03-05 08:00:00", True),
        (_siret("34567890", "0001")[1], "FERME", "2024-03-09 08:00:00", False),
    ]
    assert pl == 2  # the closed establishment gets none


def test_dedupe_keeps_the_latest_version_and_the_later_row_on_a_tie():
    a = ("00000000000001",) + (None,) * 16 + ("2024-01-02",)
    b_old = ("00000000000002",) + ("old",) + (None,) * 15 + ("2024-01-01",)
    b_new = ("00000000000002",) + ("new",) + (None,) * 15 + ("2024-01-03",)
    c1 = ("00000000000003",) + ("first",) + (None,) * 15 + ("2024-01-01",)
    c2 = ("00000000000003",) + ("second",) + (None,) * 15 + ("2024-01-01",)
    undated = ("00000000000003",) + ("undated",) + (None,) * 16
    assert dedupe_latest([c1, b_new, a, b_old, c2, undated]) == [a, b_new, c2]
    assert dedupe_latest([b_old, a]) == [a, b_old]  # sorted by SIRET


def test_a_later_older_stock_never_overwrites_newer_rows(seeded, tmp_path):
    newer = [_stock_row("45678901", "0001", name="X", treated="2024-06-01T00:00:00", naf="43.21A")]
    older = [_stock_row("45678901", "0001", name="X", treated="2024-01-01T00:00:00", naf="96.02A")]
    names = {newer[0]["siren"]: {"denominationUniteLegale": "ELEC LYON"}}
    write_sample_stock(tmp_path / "new.csv", newer)
    write_sample_stock(tmp_path / "old.csv", older)
    with psycopg.connect(seeded) as conn:
        load_stock(conn, tmp_path / "new.csv", unites_legales=names)
        result = load_stock(conn, tmp_path / "old.csv", unites_legales=names)
        stored = conn.execute("SELECT naf_code FROM enterprise_entreprise").fetchone()[0]
    assert (result.stale, result.rows_written) == (1, 0)
    assert stored == "43.21A"


def test_interrupted_load_keeps_whole_batches_and_a_rerun_converges(seeded, new_database, tmp_path):
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 2000, unites_legales_path=ul, seed=21)

    class Crash(Exception):
        pass

    def crash_after_first(result):
        raise Crash

    with psycopg.connect(seeded) as conn:
        with pytest.raises(Crash):
            load_stock(conn, path, unites_legales=ul, chunk_rows=400, writers=1, on_chunk=crash_after_first)
        conn.rollback()
        kept, orphans = conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
                                              AND entreprise_publishable(e.statut_diffusion, e.nom, e.source)
                                              AND NOT EXISTS (SELECT 1 FROM enterprise_prolocalisation p
                                                              WHERE p.entreprise_id = e.id))
            FROM enterprise_entreprise e
            LEFT JOIN ref_naf_mapping m ON m.naf_code = e.naf_code
            LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
            JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
            """
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0]
        # The first batch was committed with its ProLocalisations; nothing after it.
        assert 0 < total <= 400 and kept > 0 and orphans == 0
        resumed = load_stock(conn, path, unites_legales=ul, chunk_rows=400)
        assert resumed.unchanged == total
        final = _table(conn)
        final_pl = conn.execute("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active").fetchone()[0]

    clean_url = new_database()
    with psycopg.connect(clean_url) as conn:
        conn.execute(SEED)
        conn.commit()
        load_stock(conn, path, unites_legales=ul, chunk_rows=400)
        assert _table(conn) == final
        assert conn.execute(
            "SELECT count(*) FROM enterprise_prolocalisation WHERE is_active"
        ).fetchone()[0] == final_pl


def test_single_transaction_mode_is_all_or_nothing(seeded, tmp_path):
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 1500, unites_legales_path=ul, seed=5)
    seen = []

    def crash_at_third(result):
        seen.append(result.chunks)
        if result.chunks == 3:
            raise RuntimeError("disk full")

    with psycopg.connect(seeded) as conn:
        with pytest.raises(RuntimeError, match="disk full"), conn.transaction():
            load_stock(conn, path, unites_legales=ul, chunk_rows=300,
                       commit_every_chunk=False, on_chunk=crash_at_third)
        assert seen == [1, 2, 3]
        assert conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0] == 0
        with conn.transaction():
            result = load_stock(conn, path, unites_legales=ul, chunk_rows=300, commit_every_chunk=False)
        assert result.writers == 1 and result.inserted > 1000
        assert conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0] == result.inserted


def test_without_unites_legales_every_row_is_rejected_for_lack_of_name(seeded, tmp_path):
    path = tmp_path / "e.csv"
    write_sample_stock(path, 300, seed=2)
    with psycopg.connect(seeded) as conn:
        result = load_stock(conn, path)
    assert result.rows_read == 300 and result.rows_written == 0
    assert set(result.rejected_by_reason) <= {"no_name", "invalid_siret"}
    assert result.rejected_by_reason["no_name"] > 250


def test_memory_stays_bounded_while_streaming(seeded, tmp_path):
    """Python memory peaks at a few batches, far below the file or its rows held whole."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 150_000, unites_legales_path=ul, seed=17)
    file_size = path.stat().st_size
    # What one mapped row costs as Python objects, measured on the file's first block.
    tracemalloc.start()
    try:
        rows, _ = next(iter_mapped_stock(path, unites_legales=ul, block_size=1 << 20))
        per_row = tracemalloc.get_traced_memory()[0] / len(rows)
    finally:
        tracemalloc.stop()
    del rows
    with psycopg.connect(seeded) as conn:
        tracemalloc.start()
        try:
            result = load_stock(conn, path, unites_legales=ul, chunk_rows=1_000, writers=1,
                                block_size=128 << 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stored = conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0]
    assert result.rows_read == 150_000 and stored == result.inserted > 145_000
    assert result.chunks > 140
    whole = per_row * result.rows_read
    assert per_row > 300 and whole > 2 * file_size  # holding the rows would dwarf the file
    assert peak < whole / 20, (peak, whole)
    assert peak < file_size / 4, (peak, file_size)
