"""Writes of the reference tables both the reference load and staff uploads fill: villes,
categories and sous-catégories. One implementation each; every caller states its NULL rule
(`keep_existing_when_null`, see `lib/db/upsert.py`) and stages its rows with `stage_*`,
which may carry extra columns for the caller's own steps (row numbers, matches).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.upsert import UpsertCounts, stage, upsert_staged

VILLE_COLUMNS = (
    "code_insee",
    "nom",
    "nom_normalise",
    "slug",
    "code_postal_principal",
    "codes_postaux",
    "departement",
    "region",
    "lat",
    "lng",
    "population",
)
CATEGORY_COLUMNS = ("slug", "nom", "description", "meta_description", "ordre")
# Staged with the parent category named by its slug (`categorie`); `categorie_id` is
# resolved from it by `resolve_categories`.
SOUS_CATEGORY_COLUMNS = (
    "slug",
    "nom",
    "categorie",
    "description",
    "meta_description",
    "mots_cles",
    "ordre",
)
_SOUS_CATEGORY_WRITTEN = tuple(
    "categorie_id" if c == "categorie" else c for c in SOUS_CATEGORY_COLUMNS
)

# What a new row gets where nobody gave a value.
_TEXT_DEFAULTS = {"description": "''", "meta_description": "''", "mots_cles": "''", "ordre": "0"}
_VILLE_DEFAULTS = {
    "codes_postaux": "CASE WHEN s.code_postal_principal IS NULL THEN '[]'::jsonb "
    "ELSE jsonb_build_array(s.code_postal_principal) END"
}
_ACTIVE = {"is_active": sql.SQL("true")}
_FROM_TAXONOMY = {"is_active": sql.SQL("true"), "from_taxonomy": sql.SQL("true")}

Policy = bool | Collection[str]


# --- villes -----------------------------------------------------------------------------------


def stage_villes(
    conn: psycopg.Connection,
    name: str,
    rows: Iterable[Sequence],
    *,
    extra: Sequence[str] = (),
    types: Mapping[str, str] | None = None,
    computed: Mapping[str, str] | None = None,
    primary_key: Sequence[str] = (),
    analyze: bool = False,
) -> int:
    """Stage rows of `(*extra, *VILLE_COLUMNS)` values."""
    return stage(
        conn,
        name,
        like="location_ville",
        columns=[*extra, *VILLE_COLUMNS],
        rows=rows,
        types=types,
        computed=computed,
        primary_key=primary_key,
        analyze=analyze,
    )


def upsert_villes(
    conn: psycopg.Connection,
    stage_name: str,
    *,
    keep_existing_when_null: Policy,
    activate: bool,
    order_by: str | None = None,
) -> UpsertCounts:
    """Insert or update the staged villes by INSEE code; `activate` marks them active."""
    return upsert_staged(
        conn,
        "location_ville",
        stage_name,
        key=("code_insee",),
        columns=VILLE_COLUMNS,
        keep_existing_when_null=keep_existing_when_null,
        fixed=_ACTIVE if activate else None,
        insert_defaults=_VILLE_DEFAULTS,
        order_by=order_by,
    )


# --- categories and sous-catégories -----------------------------------------------------------


def stage_categories(
    conn: psycopg.Connection,
    name: str,
    rows: Iterable[Sequence],
    *,
    extra: Sequence[str] = (),
    types: Mapping[str, str] | None = None,
    primary_key: Sequence[str] = (),
    analyze: bool = False,
) -> int:
    """Stage rows of `(*extra, *CATEGORY_COLUMNS)` values."""
    return stage(
        conn,
        name,
        like="category_categorie",
        columns=[*extra, *CATEGORY_COLUMNS],
        rows=rows,
        types=types,
        primary_key=primary_key,
        analyze=analyze,
    )


def upsert_categories(
    conn: psycopg.Connection,
    stage_name: str,
    *,
    keep_existing_when_null: Policy,
    from_taxonomy: bool,
    order_by: str | None = None,
) -> UpsertCounts:
    """Insert or update the staged categories by slug; `from_taxonomy` marks them active and
    owned by the taxonomy file."""
    return upsert_staged(
        conn,
        "category_categorie",
        stage_name,
        key=("slug",),
        columns=CATEGORY_COLUMNS,
        keep_existing_when_null=keep_existing_when_null,
        fixed=_FROM_TAXONOMY if from_taxonomy else None,
        insert_defaults=_TEXT_DEFAULTS,
        order_by=order_by,
    )


def stage_sous_categories(
    conn: psycopg.Connection,
    name: str,
    rows: Iterable[Sequence],
    *,
    extra: Sequence[str] = (),
    types: Mapping[str, str] | None = None,
    primary_key: Sequence[str] = (),
    analyze: bool = False,
) -> int:
    """Stage rows of `(*extra, *SOUS_CATEGORY_COLUMNS)` values, `categorie` being the parent
    category's slug; `categorie_id` is left for `resolve_categories`."""
    return stage(
        conn,
        name,
        like="subcategory_souscategorie",
        columns=[*extra, *SOUS_CATEGORY_COLUMNS],
        rows=rows,
        types={"categorie": "text", **(types or {})},
        computed={"categorie_id": "bigint"},
        primary_key=primary_key,
        analyze=analyze,
    )


def resolve_categories(conn: psycopg.Connection, stage_name: str) -> None:
    """Fill the staged `categorie_id` from the parent's slug (left NULL when unknown)."""
    conn.execute(
        sql.SQL(
            "UPDATE {} s SET categorie_id = c.id FROM category_categorie c WHERE c.slug = s.categorie"
        ).format(sql.Identifier(stage_name))
    )


def upsert_sous_categories(
    conn: psycopg.Connection,
    stage_name: str,
    *,
    keep_existing_when_null: Policy,
    from_taxonomy: bool,
    order_by: str | None = None,
) -> UpsertCounts:
    """Insert or update the staged sous-catégories by slug (their `categorie_id` resolved)."""
    return upsert_staged(
        conn,
        "subcategory_souscategorie",
        stage_name,
        key=("slug",),
        columns=_SOUS_CATEGORY_WRITTEN,
        keep_existing_when_null=keep_existing_when_null,
        fixed=_FROM_TAXONOMY if from_taxonomy else None,
        insert_defaults=_TEXT_DEFAULTS,
        order_by=order_by,
    )
