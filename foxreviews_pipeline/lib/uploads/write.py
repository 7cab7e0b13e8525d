"""Writing validated upload rows, set-based, inside the caller's transaction.

Entreprises go through the same write path as SIRENE (`upsert_entreprises`, then their
ProLocalisations). Villes, categories and sous-catégories are staged with COPY and applied
with one UPDATE (only rows that really change) and one INSERT (rows that are new). In every
case an empty cell — or a column the file does not have — keeps the stored value: each new
value is `coalesce(file value, stored value)`.

Some rows can only be judged against the database (a ville named without its INSEE code, a
sous-catégorie's parent category): those are reported as row errors and left out, and the
rest is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from foxreviews_pipeline.lib.db.copy import copy_rows, drop_temp
from foxreviews_pipeline.lib.directory.checks import (
    PERSONAL_COLUMNS,
    ROW_CHECKS,
    audit_publication,
    hold,
)
from foxreviews_pipeline.lib.directory.entreprises import upsert_entreprises
from foxreviews_pipeline.lib.directory.prolocalisations import (
    sync_prolocalisations,
)
from foxreviews_pipeline.lib.reference.communes import normalise_name, slugify
from foxreviews_pipeline.lib.uploads.model import RowError
from foxreviews_pipeline.lib.uploads.specs import CATEGORIES, ENTREPRISES, SOUS_CATEGORIES, VILLES
from foxreviews_pipeline.lib.uploads.validate import Validated, ValidRow

UPLOAD_SOURCE = "upload"


@dataclass
class WriteResult:
    written_rows: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def known_naf_codes(conn: psycopg.Connection, codes: set[str]) -> set[str]:
    if not codes:
        return set()
    found = conn.execute(
        "SELECT code FROM ref_naf_nomenclature WHERE nomenclature = 'NAFRev2' AND code = ANY(%s)",
        (sorted(codes),),
    ).fetchall()
    return {code for (code,) in found}


def write(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    writer = {
        ENTREPRISES: write_entreprises,
        VILLES: write_villes,
        CATEGORIES: write_categories,
        SOUS_CATEGORIES: write_sous_categories,
    }[validated.import_type]
    if not validated.rows:
        return WriteResult()
    return writer(conn, validated, partition=partition, run_id=run_id)


# --- entreprises ----------------------------------------------------------------------------


def write_entreprises(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    rows = validated.rows
    columns = [c for c in validated.columns if c != "siren"]
    columns.insert(1, "siren")
    if "naf_code" in columns:
        columns.append("naf_nomenclature")
    sirets = [r.values["siret"] for r in rows]
    if "is_active" in columns:
        # PostgreSQL checks NOT NULL on the proposed row before ON CONFLICT applies, so an
        # empty is_active cell takes the stored state here (a new establishment is active).
        stored = dict(
            conn.execute(
                "SELECT siret, is_active FROM enterprise_entreprise WHERE siret = ANY(%s)",
                (sirets,),
            ).fetchall()
        )
        for r in rows:
            if r.values.get("is_active") is None:
                r.values["is_active"] = stored.get(r.values["siret"], True)
    for r in rows:
        if "naf_code" in columns:
            r.values["naf_nomenclature"] = "NAFRev2" if r.values.get("naf_code") else None
    withheld = _withhold_personal_fields(conn, rows, columns)
    counts = upsert_entreprises(
        conn,
        columns,
        (tuple(r.values.get(c) for c in columns) for r in rows),
        source=UPLOAD_SOURCE,
        partition=partition,
        run_id=run_id,
        keep_existing_when_null=True,
    )
    prolocs = sync_prolocalisations(conn, sirets, partition=partition)
    # Write–audit–publish: a failed blocking check raises, and the import's transaction is
    # rolled back whole.
    hold(audit_publication(conn, sirets, records=len(rows), checks=ROW_CHECKS))
    return WriteResult(
        written_rows=[r.row for r in rows],
        counts={
            "personal_fields_withheld": withheld,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "prolocalisations_created": prolocs.created,
            "prolocalisations_reactivated": prolocs.reactivated,
            "prolocalisations_deactivated": prolocs.deactivated,
        },
    )


def _withhold_personal_fields(
    conn: psycopg.Connection, rows: list[ValidRow], columns: list[str]
) -> int:
    """Rows about establishments INSEE does not fully diffuse keep no name, trade name or
    address from the file (the diffusion policy binds staff uploads too); how many."""
    personal = [c for c in PERSONAL_COLUMNS if c in columns]
    if not personal:
        return 0
    restricted = {
        siret
        for (siret,) in conn.execute(
            "SELECT siret FROM enterprise_entreprise WHERE siret = ANY(%s) "
            "AND statut_diffusion IS NOT NULL AND statut_diffusion <> 'O'",
            ([r.values["siret"] for r in rows],),
        )
    }
    count = 0
    for r in rows:
        if r.values["siret"] in restricted:
            count += 1
            for column in personal:
                r.values[column] = None
    return count


# --- shared staging -------------------------------------------------------------------------


def _stage(
    conn: psycopg.Connection,
    name: str,
    definition: str,
    columns: Sequence[str],
    rows: Sequence[ValidRow],
    extra: dict[str, Any] | None = None,
) -> None:
    drop_temp(conn, name)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (row_number integer PRIMARY KEY, {}) ON COMMIT DROP").format(
            sql.Identifier(name), sql.SQL(definition)
        )
    )

    def value(r: ValidRow, column: str) -> Any:
        v = r.values.get(column)
        return Jsonb(v) if isinstance(v, list) else v

    copy_rows(
        conn,
        name,
        ["row_number", *columns],
        ([r.row, *(value(r, c) for c in columns)] for r in rows),
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))


def _reject(
    conn: psycopg.Connection, stage: str, condition: str, column: str, reason_sql: str, code: str
) -> list[RowError]:
    """Report and drop the staged rows matching `condition` (SQL over alias `s`)."""
    found = conn.execute(
        sql.SQL("DELETE FROM {} s WHERE {} RETURNING s.row_number, {}").format(
            sql.Identifier(stage), sql.SQL(condition), sql.SQL(reason_sql)
        )
    ).fetchall()
    return [RowError(row, column, reason, code) for row, reason in found]


def _apply(
    conn: psycopg.Connection,
    *,
    table: str,
    stage: str,
    target_id: str,
    update_columns: Sequence[str],
    insert_columns: Sequence[str],
    insert_defaults: dict[str, str] | None = None,
) -> tuple[int, int]:
    """UPDATE the matched rows that really change, INSERT the new ones: (updated, inserted)."""
    insert_defaults = insert_defaults or {}
    new = [sql.SQL("coalesce(s.{c}, t.{c})").format(c=sql.Identifier(c)) for c in update_columns]
    old = [sql.SQL("t.{}").format(sql.Identifier(c)) for c in update_columns]
    updated = conn.execute(
        sql.SQL(
            "UPDATE {table} t SET ({cols}) = ROW({new}), updated_at = now() FROM {stage} s "
            "WHERE t.id = s.{target} AND ({old}) IS DISTINCT FROM ({new})"
        ).format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in update_columns),
            new=sql.SQL(", ").join(new),
            old=sql.SQL(", ").join(old),
            stage=sql.Identifier(stage),
            target=sql.Identifier(target_id),
        )
    ).rowcount
    values = [
        sql.SQL("coalesce(s.{}, {})").format(sql.Identifier(c), sql.SQL(insert_defaults[c]))
        if c in insert_defaults
        else sql.SQL("s.{}").format(sql.Identifier(c))
        for c in insert_columns
    ]
    inserted = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {values} FROM {stage} s WHERE s.{target} IS NULL "
            "ORDER BY s.row_number"
        ).format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in insert_columns),
            values=sql.SQL(", ").join(values),
            stage=sql.Identifier(stage),
            target=sql.Identifier(target_id),
        )
    ).rowcount
    return updated, inserted


def _remaining(conn: psycopg.Connection, stage: str) -> list[int]:
    return [
        r
        for (r,) in conn.execute(
            sql.SQL("SELECT row_number FROM {} ORDER BY row_number").format(sql.Identifier(stage))
        )
    ]


# --- villes ---------------------------------------------------------------------------------

_VILLE_COLUMNS = (
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


def _unique_slugs(
    conn: psycopg.Connection, table: str, wanted: dict[int, list[str]]
) -> dict[int, str]:
    """The first candidate slug of each row that is free both in `table` and in this batch."""
    every = sorted({s for candidates in wanted.values() for s in candidates})
    taken = {
        s
        for (s,) in conn.execute(
            sql.SQL("SELECT slug FROM {} WHERE slug = ANY(%s)").format(sql.Identifier(table)),
            (every,),
        )
    }
    chosen: dict[int, str] = {}
    for row, candidates in sorted(wanted.items()):
        for slug in candidates:
            if slug and slug not in taken:
                chosen[row] = slug
                taken.add(slug)
                break
    return chosen


def write_villes(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    stage = "stage_upload_ville"
    _stage(
        conn,
        stage,
        "code_insee text, nom text, nom_normalise text, slug text, code_postal_principal text, "
        "codes_postaux jsonb, departement text, region text, lat double precision, "
        "lng double precision, population integer, ville_id bigint, matches integer",
        _VILLE_COLUMNS,
        validated.rows,
    )
    conn.execute(
        f"UPDATE {stage} s SET ville_id = v.id FROM location_ville v WHERE v.code_insee = s.code_insee"
    )
    # Without an INSEE code a ville is found by its name and one of its postal codes, and only
    # when exactly one ville answers.
    conn.execute(
        f"""
        UPDATE {stage} s SET ville_id = m.ville_id, matches = m.n
        FROM (
            SELECT s.row_number, min(v.id) AS ville_id, count(*) AS n
            FROM {stage} s JOIN location_ville v
              ON v.nom_normalise = s.nom_normalise
             AND (v.code_postal_principal = s.code_postal_principal OR v.codes_postaux ? s.code_postal_principal)
            WHERE s.code_insee IS NULL
            GROUP BY s.row_number
        ) m
        WHERE s.row_number = m.row_number
        """
    )
    # Matched by name, the name was only a key: the stored spelling stays.
    conn.execute(
        f"UPDATE {stage} SET nom = NULL, nom_normalise = NULL WHERE code_insee IS NULL AND matches = 1"
    )
    errors = _reject(
        conn,
        stage,
        "s.code_insee IS NULL AND s.code_postal_principal IS NULL",
        "code_insee",
        "'without code_insee a ville is found by nom and code_postal_principal: both are needed'",
        "ville_not_found",
    )
    errors += _reject(
        conn,
        stage,
        "s.code_insee IS NULL AND coalesce(s.matches, 0) <> 1",
        "nom",
        "CASE WHEN coalesce(s.matches, 0) = 0 "
        "THEN 'no ville named ' || s.nom || ' with postal code ' || s.code_postal_principal || ': add its code_insee' "
        "ELSE s.matches || ' villes named ' || s.nom || ' have postal code ' || s.code_postal_principal || ': add code_insee' END",
        "ville_not_found",
    )
    errors += _reject(
        conn,
        stage,
        f"s.ville_id IN (SELECT ville_id FROM {stage} WHERE ville_id IS NOT NULL "
        "GROUP BY ville_id HAVING count(*) > 1)",
        "nom",
        f"'this row and row(s) ' || (SELECT string_agg(o.row_number::text, ', ' ORDER BY o.row_number) "
        f"FROM {stage} o WHERE o.ville_id = s.ville_id AND o.row_number <> s.row_number) "
        "|| ' are the same ville: none of them is imported'",
        "duplicate_key",
    )
    errors += _reject(
        conn,
        stage,
        "s.ville_id IS NULL AND s.region IS NULL",
        "region",
        "'code_insee ' || s.code_insee || ' is a new ville: region is required to create it'",
        "missing_value",
    )
    # New villes get the reference's slug (`nom-codepostal`, the INSEE code appended when
    # taken); stored ones keep theirs, so that no URL changes.
    new_rows = conn.execute(
        f"SELECT row_number, nom, code_postal_principal, code_insee FROM {stage} WHERE ville_id IS NULL"
    ).fetchall()
    if new_rows:
        slugs = _unique_slugs(
            conn,
            "location_ville",
            {
                row: [
                    f"{slugify(nom)}-{postal or code.lower()}",
                    f"{slugify(nom)}-{postal or code.lower()}-{code.lower()}",
                ]
                for row, nom, postal, code in new_rows
            },
        )
        with conn.cursor() as cur:
            cur.executemany(
                f"UPDATE {stage} SET slug = %s WHERE row_number = %s",
                [(slug, row) for row, slug in slugs.items()],
            )
    updated, inserted = _apply(
        conn,
        table="location_ville",
        stage=stage,
        target_id="ville_id",
        update_columns=[c for c in _VILLE_COLUMNS if c not in ("code_insee", "slug")],
        insert_columns=_VILLE_COLUMNS,
        insert_defaults={
            "codes_postaux": "CASE WHEN s.code_postal_principal IS NULL THEN '[]'::jsonb "
            "ELSE jsonb_build_array(s.code_postal_principal) END"
        },
    )
    return WriteResult(
        written_rows=_remaining(conn, stage),
        errors=errors,
        counts={"inserted": inserted, "updated": updated},
    )


# --- categories and sous-catégories ---------------------------------------------------------

_CATEGORY_COLUMNS = ("slug", "nom", "description", "meta_description", "ordre")
_SOUS_CATEGORY_COLUMNS = (
    "slug",
    "nom",
    "categorie_id",
    "description",
    "meta_description",
    "mots_cles",
    "ordre",
)
_TEXT_DEFAULTS = {"description": "''", "meta_description": "''", "mots_cles": "''", "ordre": "0"}


def write_categories(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    stage = "stage_upload_categorie"
    _stage(
        conn,
        stage,
        "slug text, nom text, description text, meta_description text, ordre integer, target_id bigint",
        _CATEGORY_COLUMNS,
        validated.rows,
    )
    conn.execute(
        f"UPDATE {stage} s SET target_id = c.id FROM category_categorie c WHERE c.slug = s.slug"
    )
    updated, inserted = _apply(
        conn,
        table="category_categorie",
        stage=stage,
        target_id="target_id",
        update_columns=[c for c in _CATEGORY_COLUMNS if c != "slug"],
        insert_columns=_CATEGORY_COLUMNS,
        insert_defaults=_TEXT_DEFAULTS,
    )
    return WriteResult(
        written_rows=_remaining(conn, stage), counts={"inserted": inserted, "updated": updated}
    )


def write_sous_categories(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    for r in validated.rows:
        # The parent is named by its slug or its name, as staff know it.
        r.values["categorie_slug"] = slugify(r.values["categorie"])
    stage = "stage_upload_souscategorie"
    _stage(
        conn,
        stage,
        "slug text, nom text, categorie text, categorie_slug text, description text, "
        "meta_description text, mots_cles text, ordre integer, categorie_id bigint, target_id bigint",
        (*_SOUS_CATEGORY_COLUMNS[:2], "categorie", "categorie_slug", *_SOUS_CATEGORY_COLUMNS[3:]),
        validated.rows,
    )
    conn.execute(
        f"UPDATE {stage} s SET categorie_id = c.id FROM category_categorie c WHERE c.slug = s.categorie_slug"
    )
    errors = _reject(
        conn,
        stage,
        "s.categorie_id IS NULL",
        "categorie",
        "'unknown categorie ' || s.categorie || ' (no category with slug ' || s.categorie_slug || ')'",
        "unknown_categorie",
    )
    conn.execute(
        f"UPDATE {stage} s SET target_id = c.id FROM subcategory_souscategorie c WHERE c.slug = s.slug"
    )
    updated, inserted = _apply(
        conn,
        table="subcategory_souscategorie",
        stage=stage,
        target_id="target_id",
        update_columns=[c for c in _SOUS_CATEGORY_COLUMNS if c != "slug"],
        insert_columns=_SOUS_CATEGORY_COLUMNS,
        insert_defaults=_TEXT_DEFAULTS,
    )
    return WriteResult(
        written_rows=_remaining(conn, stage),
        errors=errors,
        counts={"inserted": inserted, "updated": updated},
    )
