"""Communes: the shipped snapshot, code resolution, names and slugs (no database)."""

import functools
import re
from collections.abc import Iterable, Mapping

import pytest

from foxreviews_pipeline.lib.reference.communes import (
    Commune,
    CommuneAlias,
    load_aliases,
    load_communes,
    normalise_name,
    slugify,
    ville_slugs,
)


class CommuneResolver:
    """Any commune code SIRENE may carry → the current commune's INSEE code, from the
    snapshot alone: the oracle the aliases are checked against (the pipeline resolves in SQL,
    through `location_commune_alias`)."""

    def __init__(self, communes: Iterable[Commune], aliases: Iterable[CommuneAlias]):
        self._current = {c.code_insee for c in communes}
        self._aliases: Mapping[str, str] = {
            a.code_insee: a.ville_code_insee for a in aliases if a.ville_code_insee in self._current
        }

    def resolve(self, code: str | None) -> str | None:
        if not code:
            return None
        code = code.strip().upper()
        if code in self._current:
            return code
        return self._aliases.get(code)


@functools.cache
def default_resolver() -> CommuneResolver:
    return CommuneResolver(load_communes(), load_aliases())


def resolve_commune_code(code: str | None) -> str | None:
    """The current commune for `code` per the shipped snapshot: itself if current, the
    parent commune of an arrondissement municipal (75115 → 75056), the commune nouvelle
    of a commune déléguée or associée or of a former code; None if unknown."""
    return default_resolver().resolve(code)


@pytest.fixture(scope="module")
def communes() -> dict[str, Commune]:
    return {c.code_insee: c for c in load_communes()}


def test_snapshot_has_every_current_commune_of_cog_2026(communes):
    assert len(communes) == 34_969
    assert all(c.departement and c.region and c.nom for c in communes.values())


@pytest.mark.parametrize(
    ("code", "nom", "departement", "region"),
    [
        ("2A004", "Ajaccio", "2A", "Corse"),
        ("2B033", "Bastia", "2B", "Corse"),
        ("97105", "Basse-Terre", "971", "Guadeloupe"),
        ("97209", "Fort-de-France", "972", "Martinique"),
        ("97302", "Cayenne", "973", "Guyane"),
        ("97411", "Saint-Denis", "974", "La Réunion"),
        ("97611", "Mamoudzou", "976", "Mayotte"),
        ("75056", "Paris", "75", "Île-de-France"),
    ],
)
def test_corsica_and_overseas_departements(communes, code, nom, departement, region):
    commune = communes[code]
    assert (commune.nom, commune.departement, commune.region) == (nom, departement, region)


def test_departement_is_not_derived_from_the_postal_code(communes):
    # Corsican postal codes start with 20, overseas ones with 97x for several départements.
    assert {c.departement for c in communes.values() if c.code_postal_principal and c.code_postal_principal.startswith("20")} == {"2A", "2B"}
    assert {"971", "972", "973", "974", "976"} <= {c.departement for c in communes.values()}
    assert not any(c.departement == "20" for c in communes.values())


def test_principal_postal_code_and_sorted_list(communes):
    paris = communes["75056"]
    assert paris.code_postal_principal == "75001"
    assert list(paris.codes_postaux) == sorted(paris.codes_postaux)
    assert "75116" in paris.codes_postaux
    assert communes["98411"].code_postal_principal is None  # uninhabited TAAF district


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("75115", "75056"),  # Paris 15e arrondissement
        ("75101", "75056"),
        ("13201", "13055"),  # Marseille 1er
        ("69381", "69123"),  # Lyon 1er
        ("74011", "74010"),  # Annecy-le-Vieux, commune déléguée of Annecy
        ("01120", "01262"),  # Cordieux, commune associée
        ("74028", "74010"),  # a former code merged into Annecy
        ("01015", "01015"),  # a déléguée sharing its commune nouvelle's code is the commune itself
        ("2A004", "2A004"),
        ("2a004", "2A004"),
        (" 75056 ", "75056"),
        ("99999", None),
        ("", None),
        (None, None),
    ],
)
def test_resolve_commune_code(code, expected):
    assert resolve_commune_code(code) == expected


def test_aliases_never_shadow_a_current_commune_nor_point_nowhere(communes):
    aliases = load_aliases()
    assert not [a for a in aliases if a.code_insee in communes]
    assert not [a for a in aliases if a.ville_code_insee not in communes]
    kinds = {a.kind for a in aliases}
    assert kinds == {"arrondissement-municipal", "commune-deleguee", "commune-associee", "ancienne-commune"}
    assert sum(a.kind == "arrondissement-municipal" for a in aliases) == 45


def test_resolver_ignores_aliases_to_unknown_communes():
    resolver = CommuneResolver(
        [Commune("01001", "A", ("01400",), "01", "R", 1)],
        [CommuneAlias("01002", "01001", "commune-deleguee", "B"), CommuneAlias("01003", "09999", "commune-deleguee", "C")],
    )
    assert resolver.resolve("01002") == "01001"
    assert resolver.resolve("01003") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Saint-Étienne", "ST ETIENNE"),
        ("Sainte-Maxime", "STE MAXIME"),
        ("Saintes-Maries-de-la-Mer", "STES MARIES DE LA MER"),
        ("L'Haÿ-les-Roses", "L HAY LES ROSES"),
        ("Châlons-en-Champagne", "chalons en champagne"),
        ("Œuilly", "OEUILLY"),
        ("Saint-Denis", "saint  denis "),
    ],
)
def test_normalise_name_equal(a, b):
    assert normalise_name(a) == normalise_name(b)


def test_normalise_name_keeps_real_differences():
    assert normalise_name("Saint-Denis") != normalise_name("Sainte-Denise")
    assert normalise_name("Stella") == "stella"  # only whole words are abbreviations
    assert normalise_name(None) == ""


def test_slugify_follows_the_web_app():
    assert slugify("L'Abergement-Clémenciat") == "labergement-clemenciat"
    assert slugify("Châlons-en-Champagne") == "chalons-en-champagne"
    assert slugify("Œuilly") == "oeuilly"
    assert slugify("Paris 15e Arrondissement") == "paris-15e-arrondissement"


def test_every_shipped_ville_gets_a_unique_valid_slug(communes):
    slugs = ville_slugs(communes.values())
    assert len(set(slugs.values())) == len(communes)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", s) for s in slugs.values())
    assert slugs["75056"] == "paris-75001"
    assert slugs["2A004"] == "ajaccio-20000"
    # Homonyms with different postal codes are told apart by the postal code alone.
    assert (slugs["93066"], slugs["97411"]) == ("saint-denis-93200", "saint-denis-97400")
    assert slugs["98411"] == "iles-saint-paul-et-nouvelle-amsterdam-98411"


def test_homonyms_sharing_a_postal_code_get_distinct_stable_slugs():
    a = Commune("50001", "Saint-Martin", ("50000",), "50", "Normandie", 100)
    b = Commune("50002", "Saint Martin", ("50000",), "50", "Normandie", 200)
    other = Commune("50003", "Brix", ("50700",), "50", "Normandie", 300)
    first = ville_slugs([a, b, other])
    assert first == {
        "50001": "saint-martin-50000-50001",
        "50002": "saint-martin-50000-50002",
        "50003": "brix-50700",
    }
    # Independent of order and of unrelated communes.
    assert ville_slugs([other, b, a]) == first
    assert ville_slugs([b, a]) == {k: v for k, v in first.items() if k != "50003"}
