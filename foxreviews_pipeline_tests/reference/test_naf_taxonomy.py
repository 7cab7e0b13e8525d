"""The NAF nomenclature snapshot and the trade taxonomy files (no database)."""

import dataclasses
import re

import pytest

from foxreviews_pipeline.lib.reference.naf import NAF_REV2, load_naf
from foxreviews_pipeline.lib.reference.taxonomy import (
    NafMapping,
    Taxonomy,
    TaxonomyError,
    load_taxonomy,
)

_NAF_CODE_SPELLING = re.compile(r"^([0-9]{2})\.?([0-9]{2})([A-Za-z])$")


def format_naf_code(value: str | None) -> str | None:
    """`NN.NNL` from the spellings seen in files ("6201Z", "62.01z", " 62.01Z ")."""
    if not value:
        return None
    match = _NAF_CODE_SPELLING.match(value.strip())
    if not match:
        return None
    return f"{match[1]}.{match[2]}{match[3].upper()}"


@pytest.fixture(scope="module")
def naf_labels() -> dict[str, str]:
    return {n.code: n.libelle for n in load_naf()}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy()


def test_naf_rev2_has_732_well_formed_sous_classes():
    codes = load_naf()
    assert len(codes) == 732 == len({c.code for c in codes})
    assert {c.section for c in codes} == set("ABCDEFGHIJKLMNOPQRSTU")
    for c in codes:
        assert c.code.startswith(c.classe) and c.classe.startswith(c.groupe) and c.groupe.startswith(c.division)
        assert c.libelle == " ".join(c.libelle.split()) and c.libelle
    labels = {c.code: c.libelle for c in codes}
    assert labels["62.01Z"] == "Programmation informatique"
    assert labels["10.71C"] == "Boulangerie et boulangerie-pâtisserie"
    assert labels["88.99A"] == "Autre accueil ou accompagnement sans hébergement d’enfants et d’adolescents"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("6201Z", "62.01Z"), ("62.01z", "62.01Z"), (" 62.01Z ", "62.01Z"), ("62.01", None), ("", None), (None, None)],
)
def test_format_naf_code(raw, expected):
    assert format_naf_code(raw) == expected


def test_taxonomy_size_and_coverage(taxonomy, naf_labels):
    assert 15 <= len(taxonomy.categories) <= 25
    assert 100 <= len(taxonomy.sous_categories) <= 150
    assert taxonomy.problems(naf_labels) == []
    mapping = taxonomy.mapping_for(NAF_REV2)
    assert set(mapping) == set(naf_labels)
    # Every trade has at least one NAF code, or its pages would stay empty forever.
    assert {s.slug for s in taxonomy.sous_categories} == {m.sous_categorie for m in mapping.values() if m.sous_categorie}


@pytest.mark.parametrize(
    ("code", "trade"),
    [
        ("43.22A", "plombier"),
        ("43.21A", "electricien"),
        ("56.10A", "restaurant"),
        ("10.71C", "boulangerie-patisserie"),
        ("47.24Z", "boulangerie-patisserie"),
        ("96.02A", "coiffeur"),
        ("86.21Z", "medecin-generaliste"),
        ("69.10Z", "avocat"),
        ("45.20A", "garage-automobile"),
        ("68.31Z", "agence-immobiliere"),
        ("49.32Z", "taxi-vtc"),
    ],
)
def test_consumer_trades_are_mapped(taxonomy, code, trade):
    assert taxonomy.mapping_for()[code].sous_categorie == trade


@pytest.mark.parametrize("code", ["64.20Z", "84.11Z", "84.22Z", "46.21Z", "70.10Z", "99.00Z"])
def test_non_consumer_codes_are_excluded_with_a_reason(taxonomy, code):
    row = taxonomy.mapping_for()[code]
    assert row.sous_categorie is None and row.excluded_reason


def test_problems_are_reported(taxonomy, naf_labels):
    mappings = list(taxonomy.mappings)
    broken = dataclasses.replace(
        taxonomy,
        sous_categories=(*taxonomy.sous_categories, taxonomy.sous_categories[0]),
        mappings=(
            *[m for m in mappings if m.naf_code != "62.01Z"],
            NafMapping(NAF_REV2, "99.99Z", "Inconnu", "n-existe-pas", None),
            NafMapping(NAF_REV2, "43.22A", naf_labels["43.22A"], None, None),
        ),
    )
    problems = "\n".join(broken.problems(naf_labels))
    assert "trade slug 'plombier' appears 2 times" in problems
    assert "NAF 62.01Z is neither mapped nor excluded" in problems
    assert "NAF 99.99Z: unknown trade 'n-existe-pas'" in problems
    assert "NAF 99.99Z is not a NAFRev2 code" in problems
    assert "NAF 43.22A (NAFRev2) appears 2 times" in problems
    assert "NAF 43.22A: exactly one of sous_categorie and excluded_reason is needed" in problems


def test_load_taxonomy_rejects_an_unknown_trade(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "categories:\n- slug: maison\n  nom: Maison\n  ordre: 1\n  sous_categories:\n"
        "  - slug: plombier\n    nom: Plombier\n    ordre: 1\n",
        encoding="utf-8",
    )
    (tmp_path / "m.csv").write_text(
        "nomenclature,naf_code,libelle,sous_categorie,excluded_reason\n"
        "NAFRev2,43.22A,x,plombier,\nNAFRev2,43.21A,x,electricien,\n",
        encoding="utf-8",
    )
    with pytest.raises(TaxonomyError, match="unknown trade 'electricien'"):
        load_taxonomy(tmp_path / "t.yaml", tmp_path / "m.csv")
