"""The first load of an empty or nearly empty directory: the staged stock written into
shadow tables and swapped in at once.

A partition written into the live tables pays, for every row, the upkeep of their secondary
indexes, their foreign keys and the change feed's triggers. On a directory holding at most
`BULK_MAX_ESTABLISHMENTS` establishments, the bulk load instead:

1. takes the publishers' lock (`lib/publish.py`): every other publish waits for it to
   end, before it reads anything; the web app's readers are not held;
2. creates the shadow tables in the schema `SHADOW`, with the live tables' columns, defaults
   and checks but only the keys the write path looks rows up by, and copies the live rows
   into them, ids kept;
3. publishes every staged partition into the shadow tables through the very path the
   partitioned backfill runs (`publish_stock_partition`: the same rules, the same audit, a
   held partition keeps nothing), several partitions at a time, the largest first, each in
   a transaction of its own. Into an empty directory every SIRET is new: the establishments
   are inserted as they are, with no key on their table while it fills (`all_new` of
   `upsert_entreprises`);
4. builds the live tables' other indexes (and the establishments' keys, when the load went
   without them: their unique indexes, made keys after), two at a time, then their foreign
   keys, triggers and privileges on the shadow tables, and the `ville_stats` view over them;
5. swaps them in, in one short transaction: the live tables' rows are checked unchanged
   since they were copied, then dropped, and the shadow tables take their place, with the
   change feed's snapshot markers.

Until the swap commits the web app reads the old tables; a crash at any point before it
leaves the directory as it was (the next bulk load drops the leftover shadow tables first),
and the swap itself is one transaction.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.catalog import table_keys
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.directory.change_feed import CHANNEL
from foxreviews_pipeline.lib.directory.publication import DirectoryChange
from foxreviews_pipeline.lib.directory.stock_load import (
    PARTITION_CHUNK_ROWS,
    publish_stock_partition,
)
from foxreviews_pipeline.lib.publish import BULK_LOAD_SETTING, PUBLISHERS_LOCK, PublicationHeld
from foxreviews_pipeline.lib.sirene.stock_staging import NOTHING_STAGED, StockFileError

SHADOW = "foxreviews_bulk"
TABLES = ("enterprise_entreprise", "enterprise_prolocalisation")
VIEW = "ville_stats"
# The change feed's tables: the load's snapshot markers are written in the shadow, and join
# the live feed at the swap.
FEED_TABLES = ("directory_publication", "directory_change")
# Up to this many establishments, a directory is loaded by the bulk path: below it, copying
# the live rows into the shadow tables and checking them unchanged at the swap takes well
# under a second, and the directory has little for its lock to hold up. Above it, the
# partitioned backfill writes the live tables (docs/architecture.md, "The SIRENE stock").
BULK_MAX_ESTABLISHMENTS = 100_000
# Indexes kept while loading, beside the keys: what the write path reads the shadow tables
# through (a partition's rows, by `last_partition`).
_LOAD_INDEXES = ("enterprise_entreprise_last_partition_idx",)
# Memory for each index build (PostgreSQL's default is 64 MB): the sorts of a national
# directory's indexes then spill less to disk.
_BUILD_MEMORY = "256MB"
# Connections building the shadow tables' indexes side by side (`_build_indexes`).
BUILD_CONNECTIONS = 2
# How long the swap waits for the web app's open transactions on the live tables.
SWAP_LOCK_TIMEOUT = "60s"


class BulkLoadRefused(RuntimeError):
    """The bulk path cannot load this directory; the message says why and what to do."""


@dataclass
class BulkLoad:
    """What a bulk load published."""

    partitions: dict[str, DirectoryChange] = field(default_factory=dict)
    held: dict[str, PublicationHeld] = field(default_factory=dict)
    live_rows: dict[str, int] = field(default_factory=dict)  # copied from the live tables
    # The directory was empty: the establishments were inserted without their keys, which
    # were built with the rest (`upsert_entreprises`' `all_new`).
    all_new: bool = False
    load_s: float = 0.0  # the partitions written into the shadow tables
    build_s: float = 0.0  # indexes, constraints, triggers and the view built
    swap_s: float = 0.0  # the swap's own transaction (readers wait at most this long)
    duration_s: float = 0.0


def refusal(conn: psycopg.Connection, *, max_establishments: int = BULK_MAX_ESTABLISHMENTS) -> str | None:
    """Why this directory cannot be bulk loaded, or None when it can."""
    # Counted up to the limit: a national directory is not read whole to say no.
    (establishments,) = one_row(
        conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM public.enterprise_entreprise LIMIT %s) e",
            (max_establishments + 1,),
        )
    )
    if establishments > max_establishments:
        return (
            f"the directory holds more than {max_establishments:,} establishments, the bulk "
            "load's limit: load the stock by partitions (sirene_stock_backfill)"
        )
    dependents = [
        name for (name,) in conn.execute(
            """
            SELECT DISTINCT v.oid::regclass::text FROM pg_depend d
            JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
            WHERE d.classid = 'pg_rewrite'::regclass
              AND d.refobjid = ANY(%(tables)s::regclass[]) AND v.oid <> ALL(%(own)s::regclass[])
            UNION
            SELECT DISTINCT conrelid::regclass::text FROM pg_constraint
            WHERE contype = 'f' AND confrelid = ANY(%(tables)s::regclass[])
              AND conrelid <> ALL(%(tables)s::regclass[])
            ORDER BY 1
            """,
            {"tables": [f"public.{t}" for t in TABLES], "own": [f"public.{t}" for t in (*TABLES, VIEW)]},
        )
    ]
    if dependents:
        return (
            f"{', '.join(dependents)} depend on the directory's tables, which the bulk load "
            "replaces: load the stock by partitions (sirene_stock_backfill)"
        )
    return None


def shadow_connection(url: str) -> psycopg.Connection:
    """A connection whose unqualified directory tables are the shadow ones."""
    return psycopg.connect(
        url, options=f"-c search_path={SHADOW},public -c {BULK_LOAD_SETTING}=on",
        application_name="foxreviews-bulk-load",
    )


def bulk_load_stock(
    url: str,
    *,
    run_id: str | None = None,
    partitions: Iterable[str] | None = None,
    workers: int = 2,
    chunk_rows: int = PARTITION_CHUNK_ROWS,
    max_establishments: int = BULK_MAX_ESTABLISHMENTS,
    on_partition: Callable[[str, DirectoryChange | PublicationHeld], None] | None = None,
) -> BulkLoad:
    """Load the staged stock's `partitions` (all of them by default) into an empty or nearly
    empty directory through shadow tables, and swap them in (`BulkLoadRefused` when the
    directory is not one). Held partitions are reported, not loaded."""
    started = time.perf_counter()
    result = BulkLoad()
    # The lock is a session's: it outlives the transactions below, and dies with the process.
    with psycopg.connect(url, autocommit=True, application_name="foxreviews-bulk-load") as guard:
        guard.execute("SELECT pg_advisory_lock(%s)", (PUBLISHERS_LOCK,))
        try:
            reason = refusal(guard, max_establishments=max_establishments)
            if reason is not None:
                raise BulkLoadRefused(reason)
            todo = _staged_partitions(guard) if partitions is None else list(partitions)
            if not todo:
                return result  # every staged partition is applied already: nothing to swap
            with guard.transaction():
                result.live_rows = _open_shadow(guard)
                fingerprint = _fingerprint(guard)
            # An empty directory: every staged SIRET is new (`upsert_entreprises`' `all_new`).
            result.all_new = not any(result.live_rows.values())
            loading = time.perf_counter()
            _load_partitions(url, todo, result, run_id, workers, chunk_rows, on_partition)
            result.load_s = time.perf_counter() - loading
            building = time.perf_counter()
            try:
                with guard.transaction():
                    _build(url, guard, all_new=result.all_new)
            except psycopg.errors.UniqueViolation as exc:
                raise BulkLoadRefused(
                    f"the stock lists one establishment in two départements "
                    f"({exc.diag.message_detail}): nothing was swapped; load the stock by "
                    "partitions (sirene_stock_backfill), which keeps its latest version"
                ) from None
            result.build_s = time.perf_counter() - building
            swapping = time.perf_counter()
            with guard.transaction():
                _swap(guard, fingerprint, [p for p in todo if p in result.partitions])
            result.swap_s = time.perf_counter() - swapping
        finally:
            guard.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SHADOW)))
            guard.execute("SELECT pg_advisory_unlock(%s)", (PUBLISHERS_LOCK,))
    result.duration_s = time.perf_counter() - started
    return result


def _staged_partitions(conn: psycopg.Connection) -> list[str]:
    """The partitions with rows still to apply, the largest first: a worker that takes a
    large département last would leave the others idle until it ends."""
    row = conn.execute("SELECT pending_by_partition FROM sirene_stock.staged").fetchone()
    if row is None:
        raise StockFileError(NOTHING_STAGED)
    return sorted((p for p, n in row[0].items() if n), key=lambda p: (-row[0][p], p))


def _open_shadow(conn: psycopg.Connection) -> dict[str, int]:
    """The shadow tables, holding the live rows (ids kept) and the keys the write path needs
    (none on the establishments of an empty directory, whose rows are all new); a leftover of
    a crashed bulk load is dropped first. Returns the rows copied per table."""
    shadow = sql.Identifier(SHADOW)
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(shadow))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(shadow))
    copied = {}
    for table in (*TABLES, *FEED_TABLES):
        name = sql.Identifier(SHADOW, table)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING GENERATED "
                "INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)"
            ).format(name, sql.Identifier("public", table))
        )
        if table in FEED_TABLES:
            continue  # the snapshot markers of the load, appended to the feed at the swap
        copied[table] = conn.execute(
            sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {}").format(
                name, sql.Identifier("public", table)
            )
        ).rowcount
        # New rows take ids after every live one, from the shadow's own identity.
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), coalesce(max(id), 0) + 1, false) FROM {}")
            .format(sql.Literal(f"{SHADOW}.{table}"), name)
        )
    all_new = not any(copied.values())
    for table in TABLES:
        for statement in _definitions(conn, table, during_load=True, keys=_keys_while_loading(table, all_new)):
            conn.execute(statement)
    return copied


def _keys_while_loading(table: str, all_new: bool) -> bool:
    """Whether `table`'s primary and unique keys are made before the load (else with the
    rest): the establishments of an empty directory go in without theirs (`all_new`)."""
    return not (all_new and table == "enterprise_entreprise")


def _definitions(conn: psycopg.Connection, table: str, *, during_load: bool, keys: bool = True) -> list[str]:
    """The live table's keys and indexes as statements for its shadow: the keys and
    `_LOAD_INDEXES` (`during_load`), or the rest (foreign keys, other indexes, triggers,
    privileges). Read from the catalog, so they follow the migrations. `keys` False moves
    the primary and unique keys from the load to the rest."""
    live = f"public.{table}"
    catalog = table_keys(conn, [live])
    own: str = one_row(conn.execute("SELECT %s::regclass::text", (live,)))[0]
    # Its own keys (not the foreign keys of other tables to it), unique ones first.
    own_keys = sorted(
        ((n, kind, definition) for t, n, kind, definition in catalog.constraints if t == own),
        key=lambda k: (k[1] == "f", k[1] != "u", k[0]),
    )
    indexes = list(catalog.indexes)
    target = f"{SHADOW}.{table}"
    statements = []
    for name, kind, definition in own_keys:
        if (kind in ("p", "u") and keys) == during_load:
            simple = _SIMPLE_KEY.match(definition)
            if kind in ("p", "u") and not during_load and simple:
                # Its index built like the others (side by side, `_build_indexes`), then
                # made the key in an instant.
                statements += [
                    f"CREATE UNIQUE INDEX {_ident(name)} ON {target} USING btree {simple.group(2)}",
                    f"ALTER TABLE {target} ADD CONSTRAINT {_ident(name)} {simple.group(1)} USING INDEX {_ident(name)}",
                ]
                continue
            statements.append(
                f"ALTER TABLE {target} ADD CONSTRAINT {_ident(name)} {definition}"
            )
    for name, definition in indexes:
        if (name in _LOAD_INDEXES) == during_load:
            statements.append(_retarget(definition, table))
    if not during_load:
        statements += [
            _retarget(definition, table) for (definition,) in conn.execute(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
                "AND NOT tgisinternal ORDER BY tgname",
                (live,),
            )
        ]
        statements += [
            grant for (grant,) in conn.execute(
                """
                SELECT format('GRANT %%s ON %%s TO %%s', a.privilege_type, %s::text,
                              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
                FROM pg_class c, aclexplode(c.relacl) a
                WHERE c.oid = %s::regclass AND a.grantee <> c.relowner
                """,
                (target, live),
            )
        ]
    return statements


# A primary or unique key on plain columns, as `pg_get_constraintdef` gives it (one with
# options, INCLUDE or DEFERRABLE is added as it is).
_SIMPLE_KEY = re.compile(r"^(PRIMARY KEY|UNIQUE) (\([^()]*\))$")


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _retarget(definition: str, table: str) -> str:
    """An index's or trigger's definition on the live table, made for its shadow."""
    retargeted, n = re.subn(
        rf" ON (?:public\.)?{table} ", f" ON {SHADOW}.{table} ", definition, count=1
    )
    if n != 1:
        raise RuntimeError(f"cannot read the definition {definition!r} of {table}")
    return retargeted


def _fingerprint(conn: psycopg.Connection) -> tuple[int, ...]:
    """The live tables' rows, summed up: any change to any of them changes it (cheap on a
    directory the bulk path accepts)."""
    parts = sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {t}), (SELECT coalesce(sum(hashtextextended(r::text, 0)), 0) FROM {t} r)")
        .format(t=sql.Identifier("public", table))
        for table in TABLES
    )
    return tuple(int(v) for v in one_row(conn.execute(sql.SQL("SELECT {}").format(parts))))


def _load_partitions(
    url: str,
    partitions: list[str],
    result: BulkLoad,
    run_id: str | None,
    workers: int,
    chunk_rows: int,
    on_partition: Callable[[str, DirectoryChange | PublicationHeld], None] | None,
) -> None:
    """Each partition published into the shadow tables in a transaction of its own, `workers`
    at a time; a held one is recorded and keeps nothing."""

    def load(partition: str) -> None:
        outcome: DirectoryChange | PublicationHeld
        with shadow_connection(url) as conn:
            try:
                with conn.transaction():
                    outcome = publish_stock_partition(
                        conn, partition, run_id=run_id, chunk_rows=chunk_rows, all_new=result.all_new
                    ).result
                result.partitions[partition] = outcome
            except PublicationHeld as held:
                outcome = held
                result.held[partition] = held
        if on_partition is not None:
            on_partition(partition, outcome)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="bulk-load") as pool:
        for future in [pool.submit(load, p) for p in partitions]:
            future.result()


def _build(url: str, conn: psycopg.Connection, *, all_new: bool) -> None:
    """The rest of the live tables' definitions on the shadow tables (with the keys the load
    went without: `_keys_while_loading`), their statistics, and the `ville_stats` view over
    them. The indexes and then the statistics first, `BUILD_CONNECTIONS` at a time
    (`_build_indexes`); then, in `conn`'s transaction, the keys made from them, the foreign
    keys, triggers, privileges and the view."""
    # Read under the default search path (the live tables' references come unqualified),
    # run under the shadow's: a foreign key to `enterprise_entreprise` is to the shadow one.
    statements = [
        s for table in TABLES
        for s in _definitions(conn, table, during_load=False, keys=_keys_while_loading(table, all_new))
    ]
    (view,) = one_row(conn.execute("SELECT pg_get_viewdef('public.ville_stats'::regclass)"))
    view_indexes = [
        _retarget(index, VIEW) for (index,) in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'public.ville_stats'::regclass"
        )
    ]
    # The statistics after the indexes, on the same connections: a table's ANALYZE waits
    # for its index builds (their locks conflict), and fills a core the last build leaves.
    analyze = [sql.SQL("ANALYZE {}").format(sql.Identifier(SHADOW, t)).as_string(conn) for t in TABLES]
    _build_indexes(url, [s for s in statements if _INDEX.match(s)] + analyze)
    conn.execute(sql.SQL("SET LOCAL search_path = {}, public").format(sql.Identifier(SHADOW)))
    conn.execute(f"SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}'")
    for statement in statements:
        if not _INDEX.match(statement):
            conn.execute(statement)
    conn.execute(
        sql.SQL("CREATE MATERIALIZED VIEW {} AS {}").format(
            sql.Identifier(SHADOW, VIEW), sql.SQL(view.rstrip().rstrip(";"))
        )
    )
    for index in view_indexes:
        conn.execute(index)


_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX ")


def _build_indexes(url: str, statements: list[str], connections: int = BUILD_CONNECTIONS) -> None:
    """Index builds (and statistics) on the shadow tables, `connections` at a time, each
    committed on its own. One build leaves a core idle for part of its time (its final
    merge and the writing of the index are one process's), which another one fills. A
    failed build stops the others' next ones and is raised."""
    todo = list(reversed(statements))
    lock = threading.Lock()
    failed = threading.Event()

    def build() -> None:
        with psycopg.connect(url, autocommit=True, application_name="foxreviews-bulk-load") as conn:
            conn.execute(f"SET maintenance_work_mem = '{_BUILD_MEMORY}'")
            while not failed.is_set():
                with lock:
                    if not todo:
                        return
                    statement = todo.pop()
                try:
                    conn.execute(statement)
                except BaseException:
                    failed.set()
                    raise

    with ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="bulk-build") as pool:
        for future in [pool.submit(build) for _ in range(max(1, connections))]:
            future.result()


def _swap(conn: psycopg.Connection, fingerprint: tuple[int, ...], loaded: list[str]) -> None:
    """The shadow tables in place of the live ones, in this one transaction."""
    conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
    try:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier("public", t) for t in TABLES)
            )
        )
    except psycopg.errors.LockNotAvailable:
        raise BulkLoadRefused(
            f"the directory's tables stayed in use for more than {SWAP_LOCK_TIMEOUT} (a long "
            "transaction of the web app?): nothing was swapped; run the bulk load again"
        ) from None
    if _fingerprint(conn) != fingerprint:
        raise BulkLoadRefused(
            "the directory's tables changed during the bulk load (a write outside the "
            "pipeline's publishes): nothing was swapped; run the bulk load again"
        )
    conn.execute(sql.SQL("DROP MATERIALIZED VIEW {}").format(sql.Identifier("public", VIEW)))
    conn.execute(
        sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(sql.Identifier("public", t) for t in reversed(TABLES)))
    )
    for table in TABLES:
        conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA public").format(sql.Identifier(SHADOW, table)))
    conn.execute(sql.SQL("ALTER MATERIALIZED VIEW {} SET SCHEMA public").format(sql.Identifier(SHADOW, VIEW)))
    # The load's snapshot markers join the feed in the swap's transaction: a consumer sees
    # them with the rows they stand for.
    markers = 0
    for publication, created_at, run_id, partition in conn.execute(
        sql.SQL("SELECT id, created_at, run_id, partition FROM {} ORDER BY id").format(
            sql.Identifier(SHADOW, "directory_publication")
        )
    ).fetchall():
        markers += conn.execute(
            sql.SQL(
                "WITH p AS (INSERT INTO public.directory_publication (created_at, run_id, partition) "
                "VALUES (%s, %s, %s) RETURNING id) "
                "INSERT INTO public.directory_change (publication_id, entity, entity_id, business_key, "
                "partition, op, fields) SELECT p.id, c.entity, c.entity_id, c.business_key, c.partition, "
                "c.op, c.fields FROM {} c, p WHERE c.publication_id = %s ORDER BY c.id"
            ).format(sql.Identifier(SHADOW, "directory_change")),
            (created_at, run_id, partition, publication),
        ).rowcount
    if markers:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f'{{"changes": {markers}, "partition": "bulk"}}'))
    # The loaded partitions are applied: nothing of them is pending any more.
    conn.execute(
        "UPDATE sirene_stock.staged SET pending_by_partition = pending_by_partition - %s::text[]",
        (loaded,),
    )
