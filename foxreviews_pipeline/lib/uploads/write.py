"""Writing validated upload rows, set-based, inside the caller's transaction.

Entreprises go through the same write path as SIRENE (`upsert_entreprises`, then their
ProLocalisations); villes, categories and sous-catégories through the reference tables'
writes (`lib/reference/tables.py`), staged with COPY and applied with one insert-or-update
that leaves unchanged rows alone. In every case an empty cell — or a column the file does not
have — keeps the stored value (`keep_existing_when_null`).

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

from foxreviews_pipeline.lib.asset_keys import ENTREPRISES as CHECKED_ENTREPRISES
from foxreviews_pipeline.lib.asset_keys import PRO_LOCALISATIONS
from foxreviews_pipeline.lib.db.upsert import UpsertCounts
from foxreviews_pipeline.lib.directory.checks import PERSONAL_COLUMNS, ROW_CHECKS
from foxreviews_pipeline.lib.directory.entreprises import CREATED, upsert_entreprises
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations
from foxreviews_pipeline.lib.directory.publication import DirectoryChange, publish_directory
from foxreviews_pipeline.lib.publish import publish
from foxreviews_pipeline.lib.reference import tables
from foxreviews_pipeline.lib.reference.checks import audit_named
from foxreviews_pipeline.lib.reference.communes import slugify
from foxreviews_pipeline.lib.reference.tables import (
    Table,
    resolve_categories,
    stage_rows,
    upsert_rows,
)
from foxreviews_pipeline.lib.uploads.model import RowError
from foxreviews_pipeline.lib.uploads.specs import CATEGORIES, ENTREPRISES, SOUS_CATEGORIES, VILLES
from foxreviews_pipeline.lib.uploads.validate import Validated, ValidRow

UPLOAD_SOURCE = "upload"
# The reference checks an upload of villes or of the taxonomy is audited with (not the counts
# of a whole load: an upload edits rows).
UPLOAD_AUDITS = {
    VILLES: ("villes_unique_keys", "villes_have_departement_and_region"),
    CATEGORIES: ("mapped_trades_reachable",),
    SOUS_CATEGORIES: ("mapped_trades_reachable",),
}
# What an entreprises upload reports of its publication's figures: what changed, row by row.
_COUNTED = (
    "personal_fields_withheld", "inserted", "updated", "unchanged", "closed", "reopened",
    "stale_skipped",
)


@dataclass
class WriteResult:
    written_rows: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def known_naf_codes(conn: psycopg.Connection, codes: set[str]) -> dict[str, str]:
    """code → its nomenclature, for the codes of `codes` that NAF rév. 2 or NAF 2025 lists
    (the two share no code, so a code names its nomenclature)."""
    if not codes:
        return {}
    found = conn.execute(
        "SELECT code, nomenclature FROM ref_naf_nomenclature "
        "WHERE nomenclature IN ('NAFRev2', 'NAF2025') AND code = ANY(%s)",
        (sorted(codes),),
    ).fetchall()
    return dict(found)


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
    if validated.import_type == ENTREPRISES:
        return write_entreprises(conn, validated, partition=partition, run_id=run_id)  # publishes
    # Villes and the taxonomy are published like their reference loads: written, audited by
    # the reference checks a staff edit can break, and committed only when they pass.
    return publish(
        conn,
        lambda c: writer(c, validated, partition=partition, run_id=run_id),
        audit_named(*UPLOAD_AUDITS[validated.import_type]),
        partition=partition, run_id=run_id,
    ).result


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
        stored: dict[str, bool] = dict(
            conn.execute(
                "SELECT siret, is_active FROM enterprise_entreprise WHERE siret = ANY(%s)",
                (sirets,),
            ).fetchall()
        )
        for r in rows:
            if r.values.get("is_active") is None:
                r.values["is_active"] = stored.get(r.values["siret"], True)
    if "naf_code" in columns:
        nomenclature_of = known_naf_codes(
            conn, {code for r in rows if (code := r.values.get("naf_code"))}
        )
        for r in rows:
            r.values["naf_nomenclature"] = nomenclature_of.get(r.values.get("naf_code") or "")

    def write_rows(connection: psycopg.Connection) -> DirectoryChange:
        change = DirectoryChange(records=len(rows), sirets=sirets)
        change.extra["personal_fields_withheld"] = _withhold_personal_fields(connection, rows, columns)
        counts = upsert_entreprises(
            connection,
            columns,
            (tuple(r.values.get(c) for c in columns) for r in rows),
            source=UPLOAD_SOURCE,
            partition=partition,
            run_id=run_id,
            keep_existing_when_null=True,
        )
        change.add_batch(
            counts, sync_prolocalisations(connection, sirets, partition=partition, created=CREATED)
        )
        return change

    # Staff decide row by row: the row checks apply, not the shares of INSEE data. A failed
    # one raises, and the import's transaction is rolled back whole.
    figures = publish_directory(
        conn, write_rows, checks=ROW_CHECKS, partition=partition, run_id=run_id
    ).result.figures()
    counts = {k: v for k, v in figures[CHECKED_ENTREPRISES].items() if k in _COUNTED}
    counts |= {
        f"prolocalisations_{k}": figures[PRO_LOCALISATIONS][k]
        for k in ("created", "reactivated", "deactivated")
    }
    return WriteResult(written_rows=[r.row for r in rows], counts=counts)


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

def _upsert(conn: psycopg.Connection, table: Table, stage: str) -> UpsertCounts:
    # Staff uploads never blank a stored value: an empty cell, or a column the file does not
    # have, keeps it. New rows take their ids in the file's order.
    return upsert_rows(
        conn, table, stage, keep_existing_when_null=True, from_reference=False, order_by="row_number"
    )


def _stage_upload(
    conn: psycopg.Connection,
    table: Table,
    stage: str,
    rows: Sequence[ValidRow],
    *,
    named: dict[str, str] | None = None,
    computed: dict[str, str] | None = None,
) -> None:
    """Stage the rows, numbered, under the table's columns; `named` stages a value under
    another name (staged column → the value's name)."""
    named = named or {}
    extra = {"row_number": "integer", **{c: "text" for c in named if c not in table.staged}}
    sources = [named.get(c, c) for c in [*extra, *table.staged][1:]]

    def value(r: ValidRow, name: str) -> Any:
        v = r.values.get(name)
        return Jsonb(v) if isinstance(v, list) else v

    stage_rows(
        conn,
        table,
        stage,
        ([r.row, *(value(r, c) for c in sources)] for r in rows),
        extra=extra,
        computed=computed,
        primary_key=("row_number",),
        analyze=True,
    )


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


def _remaining(conn: psycopg.Connection, stage: str) -> list[int]:
    return [
        r
        for (r,) in conn.execute(
            sql.SQL("SELECT row_number FROM {} ORDER BY row_number").format(sql.Identifier(stage))
        )
    ]


# --- villes ---------------------------------------------------------------------------------

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
    _stage_upload(
        conn, tables.VILLES, stage, validated.rows, computed={"ville_id": "bigint", "matches": "integer"}
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
    # Found by name, a ville is written under its INSEE code.
    conn.execute(
        f"UPDATE {stage} s SET code_insee = v.code_insee FROM location_ville v "
        "WHERE s.code_insee IS NULL AND v.id = s.ville_id"
    )
    counts = _upsert(conn, tables.VILLES, stage)
    # A centre staff gave is theirs: the centres derived from establishments leave it alone.
    conn.execute(
        f"UPDATE location_ville v SET position_source = 'upload' FROM {stage} s "
        "WHERE v.code_insee = s.code_insee AND s.lat IS NOT NULL AND s.lng IS NOT NULL "
        "AND v.position_source IS DISTINCT FROM 'upload'"
    )
    return WriteResult(
        written_rows=_remaining(conn, stage),
        errors=errors,
        counts={"inserted": counts.inserted, "updated": counts.updated},
    )


# --- categories and sous-catégories ---------------------------------------------------------

def write_categories(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    stage = "stage_upload_categorie"
    _stage_upload(conn, tables.CATEGORIES, stage, validated.rows)
    counts = _upsert(conn, tables.CATEGORIES, stage)
    return WriteResult(
        written_rows=_remaining(conn, stage),
        counts={"inserted": counts.inserted, "updated": counts.updated},
    )


def write_sous_categories(
    conn: psycopg.Connection, validated: Validated, *, partition: str, run_id: str | None
) -> WriteResult:
    for r in validated.rows:
        # The parent is named by its slug or its name, as staff know it.
        r.values["categorie_slug"] = slugify(r.values["categorie"])
    stage = "stage_upload_souscategorie"
    # Staged under the shared columns, `categorie` being the slug; the name as given stays for
    # the error message.
    _stage_upload(
        conn,
        tables.SOUS_CATEGORIES,
        stage,
        validated.rows,
        named={"categorie_named": "categorie", "categorie": "categorie_slug"},
    )
    resolve_categories(conn, stage)
    errors = _reject(
        conn,
        stage,
        "s.categorie_id IS NULL",
        "categorie",
        "'unknown categorie ' || s.categorie_named || ' (no category with slug ' || s.categorie || ')'",
        "unknown_categorie",
    )
    counts = _upsert(conn, tables.SOUS_CATEGORIES, stage)
    return WriteResult(
        written_rows=_remaining(conn, stage),
        errors=errors,
        counts={"inserted": counts.inserted, "updated": counts.updated},
    )
