"""The synthetic SIRENE day, and the SIREN/SIRET validity rules it must respect."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import date, timedelta

import pytest

from foxreviews_pipeline.lib.reference.naf2025 import correspondents
from foxreviews_pipeline.lib.sirene.fields import (
    ADRESSE,
    ADRESSE2,
    ETABLISSEMENT,
    PERIODE,
    UNITE_LEGALE,
)
from foxreviews_pipeline.lib.sirene.identifiers import (
    LA_POSTE_SIREN,
    la_poste_nic,
    luhn_check_digit,
    luhn_valid,
    siren_valid,
    siret_valid,
)
from foxreviews_pipeline.lib.sirene.mapping import ND
from foxreviews_pipeline.sample.day import (
    FALLBACK_COMMUNES,
    FALLBACK_NAF_CODES,
    NAF_REV1_CODES,
    generate_day,
    switch_to_naf2025,
)

DAY = date(2025, 3, 10)


@pytest.fixture(scope="module")
def day() -> list[dict]:
    return generate_day(DAY)


def current(record: dict) -> dict:
    return record["periodesEtablissement"][0]


# -- identifiers ------------------------------------------------------------------------


def test_luhn_basics():
    assert luhn_valid("732829320")  # SIREN with a correct key
    assert not luhn_valid("732829321")
    assert not luhn_valid("")
    assert not luhn_valid("73282932a")
    assert not luhn_valid(None)
    assert luhn_check_digit("73282932") == "0"
    for partial in ("12345678", "0000000", "98765432100012"):
        assert luhn_valid(partial + luhn_check_digit(partial))


def test_siren_and_siret_validity():
    assert siren_valid("732829320")
    assert not siren_valid("73282932")  # 8 digits
    assert siret_valid("73282932000074")
    assert not siret_valid("73282932000075")
    assert not siret_valid("7328293200007")
    assert not siret_valid("73282932000074 ")


def test_la_poste_exception():
    assert siren_valid(LA_POSTE_SIREN)
    assert siret_valid("35600000000048")  # head office: plain Luhn
    nic = la_poste_nic("0421")
    siret = LA_POSTE_SIREN + nic
    assert sum(map(int, siret)) % 5 == 0
    assert siret_valid(siret)
    not_multiple = LA_POSTE_SIREN + "0421" + str((int(nic[-1]) + 1) % 10)
    assert not siret_valid(not_multiple)


# -- the synthetic day ------------------------------------------------------------------


@pytest.mark.slow
def test_same_date_same_records_and_other_dates_differ(day):
    again = generate_day(DAY)
    assert json.dumps(day, sort_keys=True) == json.dumps(again, sort_keys=True)
    other = generate_day(DAY + timedelta(days=1))
    assert {r["siret"] for r in other} != {r["siret"] for r in day}
    assert generate_day(DAY, n=100, seed=1) != generate_day(DAY, n=100, seed=2)


def test_argument_order_does_not_matter():
    forward = generate_day(DAY, FALLBACK_COMMUNES, FALLBACK_NAF_CODES, n=300)
    backward = generate_day(DAY, FALLBACK_COMMUNES[::-1], FALLBACK_NAF_CODES[::-1], n=300)
    assert forward == backward


def test_count_and_unique_sirets(day):
    assert len(day) == 35_000
    assert len({r["siret"] for r in day}) == 35_000
    assert len(generate_day(DAY, n=1234)) == 1234
    assert generate_day(DAY, n=0) == []


def test_identifiers_are_valid(day):
    for record in day:
        assert record["siret"] == record["siren"] + record["nic"]
        assert siret_valid(record["siret"]), record["siret"]
        assert siren_valid(record["siren"]), record["siren"]
    assert any(r["siren"] == LA_POSTE_SIREN for r in day)
    la_poste = [r["siret"] for r in day if r["siren"] == LA_POSTE_SIREN]
    assert all(sum(map(int, s)) % 5 == 0 for s in la_poste)


def test_api_shape(day):
    for record in day[:2000]:
        assert tuple(record)[: len(ETABLISSEMENT)] == ETABLISSEMENT
        assert set(record) == set(ETABLISSEMENT) | {
            "uniteLegale", "adresseEtablissement", "adresse2Etablissement", "periodesEtablissement"
        }
        assert tuple(record["uniteLegale"]) == UNITE_LEGALE
        assert tuple(record["adresseEtablissement"]) == ADRESSE
        assert tuple(record["adresse2Etablissement"]) == ADRESSE2
        periods = record["periodesEtablissement"]
        assert record["nombrePeriodesEtablissement"] == len(periods) >= 1
        assert all(tuple(p) == PERIODE for p in periods)
        assert periods[0]["dateFin"] is None
        assert all(p["dateFin"] is not None for p in periods[1:])
        for newer, older in itertools.pairwise(periods):
            assert older["dateFin"] == (
                date.fromisoformat(newer["dateDebut"]) - timedelta(days=1)
            ).isoformat()
        assert record["dateDernierTraitementEtablissement"].startswith(DAY.isoformat() + "T")
        assert len(record["dateDernierTraitementEtablissement"]) == 23
        assert isinstance(record["etablissementSiege"], bool)
        assert record["dateCreationEtablissement"] <= DAY.isoformat()


def test_companies_and_natural_persons(day):
    persons = [r for r in day if r["uniteLegale"]["categorieJuridiqueUniteLegale"] == "1000"]
    companies = [r for r in day if r["uniteLegale"]["categorieJuridiqueUniteLegale"] != "1000"]
    assert 0.40 < len(persons) / len(day) < 0.70
    assert all(r["uniteLegale"]["denominationUniteLegale"] is None for r in persons)
    assert all(r["uniteLegale"]["nomUniteLegale"] for r in persons)
    assert all(r["uniteLegale"]["denominationUniteLegale"] for r in companies)
    assert any(r["uniteLegale"]["nomUsageUniteLegale"] not in (None, ND) for r in persons)
    assert any(r["uniteLegale"]["prenomUsuelUniteLegale"] not in (None, ND) for r in persons)


def test_closures(day):
    closed = [r for r in day if current(r)["etatAdministratifEtablissement"] == "F"]
    assert 0.05 < len(closed) / len(day) < 0.12
    for record in closed:
        assert current(record)["dateDebut"] <= DAY.isoformat()
    # Most closures follow an active period of the same establishment.
    assert sum(len(r["periodesEtablissement"]) > 1 for r in closed) / len(closed) > 0.9


def test_partially_diffusible_records(day):
    partial = [r for r in day if r["statutDiffusionEtablissement"] == "P"]
    assert 0.015 < len(partial) / len(day) < 0.05
    for record in partial:
        address = record["adresseEtablissement"]
        assert address["libelleVoieEtablissement"] == ND
        assert address["codePostalEtablissement"] == ND
        assert address["codeCommuneEtablissement"] != ND  # the commune is never masked
        assert current(record)["enseigne1Etablissement"] == ND
        unite = record["uniteLegale"]
        if unite["categorieJuridiqueUniteLegale"] == "1000":
            assert unite["nomUniteLegale"] == ND and unite["prenom1UniteLegale"] == ND
    with_code = [r for r in partial if r["adresseEtablissement"]["codeCommuneEtablissement"]]
    assert len(with_code) / len(partial) > 0.95
    diffusible = [r for r in day if r["statutDiffusionEtablissement"] == "O"]
    assert not any(ND in json.dumps(r) for r in diffusible[:3000])


def test_updates_reappear_consistently(day):
    previous = {r["siret"]: r for r in generate_day(DAY - timedelta(days=1))}
    again = [r for r in day if r["siret"] in previous]
    assert 50 < len(again) < 300  # ~20 % updates spread over the previous year
    for record in again:
        before = previous[record["siret"]]
        assert record["siren"] == before["siren"]
        assert record["dateCreationEtablissement"] == before["dateCreationEtablissement"]
        for key in ("denominationUniteLegale", "nomUniteLegale", "categorieJuridiqueUniteLegale"):
            assert record["uniteLegale"][key] == before["uniteLegale"][key]
        stamp = "dateDernierTraitementEtablissement"
        assert record[stamp] > before[stamp]
    # Updates mostly reach back further than yesterday: creation dates well before the day.
    old = sum(r["dateCreationEtablissement"] < (DAY - timedelta(days=90)).isoformat() for r in day)
    assert old / len(day) > 0.05


def test_communes_and_naf_codes_come_from_the_inputs(day):
    codes = {c[0] for c in FALLBACK_COMMUNES}
    seen = Counter(r["adresseEtablissement"]["codeCommuneEtablissement"] for r in day)
    assert set(seen) - {None} <= codes
    assert any(code.startswith("751") for code in seen if code)
    assert any(code.startswith("132") for code in seen if code)
    assert any(code.startswith("6938") for code in seen if code)
    assert seen[None] > 0  # a few records without commune code
    pairs = {(c[0], c[1]) for c in FALLBACK_COMMUNES}
    for record in day:
        address = record["adresseEtablissement"]
        if address["codeCommuneEtablissement"] and record["statutDiffusionEtablissement"] == "O":
            pair = (address["codeCommuneEtablissement"], address["codePostalEtablissement"])
            assert pair in pairs

    naf = Counter(current(r)["activitePrincipaleEtablissement"] for r in day)
    assert set(naf) <= set(FALLBACK_NAF_CODES) | set(NAF_REV1_CODES) | {"53.10Z"}
    top_share = naf.most_common(1)[0][1] / len(day)
    assert 0.05 < top_share < 0.2  # skewed, but not one trade everywhere
    assert len(naf) > 30


def test_custom_communes_are_used():
    communes = [
        ("69381", "69001", "Lyon 1er Arrondissement"),
        ("01004", "01500", "Ambérieu-en-Bugey"),
    ]
    records = generate_day(DAY, communes, ["56.10A", "43.21A"], n=500)
    labels = {r["adresseEtablissement"]["libelleCommuneEtablissement"] for r in records}
    assert labels <= {"LYON 1ER", "AMBERIEU-EN-BUGEY", None}


def test_old_nomenclature_and_naf25(day):
    nomenclature = "nomenclatureActivitePrincipaleEtablissement"
    rev1 = [r for r in day if current(r)[nomenclature] == "NAFRev1"]
    assert rev1
    assert all(current(r)["activitePrincipaleEtablissement"] in NAF_REV1_CODES for r in rev1)
    assert all(current(r)["etatAdministratifEtablissement"] == "F" for r in rev1)
    assert all(r["activitePrincipaleNAF25Etablissement"] is None for r in day)

    naf25 = correspondents()
    with_naf25 = generate_day(DAY, naf25=naf25, n=2000)
    for record in with_naf25:
        period = current(record)
        code = record["activitePrincipaleNAF25Etablissement"]
        if period[nomenclature] == "NAFRev2":
            # Every rév. 2 record carries one of the codes INSEE pairs with its rév. 2 code.
            assert code in naf25[period["activitePrincipaleEtablissement"]]
        else:
            assert code is None
    # An establishment keeps its NAF 2025 code from one day to the next.
    next_day = {r["siret"]: r for r in generate_day(DAY + timedelta(days=1), naf25=naf25, n=2000)}
    same = [
        (r["activitePrincipaleNAF25Etablissement"], next_day[r["siret"]]["activitePrincipaleNAF25Etablissement"])
        for r in with_naf25
        if r["siret"] in next_day
        and current(r)["activitePrincipaleEtablissement"]
        == current(next_day[r["siret"]])["activitePrincipaleEtablissement"]
    ]
    assert same and all(a == b for a, b in same)


def test_from_the_switch_the_sample_states_naf2025():
    naf25 = correspondents()
    before = generate_day(DAY, naf25=naf25, n=500, naf2025_from=DAY + timedelta(days=1))
    after = generate_day(DAY, naf25=naf25, n=500, naf2025_from=DAY)
    assert [r["siret"] for r in before] == [r["siret"] for r in after]
    nomenclature = "nomenclatureActivitePrincipaleEtablissement"
    assert {current(r)[nomenclature] for r in before} == {"NAFRev2", "NAFRev1"}
    assert {current(r)[nomenclature] for r in after} == {"NAF2025", "NAFRev1"}
    for old, new in zip(before, after, strict=True):
        if current(old)[nomenclature] == "NAFRev2":
            assert current(new)["activitePrincipaleEtablissement"] == old["activitePrincipaleNAF25Etablissement"]
            assert new["activitePrincipaleNAF25Etablissement"] == old["activitePrincipaleNAF25Etablissement"]
    # The switch helper gives the same shape from records landed before the switch.
    switched = switch_to_naf2025(before, DAY + timedelta(days=40))
    assert [current(r)["activitePrincipaleEtablissement"] for r in switched] == [
        current(r)["activitePrincipaleEtablissement"] for r in after
    ]
    assert {r["dateDernierTraitementEtablissement"][:10] for r in switched} == {
        (DAY + timedelta(days=40)).isoformat()
    }


def test_street_types_mix_abbreviations_and_labels_and_optional_fields_are_null(day):
    types = Counter(r["adresseEtablissement"]["typeVoieEtablissement"] for r in day)
    old_abbreviations = {"AV", "BD", "PL", "RTE", "CHE", "IMP", "ALL", "QUA", "RES", "SQ"}
    assert old_abbreviations | {"AVENUE", "PLACE", "ROUTE"} <= set(types)
    numbers = [r["adresseEtablissement"]["numeroVoieEtablissement"] for r in day]
    assert 0.1 < numbers.count(None) / len(numbers) < 0.3
    tranches = [r["trancheEffectifsEtablissement"] for r in day]
    assert tranches.count(None) > 0
    assert any(r["adresseEtablissement"]["codePaysEtrangerEtablissement"] for r in day)
