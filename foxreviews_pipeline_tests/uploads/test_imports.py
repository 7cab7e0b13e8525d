"""Files that import: encodings, separators, Excel formats, partial files, every type, and
the rule that an empty cell or a missing column never blanks stored data."""

from __future__ import annotations

import io
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import psycopg
import pytest

from foxreviews_pipeline.lib.directory.ville_stats import refresh_town_centres
from foxreviews_pipeline.lib.uploads import import_upload, register
from foxreviews_pipeline_tests.uploads.conftest import (
    FIXTURES,
    SIRET_A,
    SIRET_B,
    SIRET_C,
    UploadEnv,
)


def entreprises(env: UploadEnv) -> list[tuple]:
    return env.query(
        "SELECT siret, siren, nom, code_postal, ville_nom, naf_code, naf_libelle, telephone, "
        "is_active, source FROM enterprise_entreprise ORDER BY siret"
    )


def assert_success(env: UploadEnv, outcome, rows: int) -> dict:
    log = env.log(outcome.log_id)
    assert (log["status"], log["total_rows"], log["success_rows"], log["error_rows"]) == (
        "SUCCESS",
        rows,
        rows,
        0,
    )
    assert log["errors"] == []
    assert log["stored_path"].startswith("archive/")
    assert (env.paths.root / log["stored_path"]).is_file()
    assert env.files("incoming") == env.files("processing") == env.files("rejected") == []
    return log


def test_cp1252_semicolon_file_imports(env: UploadEnv):
    text = (
        "SIRET;Nom;Nom commercial;Code postal;Ville nom;NAF code\r\n"
        f"{SIRET_A};BOULANGERIE HÉLÈNE;Pâtisserie « Chez Zoé »;69001;Lyon;1071C\r\n"
    )
    env.drop("entreprises_cp1252.csv", text, encoding="cp1252")
    _, outcome = env.process("entreprises_cp1252.csv")
    assert_success(env, outcome, 1)
    assert env.query("SELECT nom, nom_commercial, naf_code FROM enterprise_entreprise") == [
        ("BOULANGERIE HÉLÈNE", "Pâtisserie « Chez Zoé »", "10.71C")
    ]


def test_utf8_bom_comma_file_imports(env: UploadEnv):
    env.drop("entreprises_bom.csv", f"\ufeffsiret,nom,is_active\n{SIRET_B},PLOMBERIE ÉMILE,non\n")
    _, outcome = env.process("entreprises_bom.csv")
    assert_success(env, outcome, 1)
    assert env.query("SELECT siret, nom, is_active FROM enterprise_entreprise") == [
        (SIRET_B, "PLOMBERIE ÉMILE", False)
    ]


def test_semicolon_file_with_commas_in_values_imports(env: UploadEnv):
    env.drop(
        "entreprises.csv",
        f"siret;nom;adresse\n{SIRET_A};MARTIN, FILS ET CIE;3, rue de la Paix\n",
    )
    _, outcome = env.process("entreprises.csv")
    assert_success(env, outcome, 1)
    assert env.query("SELECT nom, adresse FROM enterprise_entreprise") == [
        ("MARTIN, FILS ET CIE", "3, rue de la Paix")
    ]


def test_real_xls_imports_with_numbers_turned_back_into_identifiers(env: UploadEnv):
    shutil.copy(
        FIXTURES / "entreprises_legacy.xls", env.paths.folder("incoming") / "entreprises_legacy.xls"
    )
    _, outcome = env.process("entreprises_legacy.xls")
    assert_success(env, outcome, 2)
    assert entreprises(env) == [
        (
            SIRET_B,
            SIRET_B[:9],
            "PLOMBERIE DUPONT",
            "69001",
            "Lyon",
            "43.22A",
            "Travaux d'installation d'eau et de gaz en tous locaux",
            None,
            True,
            "upload",
        ),
        (
            SIRET_A,
            SIRET_A[:9],
            "BOULANGERIE MARTIN",
            "01000",
            "Bourg-en-Bresse",
            "10.71C",
            "Boulangerie et boulangerie-pâtisserie",
            "04 74 22 00 00",
            True,
            "upload",
        ),
    ]
    # Their ProLocalisations exist (ville found by postal code and name: no commune code).
    assert env.query(
        "SELECT e.siret, p.sous_categorie_id, p.ville_id FROM enterprise_prolocalisation p "
        "JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE p.is_active ORDER BY 1"
    ) == [(SIRET_B, 20, 100), (SIRET_A, 10, 101)]


def test_xlsx_imports_from_the_first_sheet(env: UploadEnv):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append([])  # a blank first row: the header is the first non-blank row
    sheet.append(["siret", "nom", "code_postal", "naf_code"])
    sheet.append([int(SIRET_C), "ÉLECTRICITÉ GÉNÉRALE", 1000, "62.01Z"])
    workbook.save(env.paths.folder("incoming") / "entreprises.xlsx")
    _, outcome = env.process("entreprises.xlsx")
    assert_success(env, outcome, 1)
    assert env.query("SELECT siret, nom, code_postal, naf_code FROM enterprise_entreprise") == [
        (SIRET_C, "ÉLECTRICITÉ GÉNÉRALE", "01000", "62.01Z")
    ]


def test_mixed_file_ends_partial_with_exactly_its_good_rows(env: UploadEnv):
    text = (
        "siret,nom,code_postal,naf_code\n"
        f"{SIRET_A},BOULANGERIE MARTIN,69001,10.71C\n"  # row 2: good
        "73282932000075,MAUVAIS SIRET,69001,10.71C\n"  # row 3: Luhn
        f"{SIRET_B},PLOMBERIE DUPONT,690,43.22A\n"  # row 4: postal code
        f"{SIRET_C},INFORMATIQUE SA,69002,62.01Z\n"  # row 5: good
        "35600000000048,LA POSTE,75015,99.99Z\n"  # row 6: unknown NAF
    )
    env.drop("entreprises_mix.csv", text)
    _, outcome = env.process("entreprises_mix.csv")
    log = env.log(outcome.log_id)
    assert (log["status"], log["total_rows"], log["success_rows"], log["error_rows"]) == (
        "PARTIAL",
        5,
        2,
        3,
    )
    assert log["errors"] == [
        {
            "row": 3,
            "column": "siret",
            "code": "invalid_value",
            "reason": "SIRET 73282932000075 fails its check digit (Luhn)",
        },
        {
            "row": 4,
            "column": "code_postal",
            "code": "invalid_value",
            "reason": "postal code must be 5 digits, got '690'",
        },
        {
            "row": 6,
            "column": "naf_code",
            "code": "unknown_naf_code",
            "reason": "unknown NAF code 99.99Z (neither a NAF rév. 2 nor a NAF 2025 code)",
        },
    ]
    assert [r[0] for r in entreprises(env)] == sorted([SIRET_A, SIRET_C])
    assert log["stored_path"].startswith("archive/")
    assert env.files("rejected") == []


def test_a_naf2025_code_is_stored_in_its_nomenclature_and_maps_to_its_trade(env: UploadEnv):
    env.drop("entreprises_2027.csv", f"siret,nom,code_postal,ville_nom,naf_code\n{SIRET_A},BOULANGERIE MARTIN,69001,Lyon,10.71H\n")
    _, outcome = env.process("entreprises_2027.csv")
    assert_success(env, outcome, 1)
    assert env.query(
        "SELECT naf_code, naf_nomenclature, naf_libelle FROM enterprise_entreprise WHERE siret = %s",
        (SIRET_A,),
    ) == [("10.71H", "NAF2025", "Boulangerie et boulangerie-pâtisserie")]
    assert env.query(
        "SELECT p.sous_categorie_id FROM enterprise_prolocalisation p "
        "JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE p.is_active"
    ) == [(10,)]


def test_empty_cells_and_missing_columns_never_blank_stored_values(env: UploadEnv):
    with psycopg.connect(env.url) as conn:
        conn.execute(
            "INSERT INTO enterprise_entreprise (siret, siren, nom, adresse, code_postal, telephone, "
            "email_contact, naf_code, naf_libelle, is_active) VALUES "
            "(%s, %s, 'BOULANGERIE MARTIN', '3 RUE DE LA PAIX', '69001', '04 78 00 00 00', "
            "'contact@martin.fr', '10.71C', 'Boulangerie et boulangerie-pâtisserie', false)",
            (SIRET_A, SIRET_A[:9]),
        )
    # No adresse column; empty telephone, naf_code and is_active cells; a new e-mail.
    env.drop(
        "entreprises_maj.csv",
        "siret,nom,telephone,email_contact,naf_code,is_active\n"
        f"{SIRET_A},BOULANGERIE MARTIN,,bonjour@martin.fr,,\n"
        f"{SIRET_B},PLOMBERIE DUPONT,,,,\n",
    )
    _, outcome = env.process("entreprises_maj.csv")
    assert_success(env, outcome, 2)
    assert env.query(
        "SELECT siret, adresse, code_postal, telephone, email_contact, naf_code, naf_libelle, is_active "
        "FROM enterprise_entreprise ORDER BY siret"
    ) == [
        (SIRET_B, None, None, None, None, None, None, True),
        (
            SIRET_A,
            "3 RUE DE LA PAIX",
            "69001",
            "04 78 00 00 00",
            "bonjour@martin.fr",
            "10.71C",
            "Boulangerie et boulangerie-pâtisserie",
            False,
        ),
    ]


def test_villes_update_match_and_create(env: UploadEnv):
    env.drop(
        "villes_2026.csv",
        "nom,code_insee,code_postal_principal,codes_postaux,departement,region,lat,lng,population\n"
        "Lyon,69123,,,,,45.758,4.835,522250\n"  # by code: population and coordinates
        "Bourg en Bresse,,01000,,,,,,41500\n"  # by name + postal code
        "Ajaccio,2A004,20000,20000;20090,,Corse,41.9267,8.7369,73000\n",  # new
    )
    _, outcome = env.process("villes_2026.csv")
    assert_success(env, outcome, 3)
    assert outcome.written == {"inserted": 1, "updated": 2}
    assert env.query(
        "SELECT code_insee, nom, slug, code_postal_principal, codes_postaux, departement, region, "
        "lat, lng, population FROM location_ville ORDER BY code_insee"
    ) == [
        (
            "01053",
            "Bourg-en-Bresse",
            "bourg-en-bresse",
            "01000",
            ["01000"],
            "01",
            "Auvergne-Rhône-Alpes",
            None,
            None,
            41500,
        ),
        (
            "2A004",
            "Ajaccio",
            "ajaccio-20000",
            "20000",
            ["20000", "20090"],
            "2A",
            "Corse",
            41.9267,
            8.7369,
            73000,
        ),
        (
            "69123",
            "Lyon",
            "lyon",
            "69001",
            ["69001", "69002", "69003"],
            "69",
            "Auvergne-Rhône-Alpes",
            45.758,
            4.835,
            522250,
        ),
    ]



def test_a_town_centre_an_upload_gave_is_kept_by_the_derived_centres(env: UploadEnv):
    env.drop(
        "villes_centres.csv",
        "nom,code_insee,code_postal_principal,codes_postaux,departement,region,lat,lng,population\n"
        "Lyon,69123,,,,,45.758,4.835,\n",
    )
    _, outcome = env.process("villes_centres.csv")
    assert_success(env, outcome, 1)
    with psycopg.connect(env.url) as conn:
        conn.execute(
            "INSERT INTO enterprise_entreprise (siret, siren, nom, code_commune, is_active, sirene_lat, "
            "sirene_lng, sirene_epsg) VALUES ('73282932000074', '732829320', 'A', '69123', true, 45.0, 4.0, 2154), "
            "('55203253400646', '552032534', 'B', '01053', true, 46.2, 5.2, 2154)"
        )
    refresh_town_centres(env.url)
    assert env.query(
        "SELECT code_insee, lat, lng, position_source FROM location_ville "
        "WHERE code_insee IN ('69123', '01053') ORDER BY code_insee"
    ) == [("01053", 46.2, 5.2, "establishments"), ("69123", 45.758, 4.835, "upload")]


def test_categories_then_sous_categories(env: UploadEnv):
    env.drop(
        "categories.csv",
        "nom,description,ordre\nBâtiment,Artisans du bâtiment,2\nBeauté & bien-être,,5\n",
    )
    _, outcome = env.process("categories.csv")
    assert_success(env, outcome, 2)
    env.drop(
        "sous_categories.csv",
        "nom,categorie,mots_cles,ordre\nCouvreur,batiment,toit;tuiles,1\nCoiffeur,Beauté & bien-être,,\n"
        "Plombier,Bâtiment,fuite,3\n",
    )
    _, outcome = env.process("sous_categories.csv")
    assert_success(env, outcome, 3)
    assert env.query(
        "SELECT slug, nom, description, ordre FROM category_categorie ORDER BY slug"
    ) == [
        ("alimentation", "Alimentation", "", 0),
        ("batiment", "Bâtiment", "Artisans du bâtiment", 2),
        ("beaute-bien-etre", "Beauté & bien-être", "", 5),
    ]
    assert env.query(
        "SELECT s.slug, c.slug, s.mots_cles, s.ordre FROM subcategory_souscategorie s "
        "JOIN category_categorie c ON c.id = s.categorie_id ORDER BY s.slug"
    ) == [
        ("boulangerie-patisserie", "alimentation", "", 0),
        ("coiffeur", "beaute-bien-etre", "", 0),
        ("couvreur", "batiment", "toit;tuiles", 1),
        ("plombier", "batiment", "fuite", 3),
    ]


def test_type_comes_from_the_header_when_the_name_says_nothing(env: UploadEnv):
    env.drop("export.csv", f"siret,nom\n{SIRET_A},X\n")
    _, outcome = env.process("export.csv")
    assert assert_success(env, outcome, 1)["file_type"] == "entreprises"


def test_odd_file_name_is_stored_safely(env: UploadEnv):
    name = "..entreprises ..%$ (copie) é\t😀;`$(rm -rf).csv"
    env.drop(name, f"siret,nom\n{SIRET_A},X\n")
    registration, outcome = env.process(name)
    log = assert_success(env, outcome, 1)
    assert log["file_name"] == name
    key = registration.partition_key
    assert key == f"{registration.content_sha256[:12]}-entreprises_._copie_e_rm_-rf.csv"
    assert log["stored_path"] == f"archive/{key}"
    assert "..." not in key and "/" not in key
    stored = [p for p in env.paths.root.rglob("*") if p.is_file()]
    assert stored == [env.paths.root / "archive" / key]


def test_reimporting_an_archived_partition_adds_a_log_row_and_changes_nothing(env: UploadEnv):
    env.drop("entreprises.csv", f"siret,nom\n{SIRET_A},X\n")
    registration, first = env.process("entreprises.csv")
    before = env.snapshot()
    again = import_upload(env.url, env.paths, registration.partition_key, run_id="rerun")
    assert again.status == "SUCCESS" and again.log_id != first.log_id
    assert again.written["unchanged"] == 1
    assert env.snapshot() == before
    assert env.files("archive") == [registration.partition_key]


def _bomb_xlsx(path: Path, rows: int) -> None:
    """A workbook whose sheet claims a million rows and really holds `rows` of them: a few
    MB on disk, more than 80 MB of XML once inflated."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["siret", "nom"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    with (
        zipfile.ZipFile(buffer) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            if item.filename != "xl/worksheets/sheet1.xml":
                target.writestr(item, source.read(item.filename))
        with target.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/'
                b'spreadsheetml/2006/main"><dimension ref="A1:B1048576"/><sheetData>'
                b'<row r="1"><c r="A1" t="inlineStr"><is><t>siret</t></is></c>'
                b'<c r="B1" t="inlineStr"><is><t>nom</t></is></c></row>'
            )
            chunk = []
            for r in range(2, rows + 2):
                chunk.append(
                    f'<row r="{r}"><c r="A{r}"><v>{SIRET_A}</v></c>'
                    f'<c r="B{r}" t="inlineStr"><is><t>X</t></is></c></row>'.encode()
                )
                if len(chunk) == 10_000:
                    sheet.write(b"".join(chunk))
                    chunk = []
            sheet.write(b"".join(chunk) + b"</sheetData></worksheet>")


@pytest.mark.slow
def test_xlsx_claiming_a_million_rows_is_read_in_bounded_memory(env: UploadEnv):
    path = env.paths.folder("incoming") / "entreprises_bomb.xlsx"
    _bomb_xlsx(path, rows=1_000_000)
    with zipfile.ZipFile(path) as archive:
        inflated = archive.getinfo("xl/worksheets/sheet1.xml").file_size
    assert path.stat().st_size < 10 * 1024 * 1024 < 80 * 1024 * 1024 < inflated
    before = env.snapshot()

    registration = register(env.url, env.paths, path.name)
    tracemalloc.start()
    try:
        outcome = import_upload(env.url, env.paths, registration.partition_key)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert outcome.status == "ERROR" and outcome.folder == "rejected"
    assert [e.reason for e in outcome.errors] == [
        "the file has more than 50,000 data rows (limit 50,000)"
    ]
    # 50,001 rows of two short cells, far below the 80+ MB the sheet inflates to.
    assert peak < 60 * 1024 * 1024, f"peak {peak / 1024 / 1024:.1f} MB"
    assert env.snapshot() == before


def test_xlsx_part_declaring_a_huge_size_is_refused_before_inflating(env: UploadEnv):
    workbook = openpyxl.Workbook()
    workbook.active.append(["siret", "nom"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    path = env.paths.folder("incoming") / "entreprises_strings.xlsx"
    with (
        zipfile.ZipFile(buffer) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            target.writestr(item, source.read(item.filename))
        with target.open("xl/sharedStrings.xml", "w", force_zip64=True) as part:
            block = b" " * (1024 * 1024)
            for _ in range(100):
                part.write(block)
    _, outcome = env.process(path.name)
    assert [e.reason for e in outcome.errors] == [
        "the workbook part xl/sharedStrings.xml would inflate to 100 MB (limit 64 MB)"
    ]
    assert outcome.folder == "rejected"
