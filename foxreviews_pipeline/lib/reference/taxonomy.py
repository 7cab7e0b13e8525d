"""The FoxReviews trade taxonomy: `trade_taxonomy.yaml` (categories and trades) and
`naf_mapping.csv` (every NAF code → a trade, or excluded with a reason).

Trades are keyed by slug and the mapping by (nomenclature, NAF code), so renaming a trade
changes neither; a NAF 2025 mapping is a set of rows with another `nomenclature`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from foxreviews_pipeline.lib.reference.naf import NAF_REV2
from foxreviews_pipeline.lib.reference.snapshots import REFERENCE_DATA_DIR

TAXONOMY_FILE = REFERENCE_DATA_DIR / "trade_taxonomy.yaml"
MAPPING_FILE = REFERENCE_DATA_DIR / "naf_mapping.csv"
MAPPING_HEADER = ("nomenclature", "naf_code", "libelle", "sous_categorie", "excluded_reason")
_SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class TaxonomyError(ValueError):
    """The taxonomy files are inconsistent; the message lists every problem found."""


@dataclass(frozen=True)
class Category:
    slug: str
    nom: str
    description: str
    ordre: int
    meta_description: str = ""


@dataclass(frozen=True)
class SousCategorie:
    slug: str
    categorie: str
    nom: str
    description: str
    ordre: int
    meta_description: str = ""
    mots_cles: str = ""


@dataclass(frozen=True)
class NafMapping:
    nomenclature: str
    naf_code: str
    libelle: str
    sous_categorie: str | None
    excluded_reason: str | None


@dataclass(frozen=True)
class Taxonomy:
    categories: tuple[Category, ...]
    sous_categories: tuple[SousCategorie, ...]
    mappings: tuple[NafMapping, ...]

    def mapping_for(self, nomenclature: str = NAF_REV2) -> dict[str, NafMapping]:
        return {m.naf_code: m for m in self.mappings if m.nomenclature == nomenclature}

    def problems(self, naf_labels: Mapping[str, str] | None = None, nomenclature: str = NAF_REV2) -> list[str]:
        """Everything wrong with the files; with `naf_labels` (code → label of the
        nomenclature), also codes missing from or unknown to the mapping, and stale labels."""
        found: list[str] = []
        for kind, slugs in (("category", [c.slug for c in self.categories]),
                            ("trade", [s.slug for s in self.sous_categories])):
            found += [f"{kind} slug {s!r} is not a slug" for s in slugs if not _SLUG.match(s)]
            found += [f"{kind} slug {s!r} appears {n} times" for s, n in Counter(slugs).items() if n > 1]
        categories = {c.slug for c in self.categories}
        trades = {s.slug for s in self.sous_categories}
        found += [f"trade {s.slug!r}: unknown category {s.categorie!r}" for s in self.sous_categories
                  if s.categorie not in categories]
        named: list[Category | SousCategorie] = [*self.categories, *self.sous_categories]
        found += [f"{x.slug!r} has an empty nom" for x in named if not x.nom.strip()]
        keys = Counter((m.nomenclature, m.naf_code) for m in self.mappings)
        found += [f"NAF {code} ({nom}) appears {n} times" for (nom, code), n in keys.items() if n > 1]
        for m in self.mappings:
            if (m.sous_categorie is None) == (m.excluded_reason is None):
                found.append(f"NAF {m.naf_code}: exactly one of sous_categorie and excluded_reason is needed")
            elif m.sous_categorie is not None and m.sous_categorie not in trades:
                found.append(f"NAF {m.naf_code}: unknown trade {m.sous_categorie!r}")
        if naf_labels is not None:
            mapped = self.mapping_for(nomenclature)
            found += [f"NAF {code} is neither mapped nor excluded" for code in sorted(set(naf_labels) - set(mapped))]
            found += [f"NAF {code} is not a {nomenclature} code" for code in sorted(set(mapped) - set(naf_labels))]
            found += [f"NAF {code}: label {m.libelle!r} differs from the nomenclature's {naf_labels[code]!r}"
                      for code, m in sorted(mapped.items()) if code in naf_labels and m.libelle != naf_labels[code]]
        return found


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def parse_taxonomy(document: Mapping[str, Any]) -> tuple[list[Category], list[SousCategorie]]:
    categories: list[Category] = []
    trades: list[SousCategorie] = []
    for c in document.get("categories") or []:
        categories.append(Category(
            slug=_text(c["slug"]), nom=_text(c["nom"]), description=_text(c.get("description")),
            ordre=int(c.get("ordre", 0)), meta_description=_text(c.get("meta_description")),
        ))
        for s in c.get("sous_categories") or []:
            mots_cles = s.get("mots_cles") or ""
            if isinstance(mots_cles, list):
                mots_cles = ", ".join(str(m).strip() for m in mots_cles)
            trades.append(SousCategorie(
                slug=_text(s["slug"]), categorie=categories[-1].slug, nom=_text(s["nom"]),
                description=_text(s.get("description")), ordre=int(s.get("ordre", 0)),
                meta_description=_text(s.get("meta_description")), mots_cles=_text(mots_cles),
            ))
    return categories, trades


def parse_mapping(rows: Iterable[Mapping[str, str]]) -> list[NafMapping]:
    return [
        NafMapping(
            nomenclature=_text(row.get("nomenclature")) or NAF_REV2,
            naf_code=_text(row["naf_code"]),
            libelle=_text(row.get("libelle")),
            sous_categorie=_text(row.get("sous_categorie")) or None,
            excluded_reason=_text(row.get("excluded_reason")) or None,
        )
        for row in rows
    ]


def load_taxonomy(taxonomy_path: Path | None = None, mapping_path: Path | None = None) -> Taxonomy:
    """Read and check the two files (raises `TaxonomyError` listing every problem)."""
    document = yaml.safe_load((taxonomy_path or TAXONOMY_FILE).read_text(encoding="utf-8")) or {}
    categories, trades = parse_taxonomy(document)
    with (mapping_path or MAPPING_FILE).open(encoding="utf-8", newline="") as f:
        mappings = parse_mapping(csv.DictReader(f))
    taxonomy = Taxonomy(tuple(categories), tuple(trades), tuple(mappings))
    problems = taxonomy.problems()
    if problems:
        raise TaxonomyError("; ".join(problems))
    return taxonomy
