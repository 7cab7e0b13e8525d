"""Values the web app publishes: web addresses are http(s) only, e-mail addresses are one
plain address, and free text never starts like a spreadsheet formula. Bad values are row
errors; the good rows of the same file are imported."""

from __future__ import annotations

import pytest

from foxreviews_pipeline.lib.uploads.validate import Invalid, v_email, v_url
from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, SIRET_C, UploadEnv

SIRETS = ["73282932000074", "55203253400646", "44306184100047", "35600000000048"]


@pytest.mark.parametrize(
    "value",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "ftp://files.example.fr/",
        "https://user@evil.example/",
        'https://boulangerie.fr/"onmouseover="alert(1)',
        "https://boulangerie.fr/<script>",
        "http://localhost/",
    ],
)
def test_site_web_other_than_http_or_https_is_refused(value: str):
    with pytest.raises(Invalid):
        v_url(value)


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("https://www.boulangerie-martin.fr/", "https://www.boulangerie-martin.fr/"),
        ("http://boulangerie-martin.fr/contact?x=1", "http://boulangerie-martin.fr/contact?x=1"),
        ("www.boulangerie-martin.fr", "https://www.boulangerie-martin.fr"),
        ("boulangerie-martin.fr:8080/menu", "https://boulangerie-martin.fr:8080/menu"),
        # Internationalised hosts are stored as IDNA, path and port kept.
        ("https://école-martin.fr/menu", "https://xn--cole-martin-99a.fr/menu"),
        ("пример.рф:8443/a", "https://xn--e1afmkfd.xn--p1ai:8443/a"),
        ("https://ラーメン屋.jp/", "https://xn--4dkp5a8a7137b.jp/"),
    ],
)
def test_site_web_keeps_web_addresses(value: str, stored: str):
    assert v_url(value) == stored


@pytest.mark.parametrize(
    "value",
    [
        "https://\u0435xample.fr",  # a Cyrillic e, then Latin letters
        "https://boulangeri\u0435-martin.fr/",
        "https://p\u0430ypal.com",  # a Cyrillic a
    ],
)
def test_site_web_look_alike_hosts_are_refused(value: str):
    with pytest.raises(Invalid, match="mixes scripts"):
        v_url(value)


@pytest.mark.parametrize(
    "value",
    [
        "<script>alert(1)</script>@example.fr",
        "contact@martin.fr, compta@martin.fr",
        "contact@martin.fr;compta@martin.fr",
        "Boulangerie Martin <contact@martin.fr>",
        '"<b>x</b>"@martin.fr',
        "contact@martin",
        "contact@@martin.fr",
    ],
)
def test_email_contact_must_be_one_plain_address(value: str):
    with pytest.raises(Invalid):
        v_email(value)


def test_email_contact_accepts_plain_addresses():
    assert v_email("contact@boulangerie-martin.fr") == "contact@boulangerie-martin.fr"
    assert v_email("jean.dupont+devis@Plomberie-Dupont.FR") == (
        "jean.dupont+devis@plomberie-dupont.fr"
    )


def test_unsafe_values_are_row_errors_and_the_good_rows_import(env: UploadEnv):
    env.drop(
        "entreprises.csv",
        "siret,nom,telephone,email_contact,site_web,adresse\n"
        f"{SIRET_A},BOULANGERIE MARTIN,+33 4 72 00 00 00,contact@martin.fr,www.martin.fr,1 rue X\n"
        f"{SIRET_B},PLOMBERIE DUPONT,,,javascript:alert(1),\n"
        f"{SIRET_C},INFORMATIQUE SA,,<b>x</b>@info.fr,,\n"
        f'{SIRETS[3]},"=HYPERLINK(""http://evil.example"",""ok"")",,,,\n',
    )
    _, outcome = env.process("entreprises.csv")

    assert outcome.status == "PARTIAL"
    errors = [(e.row, e.column, e.code) for e in outcome.errors]
    assert errors == [
        (3, "site_web", "invalid_value"),
        (4, "email_contact", "invalid_value"),
        (5, "nom", "formula"),
    ]
    assert outcome.errors[0].reason == (
        "site_web must be an http:// or https:// address, got 'javascript:alert(1)'"
    )
    assert outcome.errors[2].reason == (
        "nom starts with '=': a spreadsheet would run it as a formula (remove that first character)"
    )
    assert env.query(
        "SELECT siret, telephone, email_contact, site_web FROM enterprise_entreprise"
    ) == [(SIRET_A, "+33 4 72 00 00 00", "contact@martin.fr", "https://www.martin.fr")]


@pytest.mark.parametrize("start", ["=", "+", "-", "@"])
def test_free_text_starting_like_a_formula_is_a_row_error(env: UploadEnv, start: str):
    env.drop(
        "sous_categories.csv",
        "nom,categorie,description,mots_cles\n"
        "Couvreur,batiment,Toitures,toit\n"
        f"Charpentier,batiment,{start}cmd|' /C calc'!A0,bois\n",
    )
    _, outcome = env.process("sous_categories.csv")
    assert outcome.status == "PARTIAL"
    assert [(e.row, e.column, e.code) for e in outcome.errors] == [(3, "description", "formula")]
    assert env.query("SELECT slug FROM subcategory_souscategorie ORDER BY slug") == [
        ("boulangerie-patisserie",),
        ("couvreur",),
        ("plombier",),
    ]


def test_numbers_with_signs_still_import_in_numeric_columns(env: UploadEnv):
    env.drop(
        "villes.csv",
        "code_insee,nom,region,lat,lng,population\n"
        "97411,Saint-Denis,La Réunion,-20.8823,+55.4504,153000\n",
    )
    _, outcome = env.process("villes.csv")
    assert outcome.status == "SUCCESS", outcome.errors
    assert env.query("SELECT lat, lng FROM location_ville WHERE code_insee = '97411'") == [
        (-20.8823, 55.4504)
    ]
