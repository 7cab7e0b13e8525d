"""Write–audit–publish and the diffusion policy, through Dagster on a real PostgreSQL.

A day (or a stock batch) whose blocking checks fail must leave both published tables
exactly as they were; establishments whose people opted out of publication must never get
a page, whether they come from the API or from a stock file.
"""

from __future__ import annotations

import copy
from datetime import date

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.lib.directory import stock_load as stock_module
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.landing import write_partition
from foxreviews_pipeline.sample.stock_files import api_record_to_stock_row, write_sample_stock
from foxreviews_pipeline_tests.pipeline import stock_runs

from .test_daily_pipeline import CHAIN, DAY1, DAY2, pipeline, table_state

__all__ = ["pipeline"]  # the fixture, re-used


def _failed_checks(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {
        e.check_name: {k: v.value for k, v in e.metadata.items()}
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.event_specific_data.error.message
        for e in result.all_events
        if e.is_step_failure and e.event_specific_data and e.event_specific_data.error
    )


def _land(pipeline, day: str, records: list[dict]) -> None:
    write_partition(pipeline.landing, date.fromisoformat(day), records, {"source": "test"})


# -- a day held back ------------------------------------------------------------------------


def test_a_day_whose_communes_are_all_unknown_is_held_back_then_published_once_fixed(pipeline):
    pipeline.run(CHAIN, DAY1)
    before = table_state(pipeline.url)
    pipeline.run([etablissements_raw], DAY2)
    good = list(pipeline.records(DAY2).values())
    broken = copy.deepcopy(good)
    for record in broken:
        record["adresseEtablissement"]["codeCommuneEtablissement"] = "00000"
    _land(pipeline, DAY2, broken)

    result, found = pipeline.run([directory_day], DAY2, raise_on_error=False)
    assert not result.success
    assert "villes_resolved" in _failure_message(result)
    failed = _failed_checks(result)
    assert set(failed) == {"villes_resolved"}
    assert failed["villes_resolved"]["offending"] > 1000
    sample = failed["villes_resolved"]["sample"]
    assert 0 < len(sample) <= 20 and {s["code_commune"] for s in sample} == {"00000"}
    # Nothing published: no materialization, and both tables byte for byte as before.
    assert found == {}
    assert table_state(pipeline.url) == before

    _land(pipeline, DAY2, good)  # the cause fixed: re-running the partition publishes it
    result, found = pipeline.run([directory_day], DAY2)
    assert result.success and found["entreprises"]["inserted"] > 0
    assert table_state(pipeline.url) != before


def test_a_day_with_too_many_invalid_sirets_is_held_back(pipeline):
    pipeline.run(CHAIN, DAY1)
    before = table_state(pipeline.url)
    pipeline.run([etablissements_raw], DAY2)
    records = list(pipeline.records(DAY2).values())
    for record in records[: len(records) // 20]:  # 5 % corrupt: a broken extract
        siret = record["siret"]
        record["siret"] = siret[:-1] + str((int(siret[-1]) + 1) % 10)
    _land(pipeline, DAY2, records)

    result, found = pipeline.run([directory_day], DAY2, raise_on_error=False)
    assert not result.success
    assert "valid_identifiers" in _failure_message(result)
    failed = _failed_checks(result)
    assert set(failed) == {"valid_identifiers"}
    assert failed["valid_identifiers"]["invalid_rejected"] >= len(records) // 20 - 5
    assert len(failed["valid_identifiers"]["sample"]) == 20
    assert found == {} and table_state(pipeline.url) == before


# -- the diffusion policy -------------------------------------------------------------------


def _new_siret(n: int) -> tuple[str, str]:
    siren = f"9{n:07d}"
    siren += luhn_check_digit(siren)
    siret = siren + "0001"
    return siren, siret + luhn_check_digit(siret)


def _published_template(pipeline) -> dict:
    """A day-one record that got an active ProLocalisation (its NAF and commune resolve)."""
    with psycopg.connect(pipeline.url) as conn:
        siret = conn.execute(
            "SELECT e.siret FROM enterprise_prolocalisation p "
            "JOIN enterprise_entreprise e ON e.id = p.entreprise_id "
            "WHERE p.is_active AND e.statut_diffusion = 'O' AND e.adresse IS NOT NULL "
            "ORDER BY e.siret LIMIT 1"
        ).fetchone()[0]
    return pipeline.records(DAY1)[siret]


def _variants(template: dict) -> dict[str, dict]:
    """One record per diffusion case, all with the template's (resolving) NAF and commune."""
    def variant(n: int, status: str, **unite_legale) -> dict:
        record = copy.deepcopy(template)
        record["siren"], record["siret"] = _new_siret(n)
        record["nic"] = record["siret"][9:]
        record["statutDiffusionEtablissement"] = status
        record["dateDernierTraitementEtablissement"] = f"{DAY2}T04:00:00.000"
        ul = dict.fromkeys(record["uniteLegale"])
        ul.update(unite_legale)
        record["uniteLegale"] = ul
        address = record["adresseEtablissement"]
        address.update(numeroVoieEtablissement="12", typeVoieEtablissement="RUE",
                       libelleVoieEtablissement="DES LILAS", codePostalEtablissement=address["codePostalEtablissement"])
        record["periodesEtablissement"][0]["enseigne1Etablissement"] = "CHEZ NOUS"
        return record

    masked = variant(2, "P", nomUniteLegale="[ND]", prenom1UniteLegale="[ND]",
                     categorieJuridiqueUniteLegale="1000")
    masked["adresseEtablissement"].update(numeroVoieEtablissement="[ND]", codePostalEtablissement="[ND]",
                                          libelleVoieEtablissement="[ND]")
    masked["periodesEtablissement"][0]["enseigne1Etablissement"] = "[ND]"
    return {
        "O": variant(1, "O", denominationUniteLegale="DIFFUSIBLE SARL"),
        "P_person_masked": masked,
        "P_company": variant(3, "P", denominationUniteLegale="SOCIETE PARTIELLE SAS"),
        "N": variant(4, "N", nomUniteLegale="MARTIN", prenom1UniteLegale="CLAIRE",
                     categorieJuridiqueUniteLegale="1000"),
        "N_company": variant(5, "N", denominationUniteLegale="NON DIFFUSIBLE SA"),
    }


def _stored(url: str, sirets: dict[str, str]) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT e.siret, e.statut_diffusion, e.nom, e.nom_commercial, e.adresse, e.code_postal,
                   e.code_commune, e.naf_code IS NOT NULL,
                   count(p.id) FILTER (WHERE p.is_active)
            FROM enterprise_entreprise e
            LEFT JOIN enterprise_prolocalisation p ON p.entreprise_id = e.id
            WHERE e.siret = ANY(%s) GROUP BY e.id
            """,
            (list(sirets.values()),),
        ).fetchall()
    by_siret = {r[0]: r[1:] for r in rows}
    return {case: by_siret.get(siret) for case, siret in sirets.items()}


def _assert_policy(stored: dict[str, tuple], commune: str) -> None:
    # (statut, nom, nom_commercial, adresse, code_postal, code_commune, has NAF, active pages)
    assert stored["O"][:3] == ("O", "DIFFUSIBLE SARL", "CHEZ NOUS")
    assert stored["O"][3] is not None and stored["O"][-1] == 1
    assert stored["P_person_masked"][:5] == ("P", None, None, None, None)
    assert stored["P_person_masked"][-1] == 0  # a masked person is never published
    assert stored["P_company"][1] == "SOCIETE PARTIELLE SAS" and stored["P_company"][-1] == 1
    for case in ("N", "N_company"):
        statut, nom, nom_commercial, adresse, code_postal, code_commune, naf, pages = stored[case]
        assert (statut, nom, nom_commercial, adresse, code_postal) == ("N", None, None, None, None)
        assert code_commune == commune and naf  # identifiers, activity and commune are kept
        assert pages == 0


def test_each_diffusion_status_from_the_api_shape(pipeline):
    pipeline.run(CHAIN, DAY1)
    template = _published_template(pipeline)
    variants = _variants(template)
    # And an establishment published on day one whose person opts out on day two.
    opted_out = copy.deepcopy(template)
    opted_out["statutDiffusionEtablissement"] = "N"
    opted_out["dateDernierTraitementEtablissement"] = f"{DAY2}T05:00:00.000"
    _land(pipeline, DAY2, [*variants.values(), opted_out])

    result, found = pipeline.run([directory_day], DAY2)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    _assert_policy(
        _stored(pipeline.url, {k: v["siret"] for k, v in variants.items()}),
        template["adresseEtablissement"]["codeCommuneEtablissement"],
    )
    assert found["pro_localisations"]["deactivated_by_reason"] == {"not_diffusible": 1}
    with psycopg.connect(pipeline.url) as conn:
        row = conn.execute(
            "SELECT e.nom, e.nom_commercial, e.adresse, e.code_postal, p.is_active, p.deactivation_reason "
            "FROM enterprise_entreprise e JOIN enterprise_prolocalisation p ON p.entreprise_id = e.id "
            "WHERE e.siret = %s",
            (template["siret"],),
        ).fetchone()
    assert row == (None, None, None, None, False, "not_diffusible")


def test_each_diffusion_status_from_a_stock_file(pipeline, tmp_path):
    pipeline.run(CHAIN, DAY1)
    template = _published_template(pipeline)
    variants = _variants(template)
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, [api_record_to_stock_row(r) for r in variants.values()], unites_legales_path=ul)
    home = tmp_path / "home"
    assert stock_runs.stage(pipeline.url, home, path, ul).success
    assert all(r.success for r in stock_runs.load_all(pipeline.url, home).values())
    _assert_policy(
        _stored(pipeline.url, {k: v["siret"] for k, v in variants.items()}),
        template["adresseEtablissement"]["codeCommuneEtablissement"],
    )


def test_a_stock_batch_that_would_publish_a_person_is_held_back(pipeline, tmp_path, monkeypatch):
    pipeline.run(CHAIN, DAY1)
    variants = _variants(_published_template(pipeline))
    before = table_state(pipeline.url)
    real_sync = stock_module.sync_prolocalisations

    def leaking_sync(conn, sirets, **kwargs):
        # A writer bug: a non-diffusible person's name written back after the mapping.
        conn.execute(
            "UPDATE enterprise_entreprise SET nom = 'Claire MARTIN' "
            "WHERE statut_diffusion = 'N' AND siret = ANY(%s)",
            (list(sirets),),
        )
        return real_sync(conn, sirets, **kwargs)

    monkeypatch.setattr(stock_module, "sync_prolocalisations", leaking_sync)
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, [api_record_to_stock_row(r) for r in variants.values()], unites_legales_path=ul)
    home = tmp_path / "home"
    assert stock_runs.stage(pipeline.url, home, path, ul).success
    (partition,) = stock_runs.staged_partitions(pipeline.url)
    result = stock_runs.load(pipeline.url, home, partition, raise_on_error=False)
    assert not result.success
    assert "diffusion_policy" in _failure_message(result)
    assert table_state(pipeline.url) == before


@pytest.mark.parametrize("status", ["N", "X", None])
def test_a_published_day_never_shows_a_non_diffusible_person(pipeline, status):
    """Whatever the non-O status (N, an unknown code, missing), no name and no page."""
    pipeline.run(CHAIN, DAY1)
    record = copy.deepcopy(_variants(_published_template(pipeline))["N"])
    record["statutDiffusionEtablissement"] = status
    _land(pipeline, DAY2, [record])
    result, _ = pipeline.run([directory_day], DAY2)
    assert result.success
    stored = _stored(pipeline.url, {"x": record["siret"]})["x"]
    assert stored[1:5] == (None, None, None, None) and stored[-1] == 0
