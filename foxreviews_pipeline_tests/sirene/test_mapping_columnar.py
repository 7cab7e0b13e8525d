"""The columnar mapping against the per-record rules it replaced (benchmarks/reference_mapping.py).

Sample stock rows (several seeds: companies, persons, [ND], closures, old NAF codes) with a
share of their fields replaced by awkward values, the sample day's API records, and
hand-made rows must map to exactly what the per-record rules gave, rejections included.
"""

from __future__ import annotations

import itertools
import random
import re
from datetime import date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from benchmarks import reference_mapping as reference
from foxreviews_pipeline.lib.sirene import mapping
from foxreviews_pipeline.lib.sirene.identifiers import (
    LA_POSTE_HEAD_OFFICE_SIRET,
    LA_POSTE_SIREN,
    la_poste_nic,
    luhn_check_digit,
    siret_valid,
    sirets_valid,
)
from foxreviews_pipeline.lib.sirene.mapping import (
    ENTREPRISE_COLUMNS,
    ENTREPRISE_SCHEMA,
    FLAT_FIELDS,
    Rejection,
    map_table,
)
from foxreviews_pipeline.lib.sirene.stock_file import iter_stock_batches
from foxreviews_pipeline.sample.day import generate_day
from foxreviews_pipeline.sample.stock_files import write_sample_stock
from foxreviews_pipeline_tests.sirene.row_mapping import (
    map_flat_rows,
    map_records,
    row_as_dict,
    rows_table,
    table_rows,
)


def _siret(siren8: str, nic4: str) -> str:
    siren = siren8 + luhn_check_digit(siren8)
    return siren + nic4 + luhn_check_digit(siren + nic4)


GOOD = _siret("32816124", "0002")
LA_POSTE = LA_POSTE_SIREN + la_poste_nic("0001")

# Values that each field may take instead of the generated one: empty, masked, padded,
# lower-case, non-ASCII, malformed, and the exceptions the rules know of.
AWKWARD: dict[str, tuple[Any, ...]] = {
    "siret": (
        None, "", "[ND]", " " + GOOD, GOOD + " ", GOOD[:-1] + str((int(GOOD[-1]) + 1) % 10),
        GOOD[:13], GOOD + "0", "3281612450002A",
        "\uff13\uff12\uff18\uff11\uff16\uff11\uff12\uff14\uff15\uff10\uff10\uff10\uff10\uff12",  # full-width
        LA_POSTE,
        LA_POSTE[:-1] + str((int(LA_POSTE[-1]) + 1) % 10), LA_POSTE_HEAD_OFFICE_SIRET,
        "35600000000049", "00000000000000",
    ),
    # A callable derives the value from the row's SIRET (its SIREN with spaces around).
    "siren": (
        None, "", "[ND]", " ", "552049447", "SIREN", "12345678",
        lambda siret: f" {(siret or '')[:9]} ", lambda siret: f"{(siret or '')[:9]}\t",
    ),
    "statutDiffusionEtablissement": (None, "", "O", "P", "N", "[ND]", "o", " O"),
    "dateCreationEtablissement": (
        None, "", "[ND]", "1900-01-01", "2024-02-29", "2023-02-29", "2024-02-30", "2024-13-01",
        "0000-01-01", "0001-01-01", "9999-12-31", "20240131", "2024-W05-3", "2024-1-31",
        "2024-01-31T10:00:00", "2024-01-31xyz", "\uff12\uff10\uff12\uff14-01-31", "  2024-01-31",
    ),
    "trancheEffectifsEtablissement": (None, "", "NN", "[ND]", "01", " 12 "),
    "dateDernierTraitementEtablissement": (
        None, "", "[ND]", "2024-03-22T10:15:30.000", "2024-03-22T10:15:30", "2024-03-22 10:15:30",
        "2024-03-22T10:15:30.5", "2024-03-22T10:15:30.123456", "2024-03-22T10:15:30.1234567",
        "2024-03-22T10:15:30,123", "2024-03-22", "2024-03-22T10:15", "2024-03-22T24:00:00",
        "2024-03-22T23:59:60", "2024-02-30T10:00:00", "2024-03-22X10:15:30",
        "2024-03-22T10:15:30+01:00", "2024-03-22T10:15:30Z", "20240322T101530", "not a date",
    ),
    "etablissementSiege": (None, "", "true", "false", "TRUE", " oui ", "O", "n", "1", "x", True, False),
    "complementAdresseEtablissement": (None, "", "[ND]", "BAT A", " BAT B "),
    "numeroVoieEtablissement": (None, "", "[ND]", "12", " 3", "  "),
    "indiceRepetitionEtablissement": (None, "", "[ND]", "B", "b", "bis", "A", "ß", "Q"),
    "typeVoieEtablissement": (
        None, "", "[ND]", "AV", "av", "Allée", "ALLÉE", "ALLEE", "LIEU DIT", "XYZ", "  ", " RUE ",
        "Rond-Point", "ZAC",
    ),
    "libelleVoieEtablissement": (None, "", "[ND]", "DES LILAS", " DE LA GARE "),
    "codePostalEtablissement": (
        None, "", "[ND]", "75008", "7500", "750080", "75O08", "\u0660\u0661\u0662\u0663\u0664", "²2345", "75é08", " 7500",
    ),
    "libelleCommuneEtablissement": (None, "", "[ND]", "PARIS 8"),
    "codeCommuneEtablissement": (None, "", "[ND]", "2A004"),
    "dateDebut": (None, "", "[ND]", "2024-01-31", "2024-02-30", "20240131"),
    "etatAdministratifEtablissement": (None, "", "A", "F", "C", "a", "[ND]"),
    "enseigne1Etablissement": (None, "", "[ND]", "CHEZ MOI"),
    "denominationUsuelleEtablissement": (None, "", "[ND]", "LE BISTROT"),
    "activitePrincipaleEtablissement": (
        None, "", "[ND]", "62.01Z", "6201Z", "6201z", " 6201Z ", "62.01z", "52.4X", "62011",
        "ABCDE", "\u0661\u0662\u0663\u0664Z", "93.0D",
    ),
    "nomenclatureActivitePrincipaleEtablissement": (
        None, "", "[ND]", "NAFRev2", "NAF2025", "NAFRev1", "NAF1993",
    ),
    "activitePrincipaleNAF25Etablissement": (None, "", "[ND]", "6201A", " 62.01B ", "6201a"),
    "denominationUniteLegale": (
        None, "", "[ND]", "ACME", " ACME", "ACME ", "  ", " [ND] ", "\tACME", "ÉTABLISSEMENTS X",
    ),
    "nomUniteLegale": (None, "", "[ND]", "DURAND", "de la fontaine", " DUPONT"),
    "nomUsageUniteLegale": (None, "", "[ND]", "MARTIN"),
    "prenom1UniteLegale": (
        None, "", "[ND]", "JEAN-PIERRE", "jean  pierre", "MARIE - CLAIRE", "ÉLODIE", "ǆEMAL",
        "İLKER", "ß", "D'ARTAGNAN", "JEAN2", "-", "  ", "A--B", "JEAN\x1cPAUL",
    ),
    "prenomUsuelUniteLegale": (None, "", "[ND]", "LEA", "éloïse", "ANNE-MARIE"),
    # Lambert-93 metres (near Paris, Lyon), a Réunion abscissa, and what is not a number.
    "coordonneeLambertAbscisseEtablissement": (
        None, "", "[ND]", "652000.0", " 842100,5 ", "338830", "1e5", "abc", "-", "1" * 400, "12.",
    ),
    "coordonneeLambertOrdonneeEtablissement": (
        None, "", "[ND]", "6862000.0", "6519300", "7690600.0", "NaN", " ", "6.8e6",
    ),
}


def _expected(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[Rejection]]:
    mapped, rejections = [], []
    for row in rows:
        result = reference.map_flat(row)
        if isinstance(result, Rejection):
            rejections.append(result)
        else:
            mapped.append(_naive(result))
    return mapped, rejections


def _naive(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # The per-record rules kept an offset INSEE never writes (the `timestamp` column dropped
    # it on write); the columnar mapping drops it at once.
    at = ENTREPRISE_COLUMNS.index("date_dernier_traitement")
    treated = row[at]
    if isinstance(treated, datetime) and treated.tzinfo is not None:
        return (*row[:at], treated.replace(tzinfo=None), *row[at + 1 :])
    return row


def _derived(values: list[Any]) -> tuple[Any, ...]:
    siren = values[1]
    if callable(siren):
        values[1] = siren(values[0])
    return tuple(values)


def _stock_rows(tmp_path, n: int, seed: int) -> list[tuple[Any, ...]]:
    etab, ul = tmp_path / f"e{seed}.csv", tmp_path / f"ul{seed}.csv"
    write_sample_stock(etab, n, unites_legales_path=ul, seed=seed)
    return [row for batch in iter_stock_batches(etab, unites_legales=ul) for row in table_rows(batch)]


def _awkward(rows: list[tuple[Any, ...]], seed: int, share: float) -> list[tuple[Any, ...]]:
    rng = random.Random(seed)
    out = []
    for row in rows:
        values = list(row)
        for i, name in enumerate(FLAT_FIELDS):
            if rng.random() < share:
                values[i] = rng.choice(AWKWARD[name])
        out.append(_derived(values))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sample_stock_rows_map_as_the_per_record_rules(tmp_path, seed):
    rows = _stock_rows(tmp_path, 1500, seed)
    expected = _expected(rows)
    assert map_flat_rows(rows) == expected
    # A sample of any seed has persons, closures and old NAF codes; the partially diffusible
    # rows of the larger seeds bring [ND].
    mapped = [row_as_dict(r) for r in expected[0]]
    assert any(r["date_fermeture"] for r in mapped)
    assert any(r["naf_nomenclature"] not in (None, "NAFRev2") for r in mapped)
    assert any(re.fullmatch(r"[A-Z][a-z]+-[A-Z][a-z]+ [A-Z ]+", r["nom"] or "") for r in mapped)
    assert any(r["nom"] is None and r["statut_diffusion"] == "P" for r in mapped)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_awkward_values_map_as_the_per_record_rules(tmp_path, seed):
    rows = _awkward(_stock_rows(tmp_path, 1200, seed), seed, share=0.08)
    mapped, rejections = map_flat_rows(rows)
    expected_rows, expected_rejections = _expected(rows)
    assert rejections == expected_rejections
    assert mapped == expected_rows
    reasons = {r.reason for r in rejections}
    assert reasons == {mapping.REJECT_INVALID_SIRET, mapping.REJECT_NO_NAME}
    assert any("does not match" in r.message for r in rejections)


def test_every_awkward_value_alone(tmp_path):
    """Each awkward value of each field, on an otherwise ordinary row."""
    base = _stock_rows(tmp_path, 40, 7)
    rows = []
    for i, name in enumerate(FLAT_FIELDS):
        for j, value in enumerate(AWKWARD[name]):
            row = list(base[(i * 7 + j) % len(base)])
            row[i] = value
            rows.append(_derived(row))
    assert map_flat_rows(rows) == _expected(rows)


def test_street_lines_whatever_part_is_missing(tmp_path):
    """Every combination of absent, empty, masked and given street parts and complement."""
    (base,) = _stock_rows(tmp_path, 1, 8)
    parts = (
        "numeroVoieEtablissement",
        "indiceRepetitionEtablissement",
        "typeVoieEtablissement",
        "libelleVoieEtablissement",
        "complementAdresseEtablissement",
    )
    rows = []
    for values in itertools.product((None, "", "[ND]", "B"), repeat=len(parts)):
        row = dict(zip(FLAT_FIELDS, base, strict=True))
        row.update(zip(parts, values, strict=True))
        rows.append(tuple(row[f] for f in FLAT_FIELDS))
    mapped, _ = map_flat_rows(rows)
    assert mapped == _expected(rows)[0]
    adresses = [row_as_dict(r)["adresse"] for r in mapped]
    assert None in adresses and "B BIS B B, B" in adresses


def test_sample_day_records_map_as_the_per_record_rules():
    records = generate_day(date(2026, 11, 20), n=3000, seed=5)
    rows, rejections = map_records(records)
    expected = [reference.map_record(r) for r in records]
    assert rejections == [e for e in expected if isinstance(e, Rejection)]
    assert rows == [e for e in expected if not isinstance(e, Rejection)]
    statuses = {row_as_dict(r)["statut_diffusion"] for r in rows}
    assert {"O", "P"} <= statuses


def test_api_records_with_json_types_and_missing_groups():
    records: list[dict[str, Any]] = [
        {"siret": GOOD, "etablissementSiege": False, "uniteLegale": {"denominationUniteLegale": "X"},
         "statutDiffusionEtablissement": "O"},
        {"siret": GOOD, "statutDiffusionEtablissement": "O"},  # no legal unit: no name
        {"siret": GOOD, "statutDiffusionEtablissement": "N", "periodesEtablissement": []},
        {"siret": None},
        {"siret": GOOD, "statutDiffusionEtablissement": "O", "uniteLegale": {"nomUniteLegale": "D"},
         "periodesEtablissement": [
             {"dateFin": "2020-01-01", "etatAdministratifEtablissement": "A"},
             {"dateFin": "2019-01-01", "etatAdministratifEtablissement": "A"},
         ]},
    ]
    rows, rejections = map_records(records)
    expected = [reference.map_record(r) for r in records]
    assert rows == [e for e in expected if not isinstance(e, Rejection)]
    assert rejections == [e for e in expected if isinstance(e, Rejection)]
    assert row_as_dict(rows[0])["est_siege"] is False


def test_map_table_types_order_and_batches():
    rows = [
        (GOOD, GOOD[:9], "O", "2020-05-04", "01", "2024-03-22T10:15:30.000", "true", None, "3",
         "B", "AV", "FOCH", "75016", "PARIS 16", "75116", "2024-01-31", "F", None, None,
         "6201Z", "NAFRev2", None, "ACME", None, None, None, None, "652000.0", "6862000.0"),
        ("1", None, *([None] * (len(FLAT_FIELDS) - 2))),
    ]
    table = rows_table(rows)
    mapped, rejections = map_table(table)
    assert mapped.schema == ENTREPRISE_SCHEMA
    assert mapped.column_names == list(ENTREPRISE_COLUMNS)
    assert [r.siret for r in rejections] == ["1"]
    (row,) = table_rows(mapped)
    assert row == (
        GOOD, GOOD[:9], "ACME", None, "3 BIS AVENUE FOCH", "75016", "PARIS 16", "75116", "62.01Z",
        "NAFRev2", None, False, date(2020, 5, 4), date(2024, 1, 31), True, "01", "O",
        datetime(2024, 3, 22, 10, 15, 30), *row[-3:],
    )
    # Lambert-93 (652000, 6862000) is in Paris.
    assert row[-1] == 2154 and 48.8 < row[-3] < 48.9 and 2.3 < row[-2] < 2.4
    # A record batch, and a table in several chunks, map alike.
    assert map_table(table.to_batches()[0])[0].equals(mapped)
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert map_table(chunked)[0].equals(mapped)
    empty, none = map_table(table.slice(0, 0))
    assert (empty.num_rows, none, empty.schema) == (0, [], ENTREPRISE_SCHEMA)


def test_sirets_valid_agrees_with_siret_valid():
    rng = random.Random(3)
    sirets = [_siret(f"{rng.randrange(10**8):08d}", f"{rng.randrange(10**4):04d}") for _ in range(300)]
    sirets += [LA_POSTE_SIREN + la_poste_nic(f"{k:04d}") for k in range(50)]
    sirets += [LA_POSTE_HEAD_OFFICE_SIRET, "35600000000049", "35600000000050"]
    # Every single-digit change of a valid SIRET, and random digit strings.
    sirets += [s[:i] + str((int(s[i]) + 1) % 10) + s[i + 1 :] for s in sirets[:60] for i in range(14)]
    sirets += [f"{rng.randrange(10**14):014d}" for _ in range(2000)]
    digits = np.array([[int(c) for c in s] for s in sirets], dtype=np.uint8)
    assert sirets_valid(digits).tolist() == [siret_valid(s) for s in sirets]
    assert any(sirets_valid(digits)) and not all(sirets_valid(digits))
