"""StockEtablissement reader: layouts by name, text identifiers, chunks, the UniteLegale join."""

from __future__ import annotations

import copy
import csv
import json
import zipfile
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from foxreviews_pipeline.lib.sirene import fields
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.mapping import (
    ENTREPRISE_COLUMNS,
    FLAT_FIELDS,
    REJECT_NO_NAME,
    Rejection,
    map_table,
)
from foxreviews_pipeline.lib.sirene.stock_file import (
    COLUMNS_ADDED_IN_2024,
    STOCK_ETABLISSEMENT_COLUMNS,
    STOCK_ETABLISSEMENT_COLUMNS_48,
    STOCK_UNITE_LEGALE_COLUMNS,
    UniteLegaleIndex,
    iter_stock_batches,
    load_unites_legales,
    read_stock_day,
    sirens_of,
    stock_row_to_api_record,
)
from foxreviews_pipeline.sample.stock_files import api_record_to_stock_row, write_sample_stock
from foxreviews_pipeline_tests.sirene.row_mapping import map_record, row_as_dict, table_rows

FIXTURES = Path(__file__).parent / "fixtures"
REAL_RECORDS = [
    json.loads(p.read_text(encoding="utf-8"))["etablissement"]
    for p in sorted(FIXTURES.glob("*.json"))
]


def _chunks(path: Path, **kwargs) -> list[list[tuple]]:
    """The reader's blocks as rows of `mapping.FLAT_FIELDS`."""
    return [table_rows(batch) for batch in iter_stock_batches(path, **kwargs)]


def _mapped(path: Path, **kwargs) -> tuple[list[tuple], list]:
    """The file's rows as `map_table` maps the reader's blocks, and its rejections."""
    rows, rejections = [], []
    for batch in iter_stock_batches(path, **kwargs):
        mapped, batch_rejections = map_table(batch)
        rows.extend(table_rows(mapped))
        rejections.extend(batch_rejections)
    return rows, rejections


def _header(path: Path) -> list[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf, zf.open(zf.namelist()[0]) as f:
            return f.readline().decode().rstrip("\n").split(",")
    with path.open(encoding="utf-8") as f:
        return f.readline().rstrip("\n").split(",")


def _siret(siren8: str, nic4: str) -> tuple[str, str]:
    siren = siren8 + luhn_check_digit(siren8)
    siret = siren + nic4
    return siren, siret + luhn_check_digit(siret)


def test_layouts_have_the_documented_columns():
    assert len(STOCK_ETABLISSEMENT_COLUMNS) == 54
    assert len(STOCK_ETABLISSEMENT_COLUMNS_48) == 48
    assert STOCK_ETABLISSEMENT_COLUMNS[:3] == ("siren", "nic", "siret")
    assert STOCK_ETABLISSEMENT_COLUMNS[-1] == "activitePrincipaleNAF25Etablissement"
    assert "activitePrincipaleNAF25Etablissement" in COLUMNS_ADDED_IN_2024


def test_stock_rows_map_exactly_like_the_api_records(tmp_path):
    """The same real payloads, through a stock file and its UniteLegale join, give the same rows."""
    etab, ul = tmp_path / "StockEtablissement.csv", tmp_path / "StockUniteLegale.csv"
    # A company with no name at all: rejected alike through both shapes.
    nameless = copy.deepcopy(REAL_RECORDS[0])
    nameless["siren"], nameless["siret"] = _siret("98765432", "0001")
    nameless["statutDiffusionEtablissement"] = "O"
    nameless["uniteLegale"] = dict.fromkeys(nameless["uniteLegale"])
    records = [*REAL_RECORDS, nameless]
    write_sample_stock(
        etab, [api_record_to_stock_row(r) for r in records], unites_legales_path=ul
    )
    rows, rejections = _mapped(etab, unites_legales=ul)
    expected = [map_record(r) for r in records]
    assert rows == [e for e in expected if not isinstance(e, Rejection)]
    assert rejections == [e for e in expected if isinstance(e, Rejection)]
    assert rows and rejections


@pytest.mark.parametrize("layout", [54, 48])
def test_both_layouts_read_by_name(tmp_path, layout):
    etab, ul = tmp_path / f"e{layout}.csv", tmp_path / "ul.csv"
    write_sample_stock(etab, 300, layout, unites_legales_path=ul, seed=5)
    assert len(_header(etab)) == layout
    rows, rejections = _mapped(etab, unites_legales=ul)
    assert len(rows) + len(rejections) == 300
    assert len(rows) > 250
    naf25 = [row_as_dict(r)["naf25_code"] for r in rows]
    if layout == 48:
        assert set(naf25) == {None}
    else:
        assert any(naf25)


def test_48_and_54_column_files_of_the_same_rows_agree(tmp_path):
    ul = tmp_path / "ul.csv"
    write_sample_stock(tmp_path / "e54.csv", 200, 54, unites_legales_path=ul, seed=9)
    write_sample_stock(tmp_path / "e48.csv", 200, 48, seed=9)
    rows54, _ = _mapped(tmp_path / "e54.csv", unites_legales=ul)
    rows48, _ = _mapped(tmp_path / "e48.csv", unites_legales=ul)
    naf25 = ENTREPRISE_COLUMNS.index("naf25_code")
    assert rows54 and any(r[naf25] for r in rows54)
    # The older layout has neither NAF 2025 codes nor Lambert coordinates: no positions.
    lat = ENTREPRISE_COLUMNS.index("sirene_lat")
    assert any(r[lat] is not None for r in rows54) and all(r[lat] is None for r in rows48)
    assert [r[:naf25] + r[naf25 + 1 : lat] for r in rows54] == [
        r[:naf25] + r[naf25 + 1 : lat] for r in rows48
    ]


def test_column_order_does_not_matter(tmp_path):
    ordered, ul = tmp_path / "ordered.csv", tmp_path / "ul.csv"
    write_sample_stock(ordered, 100, unites_legales_path=ul, seed=2)
    with ordered.open(encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    shuffled = tmp_path / "shuffled.csv"
    columns = list(reversed(STOCK_ETABLISSEMENT_COLUMNS))
    with shuffled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    assert _mapped(shuffled, unites_legales=ul) == _mapped(ordered, unites_legales=ul)


def test_identifiers_keep_their_leading_zeros(tmp_path):
    siren, siret = _siret("00032517", "0001")
    row = {
        "siren": siren,
        "nic": siret[9:],
        "siret": siret,
        "statutDiffusionEtablissement": "O",
        "codePostalEtablissement": "01000",
        "codeCommuneEtablissement": "01053",
        "libelleCommuneEtablissement": "BOURG-EN-BRESSE",
        "numeroVoieEtablissement": "7",
        "typeVoieEtablissement": "RUE",
        "libelleVoieEtablissement": "DES ECOLES",
        "etatAdministratifEtablissement": "A",
        "activitePrincipaleEtablissement": "01.11Z",
        "nomenclatureActivitePrincipaleEtablissement": "NAFRev2",
        "trancheEffectifsEtablissement": "01",
        "denominationUniteLegale": "EARL DU BOIS",
    }
    etab, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(etab, [row], unites_legales_path=ul)
    (chunk,) = _chunks(etab, unites_legales=ul)
    flat = dict(zip(FLAT_FIELDS, chunk[0], strict=True))
    assert flat["siren"] == siren and siren.startswith("000")
    assert flat["siret"] == siret
    assert flat["codePostalEtablissement"] == "01000"
    assert flat["codeCommuneEtablissement"] == "01053"
    assert flat["trancheEffectifsEtablissement"] == "01"
    mapped = row_as_dict(_mapped(etab, unites_legales=ul)[0][0])
    assert (mapped["siren"], mapped["code_postal"], mapped["naf_code"]) == (
        siren,
        "01000",
        "01.11Z",
    )


def test_sample_covers_leading_zeros_corsica_and_arrondissements(tmp_path):
    etab, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(etab, 2000, unites_legales_path=ul, seed=1)
    rows, rejections = _mapped(etab, unites_legales=ul)
    by_col = [row_as_dict(r) for r in rows]
    communes = {r["code_commune"] for r in by_col}
    assert {"75108", "2A004", "06088"} <= communes
    assert any(r["siren"].startswith("0") for r in by_col)
    assert any(not r["is_active"] for r in by_col)
    assert any(r["naf_nomenclature"] != "NAFRev2" for r in by_col)
    assert all("[ND]" not in r.values() for r in by_col)
    assert {r.reason for r in rejections} <= {REJECT_NO_NAME}


def test_read_in_chunks(tmp_path):
    etab, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(etab, 1000, unites_legales_path=ul, seed=4)
    chunks = _chunks(etab, unites_legales=ul, block_size=16 << 10)
    assert len(chunks) > 5
    assert sum(len(c) for c in chunks) == 1000
    whole = _chunks(etab, unites_legales=ul)
    assert [row for c in chunks for row in c] == [row for c in whole for row in c]


def test_zip_csv_and_parquet_read_the_same(tmp_path):
    csv_path, zip_path, ul = tmp_path / "e.csv", tmp_path / "e.zip", tmp_path / "ul.csv"
    write_sample_stock(csv_path, 500, unites_legales_path=ul, seed=8)
    write_sample_stock(zip_path, 500, seed=8)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == ["StockEtablissement_utf8.csv"]
    # INSEE's Parquet types some columns; the reader turns them back into text.
    table = pacsv.read_csv(
        csv_path,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in STOCK_ETABLISSEMENT_COLUMNS}
        ),
    )
    typed = {
        "etablissementSiege": pc.equal(table["etablissementSiege"], "true"),
        "dateCreationEtablissement": pc.cast(table["dateCreationEtablissement"], pa.date32()),
        "dateDernierTraitementEtablissement": pc.strptime(
            table["dateDernierTraitementEtablissement"], "%Y-%m-%dT%H:%M:%S", "s"
        ),
    }
    for name, column in typed.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    parquet_path = tmp_path / "e.parquet"
    pq.write_table(table, parquet_path, row_group_size=128)
    expected = _mapped(csv_path, unites_legales=ul)
    assert _mapped(zip_path, unites_legales=ul) == expected
    assert _mapped(parquet_path, unites_legales=ul, block_size=64 << 10) == expected


def test_unite_legale_join_keeps_only_the_sirens_needed(tmp_path):
    etab, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(etab, 50, unites_legales_path=ul, seed=3)
    # A legal unit with no establishment in the file is not loaded.
    extra_siren, _ = _siret("99999999", "0001")
    with ul.open("a", encoding="utf-8", newline="") as f:
        extra = {"siren": extra_siren, "denominationUniteLegale": "UNRELATED SA"}
        csv.writer(f, lineterminator="\n").writerow(
            [extra.get(c, "") for c in STOCK_UNITE_LEGALE_COLUMNS]
        )
    everything = load_unites_legales(ul)
    assert extra_siren in everything.table.column("siren").to_pylist()
    needed = load_unites_legales(ul, only_sirens=sirens_of(etab))
    assert extra_siren not in needed.table.column("siren").to_pylist()
    assert len(needed) == len(everything) - 1


def test_without_unite_legale_there_is_no_name(tmp_path):
    etab = tmp_path / "e.csv"
    write_sample_stock(etab, 20, seed=6)
    rows, rejections = _mapped(etab)
    assert rows == [] and len(rejections) == 20
    assert {r.reason for r in rejections} == {REJECT_NO_NAME}


def test_names_from_a_mapping(tmp_path):
    siren, siret = _siret("12345678", "0001")
    row = {
        "siren": siren, "nic": siret[9:], "siret": siret, "etatAdministratifEtablissement": "A",
        "statutDiffusionEtablissement": "O",
    }
    etab = tmp_path / "e.csv"
    write_sample_stock(etab, [row])
    names = {siren: {"nomUniteLegale": "DURAND", "prenomUsuelUniteLegale": "LEA"}}
    (mapped,), _ = _mapped(etab, unites_legales=names)
    assert row_as_dict(mapped)["nom"] == "Lea DURAND"
    index = UniteLegaleIndex.from_mapping(names)
    (mapped_again,), _ = _mapped(etab, unites_legales=index)
    assert mapped_again == mapped


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_sample_stock(tmp_path / "e.csv", 1, layout=50)


def test_a_day_out_of_the_stock_comes_back_in_the_api_shape(tmp_path):
    folder = tmp_path / "stock"
    folder.mkdir()
    etab = folder / "StockEtablissement_utf8.zip"
    rows = [api_record_to_stock_row(r) for r in REAL_RECORDS]
    write_sample_stock(etab, rows, unites_legales_path=folder / "StockUniteLegale_utf8.zip")
    day = read_stock_day(etab, date(2023, 11, 30))
    on_that_day = [
        r
        for r in REAL_RECORDS
        if (r.get("dateDernierTraitementEtablissement") or "").startswith("2023-11-30")
    ]
    assert len(on_that_day) == 2
    assert day.received == 2 and day.published
    assert day.stats["rows_scanned"] == len(REAL_RECORDS)
    assert [map_record(r) for r in day.records] == [map_record(r) for r in on_that_day]
    record = day.records[0]
    assert record["etablissementSiege"] is True
    assert record["periodesEtablissement"][0]["dateFin"] is None
    assert record["adresseEtablissement"]["codeCommuneEtablissement"] in ("56260", "92023")
    # Nested as the API nests them: the whole address, the current period, the joined names.
    assert set(fields.ETABLISSEMENT) <= set(record)
    assert tuple(record["adresseEtablissement"]) == fields.ADRESSE
    assert tuple(record["periodesEtablissement"][0]) == ("dateFin", *fields.CURRENT_PERIODE)
    assert set(record["uniteLegale"]) <= set(fields.UNITE_LEGALE)


def test_stock_row_to_api_record_inverts_the_flattening():
    for record in REAL_RECORDS:
        assert map_record(stock_row_to_api_record(api_record_to_stock_row(record))) == map_record(
            record
        )
