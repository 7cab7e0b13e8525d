"""Real communes and NAF codes for the synthetic SIRENE day, from the shipped snapshots."""

from __future__ import annotations

from foxreviews_pipeline.lib.reference.communes import load_aliases, load_communes
from foxreviews_pipeline.lib.reference.naf import load_naf

# SIRENE carries the arrondissement, never the commune, for these three cities.
_CITIES_WITH_ARRONDISSEMENTS = frozenset({"75056", "13055", "69123"})


def sample_communes() -> list[tuple[str, str, str]]:
    """(code INSEE, code postal, libellé) for every commune and postal code where SIRENE
    establishments are found: current communes of metropolitan France and the overseas
    départements and collectivités covered by SIRENE, with the arrondissements municipaux
    of Paris, Lyon and Marseille in place of the cities."""
    rows = [
        (c.code_insee, cp, c.nom)
        for c in load_communes()
        if c.code_insee not in _CITIES_WITH_ARRONDISSEMENTS and not c.departement.startswith("98")
        for cp in c.codes_postaux
    ]
    rows += [
        (a.code_insee, cp, a.nom)
        for a in load_aliases()
        if a.kind == "arrondissement-municipal"
        for cp in a.codes_postaux
    ]
    return sorted(rows)


def sample_naf_codes() -> list[str]:
    return [n.code for n in load_naf()]
