"""Staff uploads obey INSEE's diffusion policy like SIRENE records do."""

from __future__ import annotations

from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, UploadEnv


def test_an_upload_never_names_an_establishment_insee_does_not_diffuse(env: UploadEnv):
    # SIRENE stored A as non-diffusible (no name, no page) and B as diffusible.
    env.query(
        "INSERT INTO enterprise_entreprise (siret, siren, nom, statut_diffusion, code_commune, source) "
        "VALUES (%s, %s, NULL, 'N', '69123', 'sirene'), (%s, %s, 'PLOMBERIE EMILE', 'O', '69123', 'sirene')",
        (SIRET_A, SIRET_A[:9], SIRET_B, SIRET_B[:9]),
    )
    env.drop(
        "entreprises.csv",
        "siret,nom,adresse,code_postal,telephone\n"
        f"{SIRET_A},Claire MARTIN,12 rue des Lilas,69001,0472000000\n"
        f"{SIRET_B},PLOMBERIE ÉMILE ET FILS,3 rue de la Paix,69002,0472000001\n",
    )
    _, outcome = env.process("entreprises.csv")
    log = env.log(outcome.log_id)
    assert log["status"] == "SUCCESS"
    rows = env.query(
        "SELECT siret, nom, adresse, code_postal, telephone FROM enterprise_entreprise ORDER BY siret"
    )
    by_siret = {r[0]: r[1:] for r in rows}
    # The web app's own contact column is written; the person's name and address are not.
    assert by_siret[SIRET_A] == (None, None, None, "0472000000")
    assert by_siret[SIRET_B] == ("PLOMBERIE ÉMILE ET FILS", "3 rue de la Paix", "69002", "0472000001")
    assert outcome.written.get("personal_fields_withheld") == 1
    pages = env.query(
        "SELECT count(*) FROM enterprise_prolocalisation p JOIN enterprise_entreprise e "
        "ON e.id = p.entreprise_id WHERE e.siret = %s AND p.is_active",
        (SIRET_A,),
    )
    assert pages == [(0,)]


def test_an_upload_that_fails_a_blocking_check_writes_nothing_and_ends_error(env: UploadEnv, monkeypatch):
    from foxreviews_pipeline.lib.uploads import write as write_module

    env.query(
        "INSERT INTO enterprise_entreprise (siret, siren, nom, statut_diffusion, code_commune, source) "
        "VALUES (%s, %s, NULL, 'N', '69123', 'sirene')",
        (SIRET_A, SIRET_A[:9]),
    )
    before = env.query("SELECT e::text, xmin::text FROM enterprise_entreprise e ORDER BY id")
    # A writer bug: the diffusion rule forgotten. The audit must catch it before commit.
    monkeypatch.setattr(write_module, "_withhold_personal_fields", lambda *args: 0)
    env.drop(
        "entreprises.csv",
        "siret,nom\n"
        f"{SIRET_A},Claire MARTIN\n"
        f"{SIRET_B},PLOMBERIE EMILE\n",
    )
    _, outcome = env.process("entreprises.csv")
    log = env.log(outcome.log_id)
    assert (log["status"], log["success_rows"]) == ("ERROR", 0)
    assert log["errors"][0]["code"] == "held_back"
    assert "diffusion_policy" in log["errors"][0]["reason"]
    assert log["stored_path"].startswith("rejected/")
    assert env.query("SELECT e::text, xmin::text FROM enterprise_entreprise e ORDER BY id") == before
    assert env.query("SELECT count(*) FROM enterprise_prolocalisation") == [(0,)]
