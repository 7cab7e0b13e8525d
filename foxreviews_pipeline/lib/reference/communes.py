"""French communes: the shipped COG snapshot, name normalisation, slugs, code resolution."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foxreviews_pipeline.lib.reference.snapshots import (
    ALIASES_FILE,
    COMMUNES_FILE,
    REFERENCE_DATA_DIR,
    read_csv_gz,
)


@dataclass(frozen=True)
class Commune:
    code_insee: str
    nom: str
    codes_postaux: tuple[str, ...]
    departement: str
    region: str
    population: int | None
    lat: float | None = None
    lng: float | None = None

    @property
    def code_postal_principal(self) -> str | None:
        """The smallest postal code: 75001 for Paris, 13001 for Marseille, 31000 for Toulouse."""
        return min(self.codes_postaux) if self.codes_postaux else None


@dataclass(frozen=True)
class CommuneAlias:
    """A commune code that is not a current commune, and the current commune it belongs to."""

    code_insee: str
    ville_code_insee: str
    kind: str
    nom: str
    codes_postaux: tuple[str, ...] = ()


def _split_codes(value: str) -> tuple[str, ...]:
    return tuple(sorted(set(value.split())))


def load_communes(path: Path | None = None) -> list[Commune]:
    """The current communes of the shipped snapshot (COG 2026), sorted by INSEE code."""
    if path is None:
        return list(_shipped_communes())
    return [
        Commune(
            code_insee=row["code_insee"],
            nom=row["nom"],
            codes_postaux=_split_codes(row["codes_postaux"]),
            departement=row["departement"],
            region=row["region"],
            population=int(row["population"]) if row["population"] else None,
        )
        for row in read_csv_gz(path)
    ]


def load_aliases(path: Path | None = None) -> list[CommuneAlias]:
    """Arrondissements municipaux, communes déléguées/associées and former codes."""
    if path is None:
        return list(_shipped_aliases())
    return [
        CommuneAlias(
            code_insee=row["code_insee"],
            ville_code_insee=row["ville_code_insee"],
            kind=row["kind"],
            nom=row["nom"],
            codes_postaux=_split_codes(row.get("codes_postaux", "")),
        )
        for row in read_csv_gz(path)
    ]


@functools.cache
def _shipped_communes() -> tuple[Commune, ...]:
    return tuple(load_communes(REFERENCE_DATA_DIR / COMMUNES_FILE))


@functools.cache
def _shipped_aliases() -> tuple[CommuneAlias, ...]:
    return tuple(load_aliases(REFERENCE_DATA_DIR / ALIASES_FILE))


# ---------------------------------------------------------------------------------------
# Names and slugs

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss"})
# SIRENE's libellés abbreviate: "ST ETIENNE", "STE MAXIME", "STES MARIES DE LA MER".
_ABBREVIATIONS = {"st": "saint", "ste": "sainte", "sts": "saints", "stes": "saintes"}
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _ascii(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.translate(_LIGATURES))
    return decomposed.encode("ascii", "ignore").decode("ascii")


def normalise_name(value: str | None) -> str:
    """A commune name reduced for comparison: no accents, case, hyphens, apostrophes or
    punctuation, and SIRENE's "ST"/"STE" expanded, so that "Saint-Étienne",
    "ST ETIENNE" and "saint etienne" are equal."""
    if not value:
        return ""
    words = _NON_ALNUM.sub(" ", _ascii(value).lower()).split()
    return " ".join(_ABBREVIATIONS.get(w, w) for w in words)


def slugify(value: str) -> str:
    """The web app's (Django's) slugify: accents dropped, apostrophes removed, other
    separators as single hyphens ("L'Abergement-Clémenciat" → "labergement-clemenciat").
    Ligatures are spelt out first, where Django would drop them ("Œuilly" → "oeuilly")."""
    value = re.sub(r"[^a-z0-9\s-]", "", _ascii(value).lower())
    return re.sub(r"[-\s]+", "-", value).strip("-")


def ville_slugs(communes: Iterable[Commune]) -> dict[str, str]:
    """INSEE code → slug, `nom-codepostal` as on the web app.

    When several communes share that slug (homonyms with the same postal code), each of
    them gets its INSEE code appended: no commune "owns" the plain slug, so the result
    depends only on the set of communes, never on their order. A commune without postal
    code (the uninhabited TAAF districts) uses its INSEE code in place of one."""
    base: dict[str, str] = {}
    by_slug: dict[str, list[str]] = defaultdict(list)
    for c in communes:
        suffix = c.code_postal_principal or c.code_insee.lower()
        base[c.code_insee] = f"{slugify(c.nom)}-{suffix}"
        by_slug[base[c.code_insee]].append(c.code_insee)
    slugs = {
        code: slug if len(by_slug[slug]) == 1 else f"{slug}-{code.lower()}"
        for code, slug in base.items()
    }
    if len(set(slugs.values())) != len(slugs):
        raise ValueError("ville slugs are not unique after disambiguation")
    return slugs
