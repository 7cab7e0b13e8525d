"""Writes of the reference tables both the reference load and staff uploads fill: villes,
categories and sous-catégories. One implementation each (a `Table`, `stage_rows` and
`upsert_rows`); every caller states its NULL rule (`keep_existing_when_null`, see
`lib/db/upsert.py`) and may stage extra columns for its own steps (row numbers, matches).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.upsert import UpsertCounts, stage, upsert


@dataclass(frozen=True)
class Table:
    name: str
    key: str
    # What a caller stages, in this order, and what is written from it.
    staged: tuple[str, ...]
    written: tuple[str, ...]
    # Staged columns the table does not have (name → SQL type), and columns resolved from
    # the staged ones (None: typed as in the table).
    types: Mapping[str, str] = field(default_factory=dict)
    computed: Mapping[str, str | None] = field(default_factory=dict)
    # What a new row gets where nobody gave a value (SQL over the staged row `s`).
    insert_defaults: Mapping[str, str] = field(default_factory=dict)
    # What the reference load also writes: it owns (and so re-activates) the rows it loads.
    from_reference: Mapping[str, sql.Composable] = field(default_factory=dict)


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
VILLES = Table(
    "location_ville",
    "code_insee",
    staged=VILLE_COLUMNS,
    written=VILLE_COLUMNS,
    insert_defaults={
        "codes_postaux": "CASE WHEN s.code_postal_principal IS NULL THEN '[]'::jsonb "
        "ELSE jsonb_build_array(s.code_postal_principal) END"
    },
    from_reference={"is_active": sql.SQL("true")},
)

_TEXT_DEFAULTS = {"description": "''", "meta_description": "''", "mots_cles": "''", "ordre": "0"}
_FROM_TAXONOMY = {"is_active": sql.SQL("true"), "from_taxonomy": sql.SQL("true")}
CATEGORY_COLUMNS = ("slug", "nom", "description", "meta_description", "ordre")
CATEGORIES = Table(
    "category_categorie",
    "slug",
    staged=CATEGORY_COLUMNS,
    written=CATEGORY_COLUMNS,
    insert_defaults=_TEXT_DEFAULTS,
    from_reference=_FROM_TAXONOMY,
)
# Staged with the parent category named by its slug (`categorie`); `resolve_categories`
# fills `categorie_id` from it.
SOUS_CATEGORY_COLUMNS = ("slug", "nom", "categorie", "description", "meta_description", "mots_cles", "ordre")
SOUS_CATEGORIES = Table(
    "subcategory_souscategorie",
    "slug",
    staged=SOUS_CATEGORY_COLUMNS,
    written=tuple("categorie_id" if c == "categorie" else c for c in SOUS_CATEGORY_COLUMNS),
    types={"categorie": "text"},
    computed={"categorie_id": None},
    insert_defaults=_TEXT_DEFAULTS,
    from_reference=_FROM_TAXONOMY,
)


def stage_rows(
    conn: psycopg.Connection,
    table: Table,
    name: str,
    rows: Iterable[Sequence[object]],
    *,
    extra: Mapping[str, str] | None = None,
    computed: Mapping[str, str] | None = None,
    primary_key: Sequence[str] = (),
    analyze: bool = False,
) -> int:
    """Stage rows of `(*extra, *table.staged)` values; `extra` and `computed` (name → SQL
    type) are the caller's own columns."""
    extra = dict(extra or {})
    return stage(
        conn,
        name,
        like=table.name,
        columns=[*extra, *table.staged],
        rows=rows,
        types={**table.types, **extra},
        computed={**table.computed, **(computed or {})},
        primary_key=primary_key,
        analyze=analyze,
    )


def upsert_rows(
    conn: psycopg.Connection,
    table: Table,
    stage_name: str,
    *,
    keep_existing_when_null: bool | Collection[str],
    from_reference: bool,
    order_by: str | None = None,
) -> UpsertCounts:
    """Insert or update the staged rows by the table's key."""
    return upsert(
        conn,
        table.name,
        stage_name=stage_name,
        key=(table.key,),
        columns=table.written,
        keep_existing_when_null=keep_existing_when_null,
        fixed=table.from_reference if from_reference else None,
        insert_defaults=table.insert_defaults,
        order_by=order_by,
    )


def resolve_categories(conn: psycopg.Connection, stage_name: str) -> None:
    """Fill the staged sous-catégories' `categorie_id` from their parent's slug (left NULL
    when unknown)."""
    conn.execute(
        sql.SQL(
            "UPDATE {} s SET categorie_id = c.id FROM category_categorie c WHERE c.slug = s.categorie"
        ).format(sql.Identifier(stage_name))
    )
