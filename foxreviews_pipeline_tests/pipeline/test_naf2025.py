"""NAF 2025 through Dagster on a real PostgreSQL: from 2027-01-01 INSEE states activities in
NAF 2025, and every business keeps its trade and its pages.

Each test publishes a 2,000-record sample day whose records carry both codes, learns the
NAF 2025 mapping from them (`trade_taxonomy`), then lands hand-made days.
"""

from __future__ import annotations

import copy
from datetime import date

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.reference.assets import trade_taxonomy
from foxreviews_pipeline.lib.reference.naf2025 import EVIDENCE_MIN_SHARE, decide
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.landing import write_partition
from foxreviews_pipeline.sample.day import switch_to_naf2025

from .test_daily_pipeline import CHAIN, DAY1, DAY2, materialization_metadata, pipeline

__all__ = ["pipeline"]  # the fixture, re-used

DAY3 = "2026-11-21"
NOMENCLATURE = "nomenclatureActivitePrincipaleEtablissement"


def _land(pipeline, day: str, records: list[dict]) -> None:
    write_partition(pipeline.landing, date.fromisoformat(day), records, {"source": "test"})


def _learn(pipeline) -> dict:
    result = dg.materialize([trade_taxonomy], resources=pipeline.resources)
    assert result.success
    return materialization_metadata(result)["trade_taxonomy"]


def _active_pages(url: str) -> set[tuple[str, int, int]]:
    with psycopg.connect(url) as conn:
        return set(
            conn.execute(
                "SELECT e.siret, p.sous_categorie_id, p.ville_id FROM enterprise_prolocalisation p "
                "JOIN enterprise_entreprise e ON e.id = p.entreprise_id WHERE p.is_active"
            ).fetchall()
        )


def _pages_of(url: str, siret: str) -> list[tuple[int, bool, str | None]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT p.sous_categorie_id, p.is_active, p.deactivation_reason "
            "FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
            "WHERE e.siret = %s ORDER BY p.id",
            (siret,),
        ).fetchall()


def _one(url: str, query: str, params: tuple = ()) -> tuple:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row


def _new_record(pipeline, n: int, day: str, *, activity: str, nomenclature: str, naf25: str | None) -> dict:
    """A new establishment, at the address and town of a published day-one record."""
    siret = _one(
        pipeline.url,
        "SELECT e.siret FROM enterprise_prolocalisation p JOIN enterprise_entreprise e "
        "ON e.id = p.entreprise_id WHERE p.is_active AND e.statut_diffusion = 'O' "
        "ORDER BY e.siret LIMIT 1",
    )[0]
    record = copy.deepcopy(pipeline.records(DAY1)[siret])
    siren = f"8{n:07d}"
    siren += luhn_check_digit(siren)
    record["siren"] = siren
    record["siret"] = siren + "0001" + luhn_check_digit(siren + "0001")
    record["nic"] = record["siret"][9:]
    period = record["periodesEtablissement"][0]
    period["activitePrincipaleEtablissement"] = activity
    period[NOMENCLATURE] = nomenclature
    period["etatAdministratifEtablissement"] = "A"
    record["activitePrincipaleNAF25Etablissement"] = naf25
    record["dateDernierTraitementEtablissement"] = f"{day}T04:00:00.000"
    return record


@pytest.fixture
def published(pipeline):
    """Day one published, its NAF 2025 evidence learned."""
    pipeline.run(CHAIN, DAY1)
    coverage = _learn(pipeline)
    return pipeline, coverage


# -- the switch ---------------------------------------------------------------------------


def test_a_switch_alone_keeps_every_page_and_the_day_is_published(pipeline):
    # Day one as INSEE sends it through 2026; a third of the records carry no NAF 2025 code
    # (as older records may not): their switch is recognised through the correspondence.
    pipeline.run(CHAIN[:1], DAY1)
    records = list(pipeline.records(DAY1).values())
    for record in records[::3]:
        record["naf25_kept"] = record["activitePrincipaleNAF25Etablissement"]
        record["activitePrincipaleNAF25Etablissement"] = None
    landed = [{k: v for k, v in r.items() if k != "naf25_kept"} for r in records]
    _land(pipeline, DAY1, landed)
    result, _ = pipeline.run([directory_day], DAY1)
    assert result.success
    _learn(pipeline)
    before = _active_pages(pipeline.url)
    assert len(before) > 500

    # The same records the next day, their activity switched to NAF 2025 and nothing else.
    for record in records[::3]:
        record["activitePrincipaleNAF25Etablissement"] = record.pop("naf25_kept")
    switched = switch_to_naf2025(records, date.fromisoformat(DAY2))
    stated = [r for r in switched if r["periodesEtablissement"][0][NOMENCLATURE] == "NAF2025"]
    assert len(stated) > 0.8 * len(switched)
    _land(pipeline, DAY2, switched)
    result, found = pipeline.run([directory_day], DAY2)

    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    assert _active_pages(pipeline.url) == before
    pl = found["pro_localisations"]
    assert (pl["created"], pl["deactivated"], pl["reactivated"]) == (0, 0, 0)
    naf2025 = pl["naf2025"]
    assert naf2025["stated_naf2025"] > 0
    assert naf2025["kept_rev2_trade"] == naf2025["stated_naf2025"]
    assert naf2025["naf2025_unmapped"] == 0
    stored = _one(
        pipeline.url,
        "SELECT count(*) FILTER (WHERE naf_nomenclature = 'NAF2025'), "
        "count(*) FILTER (WHERE naf_nomenclature = 'NAF2025' AND naf_rev2_code IS NOT NULL) "
        "FROM enterprise_entreprise",
    )
    assert stored[0] == len({r["siret"] for r in stated}) and stored[1] == stored[0]

    # Re-running the switch day changes nothing.
    result, again = pipeline.run([directory_day], DAY2)
    assert result.success and again["entreprises"]["updated"] == 0
    assert _active_pages(pipeline.url) == before


def test_a_day_of_truly_unknown_codes_is_still_held_back(published):
    pipeline, _ = published
    before = _active_pages(pipeline.url)
    records = switch_to_naf2025(list(pipeline.records(DAY1).values()), date.fromisoformat(DAY2))
    for record in records:
        record["periodesEtablissement"][0]["activitePrincipaleEtablissement"] = "00.00X"
        record["periodesEtablissement"][0][NOMENCLATURE] = "NAF2025"
        record["activitePrincipaleNAF25Etablissement"] = None
    _land(pipeline, DAY2, records)
    result, found = pipeline.run([directory_day], DAY2, raise_on_error=False)
    assert not result.success and found == {}
    failed = {e.check_name: e for e in result.get_asset_check_evaluations() if not e.passed}
    assert set(failed) == {"trades_resolved"}
    reasons = failed["trades_resolved"].metadata["unmatched_by_reason"].value
    assert reasons["naf_code_unknown"] > 1000
    assert _active_pages(pipeline.url) == before


# -- establishments created after the switch ----------------------------------------------


def test_a_new_establishment_whose_code_has_evidence_gets_its_trade(published):
    pipeline, coverage = published
    assert coverage["naf2025_from_evidence"] > 0
    code, trade = _one(
        pipeline.url,
        "SELECT naf_code, sous_categorie_id FROM ref_naf_mapping WHERE nomenclature = 'NAF2025' "
        "AND basis = 'evidence' AND sous_categorie_id IS NOT NULL ORDER BY naf_code LIMIT 1",
    )
    record = _new_record(pipeline, 1, DAY2, activity=code, nomenclature="NAF2025", naf25=None)
    _land(pipeline, DAY2, [record])
    result, found = pipeline.run([directory_day], DAY2)
    assert result.success
    assert _pages_of(pipeline.url, record["siret"]) == [(trade, True, None)]
    assert found["pro_localisations"]["naf2025"]["mapped_naf2025"] == 1


def test_a_new_establishment_whose_code_has_no_mapping_waits_then_is_published(published):
    pipeline, _ = published
    # A code nobody in the directory carries yet, which INSEE pairs with several rév. 2
    # codes that map different ways: nothing decides it.
    code = _one(
        pipeline.url,
        "SELECT naf_code FROM ref_naf_review WHERE nomenclature = 'NAF2025' AND establishments = 0 "
        "AND reason = 'no evidence; correspondence splits' ORDER BY naf_code LIMIT 1",
    )[0]
    waiting = _new_record(pipeline, 2, DAY2, activity=code, nomenclature="NAF2025", naf25=code)
    _land(pipeline, DAY2, [waiting])
    result, found = pipeline.run([directory_day], DAY2)
    assert result.success  # held as unmatched: the day itself is published
    assert _pages_of(pipeline.url, waiting["siret"]) == []
    pl = found["pro_localisations"]
    assert pl["unmatched_by_reason"] == {"naf2025_unmapped": 1}
    assert pl["naf2025"]["naf2025_unmapped"] == 1

    # The evidence grows: an establishment still coded in rév. 2, with a rév. 2 code that
    # maps to a trade, is given that NAF 2025 code by INSEE.
    rev2, trade = _one(
        pipeline.url,
        "SELECT naf_code, sous_categorie_id FROM ref_naf_mapping WHERE nomenclature = 'NAFRev2' "
        "AND sous_categorie_id IS NOT NULL ORDER BY naf_code LIMIT 1",
    )
    witness = _new_record(pipeline, 3, DAY3, activity=rev2, nomenclature="NAFRev2", naf25=code)
    _land(pipeline, DAY3, [witness])
    assert pipeline.run([directory_day], DAY3)[0].success

    coverage = _learn(pipeline)
    assert _one(
        pipeline.url,
        "SELECT sous_categorie_id, basis FROM ref_naf_mapping WHERE nomenclature = 'NAF2025' AND naf_code = %s",
        (code,),
    ) == (trade, "evidence")
    assert coverage["naf2025_prolocalisations_created"] == 1
    assert _pages_of(pipeline.url, waiting["siret"]) == [(trade, True, None)]


# -- rév. 2 and NAF 2025 disagree ---------------------------------------------------------


def test_when_rev2_and_naf2025_point_to_different_trades_the_current_trade_is_kept(published):
    pipeline, _ = published
    naf25, trade_2025 = _one(
        pipeline.url,
        "SELECT naf_code, sous_categorie_id FROM ref_naf_mapping WHERE nomenclature = 'NAF2025' "
        "AND sous_categorie_id IS NOT NULL ORDER BY naf_code LIMIT 1",
    )
    rev2, trade = _one(
        pipeline.url,
        "SELECT naf_code, sous_categorie_id FROM ref_naf_mapping WHERE nomenclature = 'NAFRev2' "
        "AND sous_categorie_id IS NOT NULL AND sous_categorie_id <> %s ORDER BY naf_code LIMIT 1",
        (trade_2025,),
    )
    record = _new_record(pipeline, 4, DAY2, activity=rev2, nomenclature="NAFRev2", naf25=naf25)
    _land(pipeline, DAY2, [record])
    result, found = pipeline.run([directory_day], DAY2)
    assert result.success
    assert _pages_of(pipeline.url, record["siret"]) == [(trade, True, None)]
    assert found["pro_localisations"]["naf2025"]["trades_differ"] == 1

    # After the switch, the same establishment keeps that trade, and the case is counted.
    [switched] = switch_to_naf2025([record], date.fromisoformat(DAY3))
    _land(pipeline, DAY3, [switched])
    result, found = pipeline.run([directory_day], DAY3)
    assert result.success
    assert _pages_of(pipeline.url, record["siret"]) == [(trade, True, None)]
    naf2025 = found["pro_localisations"]["naf2025"]
    assert (naf2025["kept_rev2_trade"], naf2025["trades_differ"]) == (1, 1)


# -- the taxonomy's coverage --------------------------------------------------------------


def test_the_taxonomy_asset_shows_the_naf2025_coverage(published):
    pipeline, coverage = published
    assert coverage["naf2025_codes"] == 747
    assert coverage["naf2025_mapped"] == (
        coverage["naf2025_reviewed"] + coverage["naf2025_from_evidence"] + coverage["naf2025_from_correspondence"]
    )
    assert coverage["naf2025_mapped"] + coverage["naf2025_to_review"] >= 747
    assert coverage["naf2025_establishments"] > 1500
    covered = coverage["naf2025_establishments_covered"]
    assert 0.5 < covered / coverage["naf2025_establishments"] < 1.0  # some codes split
    assert coverage["naf2025_establishments_share"] == round(covered / coverage["naf2025_establishments"], 4)
    assert "codes to review" in coverage["naf2025_to_review_top"]
    review = coverage["naf2025_review_file"]
    with open(review, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("nomenclature,naf_code,libelle,sous_categorie,excluded_reason,establishments")
    assert len(lines) == coverage["naf2025_to_review"] + 1
    # Learning again from the same directory changes nothing.
    again = _learn(pipeline)
    assert {k: v for k, v in again.items() if k.startswith("naf2025_")} == {
        k: v for k, v in coverage.items() if k.startswith("naf2025_")
    }


# -- the rules, without a database ---------------------------------------------------------

PLOMBIER, ELECTRICIEN = ("trade", "plombier"), ("trade", "electricien")
HOLDING = ("excluded", "holding")


def test_decide_follows_evidence_then_correspondence_and_leaves_splits_to_review():
    evidence = {
        "43.22Y": {PLOMBIER: 120},
        "43.21Y": {ELECTRICIEN: 99, PLOMBIER: 1},  # a stray record does not split a code
        "43.29Y": {ELECTRICIEN: 60, PLOMBIER: 40},
        "64.21Y": {HOLDING: 5},
        "43.99Y": {PLOMBIER: 10},
    }
    correspondence = {
        "43.22Y": {PLOMBIER, ELECTRICIEN},
        "43.34Y": {ELECTRICIEN},
        "43.35Y": {ELECTRICIEN, PLOMBIER},
        "43.99Y": {ELECTRICIEN},
    }
    codes = ["43.21Y", "43.22Y", "43.29Y", "43.34Y", "43.35Y", "43.36Y", "43.99Y", "64.21Y", "01.11Y"]
    found = {d.code: d for d in decide(codes, evidence, correspondence, reviewed=["01.11Y"])}
    assert "01.11Y" not in found
    assert (found["43.22Y"].outcome, found["43.22Y"].basis) == (PLOMBIER, "evidence")
    assert 0.99 >= EVIDENCE_MIN_SHARE and found["43.21Y"].outcome == ELECTRICIEN
    assert found["43.29Y"].outcome is None and found["43.29Y"].evidence == {"electricien": 60, "plombier": 40}
    assert found["43.29Y"].reason == "evidence splits" and found["43.29Y"].establishments == 100
    assert (found["64.21Y"].outcome, found["64.21Y"].evidence) == (HOLDING, {"excluded: holding": 5})
    assert (found["43.34Y"].outcome, found["43.34Y"].basis) == (ELECTRICIEN, "correspondence")
    assert found["43.35Y"].outcome is None and found["43.35Y"].reason == "no evidence; correspondence splits"
    assert found["43.36Y"].outcome is None and found["43.36Y"].reason == "no evidence; no correspondence"
    assert found["43.99Y"].outcome is None and found["43.99Y"].reason == "evidence and correspondence disagree"
