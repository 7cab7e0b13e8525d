"""The four import types, their columns (the web app's names, docs/uploads.md), and how a file's
type is told from its name or its header row."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from foxreviews_pipeline.lib.reference.tables import VILLE_COLUMNS
from foxreviews_pipeline.lib.uploads.model import FileRejected

ENTREPRISES = "entreprises"
VILLES = "villes"
CATEGORIES = "categories"
SOUS_CATEGORIES = "sous_categories"


@dataclass(frozen=True)
class ImportSpec:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    # Accepted for compatibility with the web app's exports, never written.
    ignored: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional, *self.ignored)


SPECS: dict[str, ImportSpec] = {
    ENTREPRISES: ImportSpec(
        ENTREPRISES,
        required=("siret", "nom"),
        optional=(
            "siren",
            "nom_commercial",
            "adresse",
            "code_postal",
            "ville_nom",
            "naf_code",
            "telephone",
            "email_contact",
            "site_web",
            "is_active",
        ),
        # The label always comes from the NAF nomenclature of `naf_code`, so that one code
        # never carries two labels in the directory.
        ignored=("naf_libelle",),
    ),
    VILLES: ImportSpec(
        VILLES,
        required=("nom",),
        # Every stored column but those derived from the name.
        optional=tuple(c for c in VILLE_COLUMNS if c not in ("nom", "nom_normalise", "slug")),
    ),
    CATEGORIES: ImportSpec(
        CATEGORIES,
        required=("nom",),
        optional=("slug", "description", "meta_description", "ordre"),
    ),
    SOUS_CATEGORIES: ImportSpec(
        SOUS_CATEGORIES,
        required=("nom", "categorie"),
        optional=("slug", "description", "meta_description", "mots_cles", "ordre"),
    ),
}

ALL_COLUMNS: set[str] = {c for spec in SPECS.values() for c in spec.columns}

# Longest text each column takes, in characters (docs/uploads.md, "Limits"). The tables'
# text columns have no declared length, but the indexed ones (slugs, normalised names) must
# fit a PostgreSQL btree entry (~2.7 KB), and the web app's forms use these limits.
MAX_LENGTHS: dict[str, dict[str, int]] = {
    ENTREPRISES: {
        "nom": 255,
        "nom_commercial": 255,
        "adresse": 500,
        "ville_nom": 255,
        "telephone": 30,
        "email_contact": 254,
        "site_web": 2_000,
    },
    VILLES: {"nom": 255, "region": 100},
    CATEGORIES: {"nom": 255, "slug": 100, "description": 10_000, "meta_description": 500},
    SOUS_CATEGORIES: {
        "nom": 255,
        "categorie": 255,
        "slug": 100,
        "description": 10_000,
        "meta_description": 500,
        "mots_cles": 2_000,
    },
}

# Free-text columns: what staff type, shown as is by the web app and by spreadsheets that
# export it again. A value there may not start like a spreadsheet formula.
FREE_TEXT: dict[str, tuple[str, ...]] = {
    ENTREPRISES: ("nom", "nom_commercial", "adresse", "ville_nom", "email_contact"),
    VILLES: ("nom", "region"),
    CATEGORIES: ("nom", "description", "meta_description"),
    SOUS_CATEGORIES: ("nom", "categorie", "description", "meta_description", "mots_cles"),
}

# "sous_categories…" is tested before "categories…", which it does not start with but
# which a looser match (e.g. `in`) would find inside it.
_PREFIXES = (
    ("sous_categorie", SOUS_CATEGORIES),
    ("souscategorie", SOUS_CATEGORIES),
    ("categorie", CATEGORIES),
    ("entreprise", ENTREPRISES),
    ("ville", VILLES),
)


def _fold(name: str) -> str:
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def type_from_name(file_name: str) -> str | None:
    folded = _fold(file_name)
    for prefix, import_type in _PREFIXES:
        if folded.startswith(prefix):
            return import_type
    return None


def type_from_header(header: list[str]) -> str | None:
    columns = set(header)
    if "siret" in columns:
        return ENTREPRISES
    if columns & {
        "code_insee",
        "code_postal_principal",
        "codes_postaux",
        "departement",
        "population",
    }:
        return VILLES
    if "nom" in columns and columns & {"categorie", "mots_cles"}:
        return SOUS_CATEGORIES
    if "nom" in columns and columns <= set(SPECS[CATEGORIES].columns) and len(columns) > 1:
        return CATEGORIES
    return None


def detect_type(file_name: str, header: list[str]) -> str:
    """The import type from the file-name prefix, else from the header row."""
    found = type_from_name(file_name) or type_from_header(header)
    if found is None:
        raise FileRejected(
            "unknown_import_type",
            "cannot tell what the file holds: start its name with entreprises, villes, "
            "categories or sous_categories, or use the column names of one of these types",
        )
    return found


def check_columns(spec: ImportSpec, header: list[str]) -> list[str]:
    """Raise on a missing required column or a repeated one; return unknown columns."""
    seen: set[str] = set()
    for column in header:
        if column and column in seen:
            raise FileRejected(
                "duplicate_column", f"the column {column} appears twice in the header", column
            )
        seen.add(column)
    missing = [c for c in spec.required if c not in seen]
    if missing:
        raise FileRejected(
            "missing_column",
            f"required column{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)} "
            f"({spec.name} files need {', '.join(spec.required)})",
            missing[0],
        )
    return [c for c in header if c and c not in spec.columns]
