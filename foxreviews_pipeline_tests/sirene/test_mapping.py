"""SIRENE record → enterprise_entreprise row (docs/data-model.md), on real INSEE payload shapes.

The fixtures under fixtures/ say where each payload comes from in their "source" field:
- company_mgdis.json, company_enseigne_demo.json: etalab/data_pass spec/fixtures/insee/*.json
- company_masked_nulls_ccas.json: gip-inclusion/les-emplois itou/utils/mocks/api_entreprise.py
- natural_person_closed_naf1993.json, closed_nafrev1_ccf.json: INSEE's API Sirene V3
  presentation slides (multicriteria search on Malakoff), keys renamed to API 3.11 spelling
- paris_arrondissement_severnaya.json, partially_diffusible_rennes.json:
  annuaire-entreprises-data-gouv-fr/site clients/sirene-insee/siret/_test/*.json
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from foxreviews_pipeline.lib.sirene.identifiers import (
    LA_POSTE_SIREN,
    la_poste_nic,
    luhn_check_digit,
)
from foxreviews_pipeline.lib.sirene.mapping import (
    ENTREPRISE_COLUMNS,
    FLAT_FIELDS,
    REJECT_INVALID_SIRET,
    REJECT_NO_NAME,
    REJECTION_REASONS,
    Rejection,
    type_voie_label,
)
from foxreviews_pipeline_tests.sirene.row_mapping import (
    map_flat,
    map_flat_dict,
    map_record,
    map_records,
    row_as_dict,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))["etablissement"]


def mapped(record: dict) -> dict:
    result = map_record(record)
    assert not isinstance(result, Rejection), result
    return row_as_dict(result)


def test_row_columns_are_the_contract_with_the_write_path():
    assert ENTREPRISE_COLUMNS == (
        "siret",
        "siren",
        "nom",
        "nom_commercial",
        "adresse",
        "code_postal",
        "ville_nom",
        "code_commune",
        "naf_code",
        "naf_nomenclature",
        "naf25_code",
        "is_active",
        "date_creation",
        "date_fermeture",
        "est_siege",
        "tranche_effectifs",
        "statut_diffusion",
        "date_dernier_traitement",
        "sirene_lat",
        "sirene_lng",
        "sirene_epsg",
    )
    assert len(map_record(fixture("company_mgdis"))) == len(ENTREPRISE_COLUMNS)


def test_company():
    assert mapped(fixture("company_mgdis")) == {
        "siret": "32816124500027",
        "siren": "328161245",
        "nom": "MGDIS",
        "nom_commercial": None,
        "adresse": "ALLÉE NICOLAS LE BLANC",
        "code_postal": "56000",
        "ville_nom": "VANNES",
        "code_commune": "56260",
        "naf_code": "58.29C",
        "naf_nomenclature": "NAFRev2",
        "naf25_code": None,
        "is_active": True,
        "date_creation": date(1997, 10, 24),
        "date_fermeture": None,
        "est_siege": True,
        "tranche_effectifs": None,
        "statut_diffusion": "O",
        "date_dernier_traitement": datetime(2023, 11, 30, 10, 17, 12),
        # The record gives no Lambert coordinates.
        "sirene_lat": None,
        "sirene_lng": None,
        "sirene_epsg": None,
    }


def test_current_period_without_datefin_key_and_complement_after_the_street():
    # masquerValeursNulles=true drops the null dateFin: the current period is still periodes[0],
    # not the NAFRev1 period below it.
    row = mapped(fixture("company_masked_nulls_ccas"))
    assert row["nom"] == "CENTRE COMMUNAL D'ACTION SOCIALE"
    assert row["adresse"] == "22 RUE DU WAD BILLY, 22-24"
    assert (row["naf_code"], row["naf_nomenclature"]) == ("88.99B", "NAFRev2")
    assert row["tranche_effectifs"] == "12"
    assert row["is_active"] is True


def test_enseigne_is_the_trade_name_and_street_type_is_written_out():
    row = mapped(fixture("company_enseigne_demo"))
    assert row["nom"] == "Établissement public industriel et commercial de démonstration"
    assert row["nom_commercial"] == "MAIRIE"
    assert row["adresse"] == "1 PLACE MAURICE GUNSBOURG"
    # the NAF1993 code of an older period is not the current one
    assert row["naf_code"] == "84.11Z"


def test_denomination_usuelle_wins_over_enseigne():
    record = fixture("company_enseigne_demo")
    record["periodesEtablissement"][0]["denominationUsuelleEtablissement"] = "HOTEL DE VILLE"
    assert mapped(record)["nom_commercial"] == "HOTEL DE VILLE"


def test_natural_person_closed_with_a_naf1993_code():
    row = mapped(fixture("natural_person_closed_naf1993"))
    # prénom usuel + nom d'usage (which wins over the birth name MOUFFLET)
    assert row["nom"] == "Raymonde LEGOUI"
    assert row["is_active"] is False
    assert row["date_fermeture"] == date(1992, 5, 30)
    # an old nomenclature is kept as given, with its nomenclature, not reformatted
    assert (row["naf_code"], row["naf_nomenclature"]) == ("93.0D", "NAF1993")
    assert row["date_creation"] is None
    assert row["adresse"] == "41 RUE PAUL BERT"


def test_natural_person_name_variants():
    record = fixture("natural_person_closed_naf1993")
    ul = record["uniteLegale"]
    ul["nomUsageUniteLegale"] = None
    assert mapped(record)["nom"] == "Raymonde MOUFFLET"
    ul["prenomUsuelUniteLegale"] = None
    ul["prenom1UniteLegale"] = "MARIE-CLAIRE"
    assert mapped(record)["nom"] == "Marie-Claire MOUFFLET"
    ul["prenom1UniteLegale"] = None
    assert mapped(record)["nom"] == "MOUFFLET"


def test_closed_establishment_with_a_nafrev1_code():
    row = mapped(fixture("closed_nafrev1_ccf"))
    assert row["is_active"] is False
    assert row["date_fermeture"] == date(2007, 5, 23)
    assert (row["naf_code"], row["naf_nomenclature"]) == ("51.8L", "NAFRev1")
    assert row["adresse"] == "114 AVENUE PIERRE BROSSOLETTE"
    assert row["nom"] == "CCF"


def test_active_establishment_has_no_closing_date():
    record = fixture("closed_nafrev1_ccf")
    record["periodesEtablissement"][0]["etatAdministratifEtablissement"] = "A"
    row = mapped(record)
    assert row["is_active"] is True and row["date_fermeture"] is None


def test_current_period_is_the_open_one_even_when_not_first():
    record = fixture("closed_nafrev1_ccf")
    periods = record["periodesEtablissement"]
    record["periodesEtablissement"] = periods[1:] + periods[:1]
    assert mapped(record)["date_fermeture"] == date(2007, 5, 23)


def test_paris_arrondissement_keeps_its_own_commune_code():
    row = mapped(fixture("paris_arrondissement_severnaya"))
    assert row["code_commune"] == "75108"
    assert row["ville_nom"] == "PARIS 8"
    assert row["code_postal"] == "75008"
    assert row["adresse"] == "10 RUE DE PENTHIEVRE"
    assert row["date_dernier_traitement"] == datetime(2022, 7, 13, 10, 40, 59)


def test_partially_diffusible_natural_person_is_stored_without_a_name_not_named_nd():
    row = mapped(fixture("partially_diffusible_rennes"))
    assert row["siret"] == "30002576400048"
    # Stored nameless, so that a person who masks their name later loses their page.
    assert (row["nom"], row["nom_commercial"], row["adresse"]) == (None, None, None)
    assert row["statut_diffusion"] == "P"
    assert "[ND]" not in row.values()


def test_partially_diffusible_with_no_name_at_all_is_still_rejected():
    record = fixture("partially_diffusible_rennes")
    for key in ("nomUniteLegale", "nomUsageUniteLegale", "denominationUniteLegale"):
        record["uniteLegale"][key] = None
    result = map_record(record)
    assert isinstance(result, Rejection) and result.reason == REJECT_NO_NAME


def test_partially_diffusible_never_stores_nd():
    record = fixture("partially_diffusible_rennes")
    record["uniteLegale"]["denominationUniteLegale"] = "SCI DES LILAS"
    row = mapped(record)
    assert "[ND]" not in row.values()
    assert row["adresse"] is None
    assert row["code_postal"] is None
    assert row["nom_commercial"] is None
    # the commune stays diffused, and is what ProLocalisations resolve on
    assert (row["code_commune"], row["ville_nom"]) == ("35238", "RENNES")
    assert row["statut_diffusion"] == "P"


def test_a_half_masked_street_is_dropped_whole():
    record = fixture("paris_arrondissement_severnaya")
    record["adresseEtablissement"]["numeroVoieEtablissement"] = "[ND]"
    record["adresseEtablissement"]["complementAdresseEtablissement"] = "BAT A"
    assert mapped(record)["adresse"] == "BAT A"


@pytest.mark.parametrize(
    "siret",
    ["32816124500028", "3281612450002", "328161245000270", "3281612450002A", "", None],
)
def test_invalid_siret_is_rejected(siret):
    record = fixture("company_mgdis")
    record["siret"] = siret
    result = map_record(record)
    assert isinstance(result, Rejection) and result.reason == REJECT_INVALID_SIRET


def test_siren_must_match_the_siret():
    record = fixture("company_mgdis")
    record["siren"] = "552049447"
    result = map_record(record)
    assert isinstance(result, Rejection) and result.reason == REJECT_INVALID_SIRET


def test_la_poste_establishments_follow_their_own_key():
    record = fixture("company_mgdis")
    record["siret"] = LA_POSTE_SIREN + la_poste_nic("0001")
    record["siren"] = LA_POSTE_SIREN
    assert mapped(record)["siren"] == LA_POSTE_SIREN


def test_every_rejection_reason_is_documented():
    assert set(REJECTION_REASONS) == {REJECT_INVALID_SIRET, REJECT_NO_NAME}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("AV", "AVENUE"),
        ("AVENUE", "AVENUE"),
        ("BD", "BOULEVARD"),
        ("ALL", "ALLÉE"),
        ("ALLEE", "ALLÉE"),
        ("Allée", "ALLÉE"),
        ("RES", "RÉSIDENCE"),
        ("RESIDENCE", "RÉSIDENCE"),
        ("QUA", "QUARTIER"),
        ("SQ", "SQUARE"),
        ("CHE", "CHEMIN"),
        ("IMP", "IMPASSE"),
        ("RTE", "ROUTE"),
        ("PL", "PLACE"),
        ("RPT", "ROND-POINT"),
        ("ROND POINT", "ROND-POINT"),
        ("LD", "LIEU-DIT"),
        ("LIEU DIT", "LIEU-DIT"),
        ("ZAC", "ZONE D'AMÉNAGEMENT CONCERTÉ"),
        ("XYZ", "XYZ"),
        ("[ND]", None),
        (None, None),
    ],
)
def test_street_types(given, expected):
    assert type_voie_label(given) == expected


@pytest.mark.parametrize(
    ("indice", "expected"),
    [
        ("B", "10 BIS RUE DE PENTHIEVRE"),
        ("T", "10 TER RUE DE PENTHIEVRE"),
        ("Q", "10 QUATER RUE DE PENTHIEVRE"),
        ("C", "10 QUINQUIES RUE DE PENTHIEVRE"),
        ("A", "10 A RUE DE PENTHIEVRE"),
        (None, "10 RUE DE PENTHIEVRE"),
    ],
)
def test_repetition_index(indice, expected):
    record = fixture("paris_arrondissement_severnaya")
    record["adresseEtablissement"]["indiceRepetitionEtablissement"] = indice
    assert mapped(record)["adresse"] == expected


@pytest.mark.parametrize("code_postal", ["7500", "750080", "75O08", "[ND]", ""])
def test_malformed_postal_code_is_null(code_postal):
    record = fixture("paris_arrondissement_severnaya")
    record["adresseEtablissement"]["codePostalEtablissement"] = code_postal
    assert mapped(record)["code_postal"] is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-22T10:15:30.000", datetime(2024, 3, 22, 10, 15, 30)),
        ("2024-03-22T10:15:30", datetime(2024, 3, 22, 10, 15, 30)),
        ("2024-03-22 10:15:30", datetime(2024, 3, 22, 10, 15, 30)),
        ("not a date", None),
        (None, None),
    ],
)
def test_date_dernier_traitement_formats(value, expected):
    record = fixture("company_mgdis")
    record["dateDernierTraitementEtablissement"] = value
    assert mapped(record)["date_dernier_traitement"] == expected


def test_insee_unknown_creation_date_is_null():
    record = fixture("company_mgdis")
    record["dateCreationEtablissement"] = "1900-01-01"
    assert mapped(record)["date_creation"] is None


def test_naf_codes_without_dot_and_naf25():
    record = fixture("company_mgdis")
    record["periodesEtablissement"][0]["activitePrincipaleEtablissement"] = "5829C"
    record["activitePrincipaleNAF25Etablissement"] = "58.29C"
    row = mapped(record)
    assert (row["naf_code"], row["naf25_code"]) == ("58.29C", "58.29C")


def test_map_records_splits_rows_and_rejections():
    records = [
        fixture(n)
        for n in (
            "company_mgdis",
            "partially_diffusible_rennes",
            "paris_arrondissement_severnaya",
            "natural_person_closed_naf1993",
        )
    ]
    broken = copy.deepcopy(records[0])
    broken["siret"] = "12345678901234"
    rows, rejections = map_records([*records, broken])
    assert [r[0] for r in rows] == [
        "32816124500027", "30002576400048", "90859587900010", "30058149300016",
    ]
    assert [(r.siret, r.reason) for r in rejections] == [("12345678901234", REJECT_INVALID_SIRET)]


def test_flat_entry_points_share_the_rules():
    values = dict.fromkeys(FLAT_FIELDS)
    siren = "12345678"
    siren += luhn_check_digit(siren)
    siret = siren + "0001"
    siret += luhn_check_digit(siret)
    values.update(
        siret=siret,
        siren=siren,
        statutDiffusionEtablissement="O",
        nomUniteLegale="DUPONT",
        prenom1UniteLegale="JEAN",
        typeVoieEtablissement="AV",
        libelleVoieEtablissement="VICTOR HUGO",
        numeroVoieEtablissement="3",
        etatAdministratifEtablissement="F",
        dateDebut="2024-01-31",
        etablissementSiege="false",
        codePostalEtablissement="[ND]",
    )
    from_dict = map_flat_dict(values)
    from_tuple = map_flat(tuple(values[f] for f in FLAT_FIELDS))
    assert from_dict == from_tuple
    row = row_as_dict(from_dict)
    assert row["nom"] == "Jean DUPONT"
    assert row["adresse"] == "3 AVENUE VICTOR HUGO"
    assert row["est_siege"] is False
    assert row["code_postal"] is None
    assert (row["is_active"], row["date_fermeture"]) == (False, date(2024, 1, 31))
