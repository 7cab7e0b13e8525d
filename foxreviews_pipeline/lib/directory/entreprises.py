"""The set-based write path of `enterprise_entreprise` (one row per SIRET).

Rows are COPYed into a temporary staging table, rows identical to what is stored are
dropped from it, and the rest goes in with one `INSERT … ON CONFLICT (siret) DO UPDATE`
(both from `lib/db/upsert.py`).
The caller owns the transaction: a partition is written whole or not at all. Re-running
the same rows touches no row (not even a row lock), which is also why a re-run is fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from foxreviews_pipeline.lib.db.arrays import TextArray
from foxreviews_pipeline.lib.db.copy import copy_rows, copy_table, drop_temp
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.db.upsert import analyze_stage, new_value, stage, upsert_statement
from foxreviews_pipeline.lib.directory.prolocalisations import RESOLUTION_COLUMNS
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS

# What SIRENE ingestion writes, in the mapping's order; `naf_libelle` is looked up from
# ref_naf_nomenclature.
SIRENE_COLUMNS: tuple[str, ...] = ENTREPRISE_COLUMNS

_STAGE = "stage_entreprise"
# The nomenclature of a row that does not name one (staff uploads).
_DEFAULT_NOMENCLATURE = "NAFRev2"
_EXISTING = "stage_entreprise_existing"
# The rows an upsert of new establishments (`all_new`) stored, as stored.
WRITTEN = "stage_entreprise_written"
# The ids of the establishments an upsert created (the others' ids are in no such table): they
# have no ProLocalisation yet (`sync_prolocalisations`' `created`).
CREATED = "stage_entreprise_created"
# Every establishment an upsert staged, as stored once it ran (what their pages are resolved
# from: `sync_prolocalisations`' `stored`), read back from the upsert itself rather than
# looked up again.
STORED = "stage_entreprise_stored"


@dataclass
class EntrepriseCounts:
    """What an upsert of establishments did, row by row."""

    staged: int = 0
    inserted: int = 0
    updated: int = 0
    closed: int = 0
    reopened: int = 0
    unchanged: int = 0
    stale: int = 0  # older than what is stored: never applied

    @property
    def changed(self) -> int:
        return self.inserted + self.updated

    def add(self, other: EntrepriseCounts) -> None:
        for name in ("staged", "inserted", "updated", "closed", "reopened", "unchanged", "stale"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def naf_labels(conn: psycopg.Connection) -> dict[tuple[str | None, str | None], str]:
    """(nomenclature, code) → libellé, for every code of the NAF nomenclatures."""
    return {
        (nomenclature, code): libelle
        for nomenclature, code, libelle in conn.execute(
            "SELECT nomenclature, code, libelle FROM ref_naf_nomenclature"
        )
    }


def _noting_sirets(
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str],
    sirets: list[str],
    labels: dict[tuple[str | None, str | None], str] | None,
) -> Iterator[Sequence[Any]]:
    """The rows, each SIRET noted in `sirets` as it goes by, and its NAF libellé appended
    when `labels` are given."""
    siret_at = columns.index("siret")
    if labels is None:
        for row in rows:
            sirets.append(row[siret_at])
            yield row
        return
    code_at = columns.index("naf_code")
    nomenclature_at = columns.index("naf_nomenclature") if "naf_nomenclature" in columns else None
    for row in rows:
        sirets.append(row[siret_at])
        nomenclature = _DEFAULT_NOMENCLATURE if nomenclature_at is None else row[nomenclature_at]
        yield (*row, labels.get((nomenclature, row[code_at])))


def _label_column(
    table: pa.Table, labels: dict[tuple[str | None, str | None], str]
) -> pa.Array:
    """The NAF libellé of each row of `table`, by (naf_nomenclature, naf_code)."""
    keys = list(labels)
    known = pa.array([f"{n}\x1f{c}" for n, c in keys], pa.string())
    nomenclature = (
        table.column("naf_nomenclature") if "naf_nomenclature" in table.column_names
        else pa.array([_DEFAULT_NOMENCLATURE] * table.num_rows, pa.string())
    )
    wanted = pc.binary_join_element_wise(nomenclature, table.column("naf_code"), "\x1f")
    found = pc.index_in(wanted, value_set=known)
    return pa.array([labels[k] for k in keys], pa.string()).take(found)


_NAF_COLUMNS = ("naf_code", "naf_nomenclature", "naf25_code", "naf_rev2_code")
_STORED_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in RESOLUTION_COLUMNS)


def _keep_rev2_code(conn: psycopg.Connection, *, naf25_given: bool) -> None:
    """Staged NAF 2025 rows whose activity only switched nomenclature keep the rév. 2 code of
    the stored row, so that their trade stays the one it was (docs/data-model.md, "NAF 2025").

    A switch alone: the stored row is rév. 2 and its NAF 2025 code is the staged code (or,
    when it has none, INSEE's correspondence pairs its rév. 2 code with the staged code), or
    the stored row is NAF 2025 already with the same code. Any other NAF 2025 row is a real
    change of activity, mapped through NAF 2025."""
    if not naf25_given:
        return
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s
            SET naf_rev2_code = CASE WHEN e.naf_nomenclature = 'NAFRev2' THEN e.naf_code
                                     ELSE e.naf_rev2_code END
            FROM {existing} e
            WHERE e.siret = s.siret AND s.naf_nomenclature = 'NAF2025'
              AND CASE
                  WHEN e.naf_nomenclature = 'NAFRev2' THEN coalesce(
                      e.naf25_code = s.naf_code,
                      EXISTS (SELECT 1 FROM ref_naf_correspondence c
                              WHERE c.naf_rev2 = e.naf_code AND c.naf2025 = s.naf_code))
                  WHEN e.naf_nomenclature = 'NAF2025' THEN e.naf_code = s.naf_code
                  ELSE false
              END
            """
        ).format(stage=sql.Identifier(_STAGE), existing=sql.Identifier(_EXISTING))
    )


def upsert_entreprises(
    conn: psycopg.Connection,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]] | pa.Table,
    *,
    source: str,
    partition: str | None = None,
    run_id: str | None = None,
    keep_existing_when_null: bool = False,
    mapping_version: int | None = None,
    all_new: bool = False,
) -> EntrepriseCounts:
    """Insert or update establishments by SIRET; return what happened.

    `rows` are tuples in `columns` order, or an Arrow table with those columns (COPYed
    without a Python object per value).

    - `keep_existing_when_null`: an empty value never blanks a stored one (staff uploads).
      SIRENE passes False: a field INSEE now masks or removed must be cleared.
    - A row whose `date_dernier_traitement` is older than the stored one is not applied, so
      an older day re-run after a newer one cannot regress data.
    - `naf_libelle` is filled from the NAF nomenclature when the row does not carry one.
    - `mapping_version` records which SIRENE mapping rules produced the rows.
    - `all_new`: the caller knows that none of the SIRETs is stored and that each comes once
      (the bulk load of an empty directory, lib/directory/bulk_load.py). The rows are then
      COPYed as they will be stored (ids drawn) into the temporary table `WRITTEN`, which the
      ProLocalisations and the audit that follow read, and inserted from there as they are:
      no stored version looked up, no conflict resolved, so that the table needs no index on
      `siret` while it is filled. A SIRET stored all the same is found when the unique index
      is built.

    The ids of the establishments it created (none with `all_new`, whose rows are all in
    `WRITTEN`) are left in the temporary table `CREATED`, and every establishment it staged,
    as stored, in `STORED` (`RESOLUTION_COLUMNS`), for `sync_prolocalisations`.
    """
    columns = list(columns)
    if "siret" not in columns:
        raise ValueError("rows must carry a siret")
    labels: dict[tuple[str | None, str | None], str] | None = None
    if "naf_code" in columns and "naf_libelle" not in columns:
        labels = naf_labels(conn)
    # The SIRETs the stored versions are looked up by: noted as tuples are staged, read from
    # an Arrow table's column only when they are looked up (not for `all_new`).
    sirets: list[str] = []
    staged_rows: Iterable[Sequence[Any]] | pa.Table
    if isinstance(rows, pa.Table):
        if labels is not None:
            rows = rows.append_column("naf_libelle", _label_column(rows, labels))
        staged_rows = rows
    else:
        staged_rows = _noting_sirets(rows, columns, sirets, labels)
    if labels is not None:
        columns.append("naf_libelle")
    fixed: dict[str, sql.Composable] = {
        "source": sql.Literal(source),
        "last_partition": sql.Literal(partition),
        "last_run_id": sql.Literal(run_id),
    }
    if all_new:
        if "siren" not in columns:  # NOT NULL, and no stage to derive it in
            raise ValueError("new rows (all_new) must carry their siren")
        if mapping_version is not None:
            fixed["mapping_version"] = sql.Literal(int(mapping_version))
        inserted = _insert_new(conn, columns, staged_rows, fixed)
        return EntrepriseCounts(staged=inserted, inserted=inserted)

    drop_temp(conn, CREATED, STORED)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} (id bigint) ON COMMIT DROP").format(sql.Identifier(CREATED)))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM enterprise_entreprise WITH NO DATA").format(
            sql.Identifier(STORED), _STORED_COLUMNS
        )
    )
    # The rév. 2 code kept across a switch to NAF 2025 (`_keep_rev2_code`).
    keeps_rev2 = "naf_nomenclature" in columns and "naf_rev2_code" not in columns
    computed = [c for c in ("siren", "naf_libelle") if c not in columns]
    if keeps_rev2:
        computed.append("naf_rev2_code")
    counts = EntrepriseCounts(
        staged=stage(
            conn,
            _STAGE,
            like="enterprise_entreprise",
            columns=columns,
            rows=staged_rows,
            computed=dict.fromkeys(computed),
        )
    )
    if not counts.staged:
        return counts
    if "siren" not in columns:
        conn.execute(f"UPDATE {_STAGE} SET siren = left(siret, 9)")
    # Only the join key: enough for the planner to pick hash joins, a fraction of the cost.
    analyze_stage(conn, _STAGE, ["siret"])

    data_columns = [c for c in dict.fromkeys([*columns, "siren", "naf_libelle"]) if c != "siret"]
    if "naf_code" not in columns:
        data_columns.remove("naf_libelle")
    if keeps_rev2:
        data_columns.append("naf_rev2_code")
    if mapping_version is not None:
        conn.execute(f"ALTER TABLE {_STAGE} ADD COLUMN mapping_version smallint DEFAULT {int(mapping_version)}")
        data_columns.append("mapping_version")

    if isinstance(staged_rows, pa.Table):
        sirets = staged_rows.column("siret").to_pylist()
    # The stored versions of the staged SIRETs, read once through the unique index with an
    # array: every comparison below then joins two small tables, whatever the size of
    # enterprise_entreprise or the freshness of its statistics.
    drop_temp(conn, _EXISTING)
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {existing} ON COMMIT DROP AS SELECT siret, is_active, {cols} "
            "FROM enterprise_entreprise WHERE siret = ANY(%s)"
        ).format(
            existing=sql.Identifier(_EXISTING),
            cols=sql.SQL(", ").join(
                sql.Identifier(c)
                for c in dict.fromkeys(
                    [*data_columns, "date_dernier_traitement", *(_NAF_COLUMNS if keeps_rev2 else ())]
                )
                if c != "is_active"
            ),
        ),
        (TextArray(sirets),),
    )
    analyze_stage(conn, _EXISTING, ["siret"])
    if keeps_rev2:
        _keep_rev2_code(conn, naf25_given="naf25_code" in columns)

    old_cols = sql.SQL(", ").join(sql.SQL("e.{}").format(sql.Identifier(c)) for c in data_columns)
    new_cols = sql.SQL(", ").join(new_value(c, keep_existing_when_null, "s", "e") for c in data_columns)
    newer_guard = sql.SQL("true")
    if "date_dernier_traitement" in columns:
        newer_guard = sql.SQL(
            "(e.date_dernier_traitement IS NULL OR s.date_dernier_traitement IS NULL "
            "OR s.date_dernier_traitement >= e.date_dernier_traitement)"
        )

    # Drop what would not change anything: identical rows, and rows older than the stored one.
    stale = conn.execute(
        sql.SQL(
            "DELETE FROM {stage} s USING {existing} e "
            "WHERE e.siret = s.siret AND NOT {guard}"
        ).format(stage=sql.Identifier(_STAGE), existing=sql.Identifier(_EXISTING), guard=newer_guard)
    ).rowcount
    unchanged = conn.execute(
        sql.SQL(
            "DELETE FROM {stage} s USING {existing} e "
            "WHERE e.siret = s.siret AND ({old}) IS NOT DISTINCT FROM ({new})"
        ).format(stage=sql.Identifier(_STAGE), existing=sql.Identifier(_EXISTING), old=old_cols, new=new_cols)
    ).rowcount
    counts.stale, counts.unchanged = stale, unchanged

    # The stage now holds only rows that change: no comparison left for the statement.
    upserted = upsert_statement(
        "enterprise_entreprise",
        _STAGE,
        key=("siret",),
        columns=data_columns,
        keep_existing_when_null=keep_existing_when_null,
        stored=_EXISTING,
        fixed=fixed,
        only_changed=False,
        returning=sql.SQL("(t.xmax = 0) AS inserted, {}").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in RESOLUTION_COLUMNS)
        ),
    )
    statement = sql.SQL(
        """
        WITH upserted AS ({upserted}),
        created AS (INSERT INTO {created} SELECT id FROM upserted WHERE inserted),
        stored AS (INSERT INTO {stored} SELECT {columns} FROM upserted)
        SELECT
            count(*) FILTER (WHERE u.inserted),
            count(*) FILTER (WHERE NOT u.inserted),
            count(*) FILTER (WHERE NOT u.inserted AND p.is_active AND NOT u.is_active),
            count(*) FILTER (WHERE NOT u.inserted AND NOT p.is_active AND u.is_active)
        FROM upserted u LEFT JOIN {existing} p ON p.siret = u.siret
        """
    ).format(
        existing=sql.Identifier(_EXISTING), upserted=upserted, created=sql.Identifier(CREATED),
        stored=sql.Identifier(STORED), columns=_STORED_COLUMNS,
    )
    row = one_row(conn.execute(statement))
    counts.inserted, counts.updated, counts.closed, counts.reopened = row
    if counts.inserted:
        analyze_stage(conn, CREATED, ["id"])
    if counts.stale or counts.unchanged:
        # The staged rows the upsert left as they were, as stored now.
        conn.execute(
            sql.SQL(
                "INSERT INTO {stored} SELECT {columns} FROM enterprise_entreprise WHERE siret = ANY(ARRAY("
                "SELECT e.siret FROM {existing} e WHERE NOT EXISTS (SELECT FROM {stored} s WHERE s.siret = e.siret)))"
            ).format(stored=sql.Identifier(STORED), columns=_STORED_COLUMNS, existing=sql.Identifier(_EXISTING))
        )
    return counts


def _insert_new(
    conn: psycopg.Connection,
    columns: list[str],
    rows: Iterable[Sequence[Any]] | pa.Table,
    fixed: dict[str, sql.Composable],
) -> int:
    """New rows (`upsert_entreprises`' `all_new`) COPYed into `WRITTEN`, a temporary table of
    the establishments' columns whose defaults are the table's, the id drawn from the table's
    own sequence and `fixed` values; then inserted from there as they are. How many.

    What follows reads the rows back as stored from `WRITTEN`: filled from the insert's
    `RETURNING` instead, it cost four times this COPY's insert into it."""
    written = sql.Identifier(WRITTEN)
    drop_temp(conn, WRITTEN)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE enterprise_entreprise INCLUDING DEFAULTS) ON COMMIT DROP")
        .format(written)
    )
    # The sequence named once: a default calling pg_get_serial_sequence would look it up per row.
    (sequence,) = one_row(conn.execute("SELECT pg_get_serial_sequence('enterprise_entreprise', 'id')"))
    defaults = {"id": sql.SQL("nextval({}::regclass)").format(sql.Literal(sequence)), **fixed}
    conn.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            written,
            sql.SQL(", ").join(
                sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(c), v) for c, v in defaults.items()
            ),
        )
    )
    if isinstance(rows, pa.Table):
        count = copy_table(conn, WRITTEN, rows)
    else:
        count = copy_rows(conn, WRITTEN, columns, rows)
    if not count:
        return 0
    # `LIKE` made its columns the table's, in the table's order.
    conn.execute(
        sql.SQL("INSERT INTO enterprise_entreprise OVERRIDING SYSTEM VALUE SELECT * FROM {}").format(written)
    )
    # Not analyzed: what reads it (the pages' resolution, the row checks) reads it whole, and
    # the size the planner reads off its file is all their hash joins need.
    return count
