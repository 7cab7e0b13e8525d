"""The SIRENE stock staged in PostgreSQL: the files COPYed as they are, joined by the database.

A national StockEtablissement (~40M rows) and StockUniteLegale (~28M) do not fit in a
worker's memory, and reading the whole file once per département would read it a hundred
times. So the `sirene_stock` asset COPYs both files, unchanged, into unlogged tables of the
schema `sirene_stock` (PostgreSQL's fastest way in), indexes the legal units by siren, and
checks that the two files belong together. The establishments still to apply are then
written once more, joined with their legal units' names, one table per département
(`pending`, partitioned); each département is read from its own table, sorted by SIRET as it
is read (`partition_tables`), and mapped by the same rules as a day.

The files are COPYed side by side into tables of their own (`…_loading`), the
establishments' in blocks of whole rows dealt out to `COPY_STREAMS` connections (the
server's parsing of the CSV, and the partition it computes for each row, take a core
each). The loaded tables then take the place of the previous staging in one
transaction, so a partition load never sees half a staging, and a bad pair of files leaves
the previous staging (and the directory) as it was. One staging at a time (`STAGING_LOCK`).
"""

from __future__ import annotations

import csv
import gzip
import io
import queue
import re
import threading
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.types.json import Jsonb

from foxreviews_pipeline.lib.db.database import connect_like
from foxreviews_pipeline.lib.db.upsert import analyze_stage
from foxreviews_pipeline.lib.sirene.mapping import (
    FLAT_FIELDS,
    UNITE_LEGALE_NAME_FIELDS,
)

SCHEMA = "sirene_stock"
ETABLISSEMENT_TABLE = "etablissement"
UNITE_LEGALE_TABLE = "unite_legale"
# The staged establishments the directory does not hold yet in this very version: what the
# partitions read. Recomputed at each staging, so a re-load of the same stock reads nothing.
PENDING_TABLE = "pending"

# The partition keys: metropolitan départements (Corsica as 2A and 2B), overseas
# départements and collectivities, and `autres` for establishments with no usable commune
# code. The SQL function `sirene_departement` (migrations 0006 and 0013) returns exactly these.
STOCK_PARTITION_KEYS: tuple[str, ...] = (
    *(f"{n:02d}" for n in range(1, 20)),
    "2A",
    "2B",
    *(f"{n:02d}" for n in range(21, 96)),
    *(str(n) for n in range(971, 979)),
    *(str(n) for n in range(984, 990)),
    "autres",
)

# Columns a StockEtablissement must have (the 48-column layout of older files has them all).
REQUIRED_ETABLISSEMENT_COLUMNS = (
    "siren",
    "siret",
    "codeCommuneEtablissement",
    "etatAdministratifEtablissement",
    "activitePrincipaleEtablissement",
    "statutDiffusionEtablissement",
    "dateDernierTraitementEtablissement",
)
REQUIRED_UNITE_LEGALE_COLUMNS = ("siren", *UNITE_LEGALE_NAME_FIELDS)

# A StockUniteLegale of the same extract has every siren of the StockEtablissement; a few
# missing is a purged unit, more is another extract (or another file altogether).
MAX_UNMATCHED_SHARE = 0.01
_SAMPLE = 5
_COPY_BLOCK = 1 << 20
# Connections COPYing the establishments' file, each sent whole rows in turn.
COPY_STREAMS = 2
# Blocks read ahead of each connection (memory: this many blocks per stream).
_QUEUED_BLOCKS = 4
_LOADING = "_loading"
# Held (a session's advisory lock) by the one staging that may run at a time.
STAGING_LOCK = 0x0F0C5E3
NOTHING_STAGED = "no SIRENE stock is staged: materialize the sirene_stock asset first"
# What `pending`'s join may hold in memory (per writer): the legal units' names of its share
# of a 4M-row stock hashed in one batch; and a partition's sort as it is read.
_PENDING_MEMORY = "128MB"
# Connections writing `pending`, each the establishments of its share of the sirens.
PENDING_WRITERS = 2
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class StockFileError(ValueError):
    """A stock file that cannot be staged: missing, unreadable, or not the file it should be."""


@dataclass(frozen=True)
class StagedStock:
    etablissement_file: str
    unite_legale_file: str
    fingerprint: str
    etablissements: int
    unites_legales: int
    unmatched_sirens: int
    rows_by_partition: dict[str, int] = field(default_factory=dict)
    pending_by_partition: dict[str, int] = field(default_factory=dict)
    # The same files were staged already: not copied again, only `pending` recomputed.
    already_staged: bool = False


def fingerprint(*paths: Path) -> str:
    """What identifies a pair of stock files: names, sizes and modification times."""
    parts = []
    for path in paths:
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return "|".join(parts)


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


@contextmanager
def open_csv(path: Path) -> Iterator[IO[bytes]]:
    """The CSV bytes of a stock file: plain, gzipped, or the .csv member of INSEE's zip."""
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".csv")]
            if not members:
                raise StockFileError(f"{path}: no .csv file inside the zip")
            with zf.open(members[0]) as member:
                yield member
    elif path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as stream:
            yield cast(IO[bytes], stream)
    else:
        with open(path, "rb") as stream:
            yield stream


def read_header(path: Path) -> list[str]:
    """The column names of a stock file, checked to be plain identifiers."""
    if not path.is_file():
        raise StockFileError(f"stock file not found: {path}")
    try:
        if is_parquet(path):
            names = list(pq.read_schema(path).names)
        else:
            with open_csv(path) as stream:
                first = stream.readline(1 << 16).decode("utf-8-sig").strip()
            names = next(csv.reader([first]), [])
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, pa.ArrowException) as exc:
        raise StockFileError(f"{path}: cannot be read ({exc})") from exc
    bad = [n for n in names if not _COLUMN_NAME.match(n)]
    if not names or bad:
        raise StockFileError(
            f"{path}: not a SIRENE stock file (its first line is not a header of column names"
            + (f": {bad[:3]}" if bad else "")
            + ")"
        )
    return names


def check_headers(
    etablissements: list[str], unites_legales: list[str], paths: tuple[Path, Path]
) -> None:
    etab_path, ul_path = paths
    if "siret" in unites_legales:
        raise StockFileError(
            f"{ul_path}: this is a StockEtablissement file (it has a siret column), "
            "not the StockUniteLegale file of the legal units"
        )
    missing = [c for c in REQUIRED_ETABLISSEMENT_COLUMNS if c not in etablissements]
    if missing:
        raise StockFileError(
            f"{etab_path}: not a StockEtablissement file (no column {', '.join(missing)})"
        )
    missing = [c for c in REQUIRED_UNITE_LEGALE_COLUMNS if c not in unites_legales]
    if missing:
        raise StockFileError(
            f"{ul_path}: not a StockUniteLegale file (no column {', '.join(missing)})"
        )


def _row_blocks(path: Path, columns: list[str]) -> Iterator[bytes]:
    """A stock file as blocks of whole CSV rows, without the header: read as they are from
    a CSV file (plain, gzipped or zipped), written by Arrow from a Parquet file's batches."""
    if is_parquet(path):
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=50_000, columns=columns):
                text = pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in batch.columns], names=columns)
                buffer = io.BytesIO()
                pacsv.write_csv(text, buffer, pacsv.WriteOptions(include_header=False))
                yield buffer.getvalue()
        return
    with open_csv(path) as stream:
        stream.readline()  # the header, read by `read_header`
        rest = b""
        while block := stream.read(_COPY_BLOCK):
            data = rest + block
            end = _rows_end(data)
            if end:
                yield data[:end]
            rest = data[end:]
        if rest:
            yield rest


def _rows_end(data: bytes) -> int:
    """Where the last whole row of `data` (which starts with a row) ends: after a newline
    with an even number of quotes before it (an odd number: the newline is inside a quoted
    value, as PostgreSQL's CSV reader counts them); 0 when no row ends in it."""
    end = data.rfind(b"\n")
    while end >= 0 and data.count(b'"', 0, end) % 2:
        end = data.rfind(b"\n", 0, end)
    return end + 1


# Each block is COPYed with its number in this setting, which the establishments' column
# `block` takes by default: with `position`, drawn row by row as a block is COPYed, it is the
# order of the file (the connections' rows interleave in the table).
_BLOCK_SETTING = "foxreviews.stock_block"
# Staging reads timestamps as text in ISO's form ("2024-03-17 04:21:27"), whatever the
# server's or the session's default: the directory compares versions so (`still_to_apply`).
STAGING_DATESTYLE = "ISO, YMD"
FILE_ORDER = ("block", "position")


class _Stream:
    """One connection COPYing the blocks put in its queue, each by a COPY of its own, in a
    thread (`run`); the file's line where the block it copies starts names a rejected row."""

    def __init__(self, conn: psycopg.Connection, query: sql.Composed, failed: threading.Event) -> None:
        self.conn, self.query, self.failed = conn, query, failed
        self.blocks: queue.Queue[tuple[int, int, bytes] | None] = queue.Queue(_QUEUED_BLOCKS)
        self.first_line = 0

    def run(self) -> int:
        rows, ended = 0, False
        try:
            with connect_like(self.conn, "foxreviews-stock-staging") as conn, conn.cursor() as cur:
                while (item := self.blocks.get()) is not None:
                    number, self.first_line, block = item
                    cur.execute("SELECT set_config(%s, %s, false)", (_BLOCK_SETTING, str(number)))
                    with cur.copy(self.query) as copy:
                        copy.write(block)
                    rows += cur.rowcount
                ended = True
            return rows
        finally:
            if not ended:  # failed: stop the reader, and take what it queued until it stops
                self.failed.set()
                while self.blocks.get() is not None:
                    pass

    def file_line(self, line: int) -> int:
        """The file's line of `line` of the block the stream was COPYing."""
        return self.first_line + line - 1


def _copy_file(
    conn: psycopg.Connection, table: str, columns: list[str], path: Path, streams: int = 1
) -> int:
    """COPY a stock file into `table` of `sirene_stock`, its rows dealt out in blocks to
    `streams` connections of their own (each commits its part: `table` must be committed);
    the rows copied. A row PostgreSQL's CSV reader rejects is a `StockFileError` naming the
    file's line."""
    target = sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(SCHEMA), sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    failed = threading.Event()
    workers = [_Stream(conn, target, failed) for _ in range(streams)]
    with ThreadPoolExecutor(streams, thread_name_prefix="stock-copy") as pool:
        copied = [pool.submit(w.run) for w in workers]
        try:
            line = 2  # the file's line of the first row
            blocks = _row_blocks(path, columns)
            for n, block in enumerate(blocks):
                if failed.is_set():
                    break
                workers[n % streams].blocks.put((n, line, block))
                line += block.count(b"\n")
        finally:
            for w in workers:
                w.blocks.put(None)
        rows = 0
        for worker, future in zip(workers, copied, strict=True):
            try:
                rows += future.result()
            except psycopg.errors.DataError as exc:
                raise StockFileError(f"{path}: {_rejected(exc, worker)}") from exc
    return rows


def _rejected(exc: psycopg.errors.DataError, stream: _Stream) -> str:
    """PostgreSQL's rejection of a row, its line in the block made the file's."""
    context = re.sub(  # "COPY etablissement_loading, line 3: …" → "line 1001: …"
        r"^COPY [^,]*, line (\d+)",
        lambda m: f"line {stream.file_line(int(m.group(1)))}",
        exc.diag.context or "",
    )
    return f"rejected by PostgreSQL's CSV reader: {exc.diag.message_primary} ({context})"


def _create_table(
    conn: psycopg.Connection, table: str, columns: list[str], extra: sql.Composable | None = None
) -> None:
    name = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))
    defs: list[sql.Composable] = [sql.SQL("{} text").format(sql.Identifier(c)) for c in columns]
    if extra is not None:
        defs.append(extra)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(name, sql.SQL(", ").join(defs)))


def stage_stock(
    conn: psycopg.Connection,
    etablissements: Path,
    unites_legales: Path | None,
    *,
    still_to_apply: sql.Composable,
    force: bool = False,
) -> StagedStock:
    """COPY a StockEtablissement and its StockUniteLegale into `sirene_stock`, replacing the
    previous staging; if the files do not belong together, the previous staging stays.

    `still_to_apply` is a condition on a staged establishment (`sirene_stock.etablissement
    e`): whether it is still to apply. The directory decides (`lib/directory/stock_load.py`).

    The same files staged again (same names, sizes and times; `force` to copy them anyway)
    are not copied again: only the rows still to apply are recomputed.
    `conn` must not be inside a transaction block: staging commits the tables it loads aside
    (and drops them), then replaces the previous staging in one transaction.
    """
    if unites_legales is None:
        raise StockFileError(
            f"no StockUniteLegale file for {etablissements}: without the legal units every "
            "establishment would lack its name; give unites_legales_path"
        )
    etab_columns = read_header(etablissements)
    ul_columns = read_header(unites_legales)
    check_headers(etab_columns, ul_columns, (etablissements, unites_legales))
    files = fingerprint(etablissements, unites_legales)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(%s)", (STAGING_LOCK,))
    try:
        with conn.transaction():
            current = staged_stock(conn)
            # (A staging made before the file's order was kept is made again.)
            again = (
                not force and current is not None and current["fingerprint"] == files
                and _staged_columns(conn, ETABLISSEMENT_TABLE).issuperset(FILE_ORDER)
            )
        copied = None if again else _load(conn, etablissements, unites_legales, etab_columns, ul_columns)
        # `pending` made aside (committed, by several connections) from the tables in place
        # (the same files) or loaded, then put in place with them in one transaction.
        source = "" if copied is None else _LOADING
        if copied is not None:
            # What the joins are planned by: their keys, from a small sample.
            with conn.transaction():
                analyze_stage(conn, ETABLISSEMENT_TABLE + source, ["siren", "siret", "departement"], schema=SCHEMA)
                analyze_stage(conn, UNITE_LEGALE_TABLE + source, ["siren"], schema=SCHEMA)
        pending = _build_pending(conn, still_to_apply, source)
        with conn.transaction():
            # (A scan or two of the whole staging: compiling them would take longer.)
            conn.execute("SET LOCAL jit = off")
            if copied is None:
                assert current is not None
                _put_in_place(conn, PENDING_TABLE)
                staged = StagedStock(
                    etablissements.name,
                    unites_legales.name,
                    files,
                    int(current["etablissements"]),
                    int(current["unites_legales"]),
                    int(current["unmatched_sirens"]),
                    dict(current["rows_by_partition"]),
                    pending.by_partition,
                    already_staged=True,
                )
            else:
                staged = _stage(conn, etablissements, unites_legales, files, copied, pending)
            _record(conn, staged)
    finally:
        with conn.transaction():
            _drop_loading(conn)
            conn.execute("SELECT pg_advisory_unlock(%s)", (STAGING_LOCK,))
    return staged


def _record(conn: psycopg.Connection, staged: StagedStock) -> None:
    conn.execute(
        """
        INSERT INTO sirene_stock.staged (id, etablissement_file, unite_legale_file, fingerprint,
                                         etablissements, unites_legales, unmatched_sirens,
                                         rows_by_partition, pending_by_partition)
        VALUES (true, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (id) DO UPDATE SET etablissement_file = EXCLUDED.etablissement_file,
            unite_legale_file = EXCLUDED.unite_legale_file, fingerprint = EXCLUDED.fingerprint,
            etablissements = EXCLUDED.etablissements, unites_legales = EXCLUDED.unites_legales,
            unmatched_sirens = EXCLUDED.unmatched_sirens,
            rows_by_partition = EXCLUDED.rows_by_partition,
            pending_by_partition = EXCLUDED.pending_by_partition, staged_at = now()
        """,
        (
            staged.etablissement_file,
            staged.unite_legale_file,
            staged.fingerprint,
            staged.etablissements,
            staged.unites_legales,
            staged.unmatched_sirens,
            Jsonb(staged.rows_by_partition),
            Jsonb(staged.pending_by_partition),
        ),
    )


def _drop_loading(conn: psycopg.Connection) -> None:
    for table in (ETABLISSEMENT_TABLE, UNITE_LEGALE_TABLE, PENDING_TABLE):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table + _LOADING)))


def _load(
    conn: psycopg.Connection,
    etablissements: Path,
    unites_legales: Path,
    etab_columns: list[str],
    ul_columns: list[str],
) -> tuple[int, int]:
    """Both files COPYed into the tables `…_loading` (committed, the previous staging left as
    it is), side by side: the establishments by `COPY_STREAMS` connections, the legal units
    by one more, which then indexes them by siren. The rows copied of each."""
    with conn.transaction():
        _create_table(
            conn,
            ETABLISSEMENT_TABLE + _LOADING,
            etab_columns,
            sql.SQL(
                'departement text GENERATED ALWAYS AS (sirene_departement("codeCommuneEtablissement")) '
                "STORED, "
                "block integer NOT NULL DEFAULT current_setting({})::integer, "
                "position bigint GENERATED ALWAYS AS IDENTITY"
            ).format(sql.Literal(_BLOCK_SETTING)),
        )
        _create_table(conn, UNITE_LEGALE_TABLE + _LOADING, ul_columns)

    def legal_units() -> int:
        rows = _copy_file(conn, UNITE_LEGALE_TABLE + _LOADING, ul_columns, unites_legales)
        with connect_like(conn, "foxreviews-stock-staging") as indexer:
            _index(indexer, unites_legales)
        return rows

    with ThreadPoolExecutor(1, thread_name_prefix="stock-legal-units") as pool:
        ul_rows = pool.submit(legal_units)
        etab_rows = _copy_file(conn, ETABLISSEMENT_TABLE + _LOADING, etab_columns, etablissements, COPY_STREAMS)
        return etab_rows, ul_rows.result()


def _put_in_place(conn: psycopg.Connection, table: str) -> None:
    """The loaded `table` (`…_loading`) in place of the staged one, in `conn`'s transaction."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table)))
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} RENAME TO {}").format(
            sql.Identifier(SCHEMA), sql.Identifier(table + _LOADING), sql.Identifier(table)
        )
    )


def _stage(
    conn: psycopg.Connection,
    etablissements: Path,
    unites_legales: Path,
    files: str,
    copied: tuple[int, int],
    pending: _Pending,
) -> StagedStock:
    """The loaded tables and their `pending` in place of the previous staging, checked to
    belong together, in `conn`'s transaction."""
    for table in (ETABLISSEMENT_TABLE, UNITE_LEGALE_TABLE, PENDING_TABLE):
        _put_in_place(conn, table)
    etab_rows, ul_rows = copied
    # Every staged row still to apply (a first load): `pending`'s writers counted them all.
    whole = sum(pending.by_partition.values()) == etab_rows
    unmatched, sample = (pending.unmatched, []) if whole else _unmatched(conn)
    if etab_rows and unmatched / etab_rows > MAX_UNMATCHED_SHARE:
        if not sample:
            unmatched, sample = _unmatched(conn)
        raise StockFileError(
            f"{unites_legales} does not match {etablissements}: {unmatched:,} of "
            f"{etab_rows:,} establishments have no legal unit in it (e.g. siren "
            f"{', '.join(sample)}); both files must come from the same INSEE extract"
        )
    by_partition = dict(pending.by_partition) if whole else _counts_by_partition(conn, ETABLISSEMENT_TABLE)
    return StagedStock(
        etablissements.name, unites_legales.name, files, etab_rows, ul_rows, unmatched, by_partition,
        pending.by_partition,
    )


def _counts_by_partition(conn: psycopg.Connection, table: str) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("SELECT departement, count(*) FROM {}.{} GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(SCHEMA), sql.Identifier(table)
        )
    ).fetchall()
    return {k: int(v) for k, v in rows}


@dataclass
class _Pending:
    """What `_build_pending` wrote: its rows by partition, and how many have no legal unit."""

    by_partition: dict[str, int] = field(default_factory=dict)
    unmatched: int = 0


def _build_pending(conn: psycopg.Connection, still_to_apply: sql.Composable, source: str) -> _Pending:
    """`pending_loading` (committed): the staged establishments of the tables `…{source}`
    (`sirene_stock.etablissement e`) that meet `still_to_apply` (the reader of the staging
    decides which), with their legal units' names, one table per partition; what it wrote,
    counted as it was written (no scan of it after).

    `pending` holds what a partition reads, `mapping.FLAT_FIELDS`, the legal units' names
    joined once here, and the file's order (`FILE_ORDER`). It is partitioned by `departement`:
    a partition's rows are a table of their own, read whole and sorted by SIRET as they are
    read (`partition_tables`). Joined per partition instead, each would hash every legal
    unit of the file and read pages scattered over the whole staging (a hundred times over
    for the national file); sorted whole, in one table, the rows of a 4M-row stock took 17 s
    to write where `PENDING_WRITERS` connections write them as they come in 6 s, each the
    establishments of its share of the sirens, joined with that share of the legal units.
    """
    name = sql.Identifier(SCHEMA, PENDING_TABLE + _LOADING)
    columns = [sql.SQL("{} text").format(sql.Identifier(c)) for c in FLAT_FIELDS]
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                # (The partitioned table holds no rows: its partitions are unlogged.)
                "CREATE TABLE {} ({}, departement text, block integer, position bigint, "
                "no_legal_unit boolean) "
                "PARTITION BY LIST (departement)"
            ).format(name, sql.SQL(", ").join(columns))
        )
        # Each partition's table named for the staging (`pending` is put in place by a
        # rename, its partitions keep their names).
        staging = uuid.uuid4().hex[:8]
        for key in (*STOCK_PARTITION_KEYS, None):
            conn.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} PARTITION OF {} {}").format(
                    sql.Identifier(SCHEMA, f"{PENDING_TABLE}_{staging}_{(key or 'default').lower()}"),
                    name,
                    sql.SQL("DEFAULT") if key is None else sql.SQL("FOR VALUES IN ({})").format(sql.Literal(key)),
                )
            )
        fields = _flat_fields(conn, ETABLISSEMENT_TABLE + source)

    def write(share: int) -> list[tuple[str, int, int]]:
        def mine(alias: str) -> sql.Composable:  # the writer's share of the sirens (NULL: the first's)
            return sql.SQL("(coalesce(hashtext({}), 0) & 2147483647) % {} = {}").format(
                sql.Identifier(alias, "siren"), sql.Literal(PENDING_WRITERS), sql.Literal(share)
            )

        with connect_like(conn, "foxreviews-stock-staging") as writer, writer.transaction():
            # Staging's statements are a few scans of the whole file: compiling them took
            # longer than it saved. The legal units joined by one hash of the writer's share:
            # looked up one establishment at a time through their index instead (the plan a
            # smaller memory gets), a national file's index is read at random.
            writer.execute(
                "SELECT set_config('jit', 'off', true), set_config('datestyle', %s, true), "
                "set_config('work_mem', %s, true), set_config('enable_nestloop', 'off', true)",
                (STAGING_DATESTYLE, _PENDING_MEMORY),
            )
            return writer.execute(
                sql.SQL(
                    "WITH written AS (INSERT INTO {pending} "
                    "SELECT {fields}, e.departement, e.block, e.position, u.siren IS NULL "
                    "FROM {etab} e LEFT JOIN (SELECT * FROM {ul} l WHERE {ul_mine}) u ON u.siren = e.siren "
                    "WHERE {mine} AND {still_to_apply} RETURNING departement, no_legal_unit) "
                    "SELECT departement, count(*), count(*) FILTER (WHERE no_legal_unit) FROM written GROUP BY 1"
                ).format(
                    pending=name,
                    fields=fields,
                    etab=sql.Identifier(SCHEMA, ETABLISSEMENT_TABLE + source),
                    ul=sql.Identifier(SCHEMA, UNITE_LEGALE_TABLE + source),
                    ul_mine=mine("l"),
                    mine=mine("e"),
                    still_to_apply=still_to_apply,
                )
            ).fetchall()

    written = _Pending()
    with ThreadPoolExecutor(PENDING_WRITERS, thread_name_prefix="stock-pending") as pool:
        for done in [pool.submit(write, share) for share in range(PENDING_WRITERS)]:
            for partition, rows, unmatched in done.result():
                written.by_partition[partition] = written.by_partition.get(partition, 0) + int(rows)
                written.unmatched += int(unmatched)
    written.by_partition = dict(sorted(written.by_partition.items()))
    return written


def _flat_fields(conn: psycopg.Connection, establishments: str) -> sql.Composable:
    """`mapping.FLAT_FIELDS` from the staged establishments `e` (the table `establishments`)
    and their legal units `u`; a column older files do not have is NULL."""
    etab = _staged_columns(conn, establishments)
    if not etab:
        raise StockFileError(NOTHING_STAGED)
    selected: list[sql.Composable] = []
    for name in FLAT_FIELDS:
        if name in UNITE_LEGALE_NAME_FIELDS:
            value: sql.Composable = sql.SQL("u.{}").format(sql.Identifier(name))
        elif name in etab:
            value = sql.SQL("e.{}").format(sql.Identifier(name))
        else:
            value = sql.SQL("NULL::text")
        selected.append(sql.SQL("{} AS {}").format(value, sql.Identifier(name)))
    return sql.SQL(", ").join(selected)


def _index(conn: psycopg.Connection, unites_legales: Path) -> None:
    """The loaded legal units indexed by siren (committed), or `StockFileError` when one is
    listed twice."""
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX ON {}.{} (siren)").format(
                    sql.Identifier(SCHEMA), sql.Identifier(UNITE_LEGALE_TABLE + _LOADING)
                )
            )
    except psycopg.errors.UniqueViolation as exc:
        raise StockFileError(
            f"{unites_legales}: a siren is listed more than once ({exc.diag.message_detail}); "
            "StockUniteLegale has one row per legal unit"
        ) from exc


def _unmatched(conn: psycopg.Connection) -> tuple[int, list[str]]:
    count, sample = conn.execute(
        f"""
        SELECT count(*), (array_agg(DISTINCT e.siren) FILTER (WHERE e.siren IS NOT NULL))[1:{_SAMPLE}]
        FROM sirene_stock.etablissement e
        WHERE NOT EXISTS (SELECT 1 FROM sirene_stock.unite_legale u WHERE u.siren = e.siren)
        """
    ).fetchone() or (0, [])
    return int(count), list(sample or [])


def staged_stock(conn: psycopg.Connection) -> dict[str, Any] | None:
    """What is staged now (the row of `sirene_stock.staged`), or None."""
    cur = conn.execute(
        "SELECT etablissement_file, unite_legale_file, fingerprint, etablissements, "
        "unites_legales, unmatched_sirens, rows_by_partition, pending_by_partition, staged_at "
        "FROM sirene_stock.staged"
    )
    row = cur.fetchone()
    if row is None:
        return None
    names = [d.name for d in cur.description or ()]
    return dict(zip(names, row, strict=True))


def partition_counts(conn: psycopg.Connection, partition: str) -> tuple[int, int]:
    """(rows staged, rows still to apply) for `partition` of the staged stock."""
    row = conn.execute(
        "SELECT coalesce((rows_by_partition ->> %s)::bigint, 0),"
        " coalesce((pending_by_partition ->> %s)::bigint, 0) FROM sirene_stock.staged",
        (partition, partition),
    ).fetchone()
    if row is None:
        raise StockFileError(NOTHING_STAGED)
    return int(row[0]), int(row[1])


def _staged_columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (SCHEMA, table),
    ).fetchall()
    return {r[0] for r in rows}


def _partition_query() -> sql.Composed:
    """A partition's rows still to apply (`_build_pending`), sorted by SIRET (as bytes: any
    order that keeps one SIRET's rows together will do), one SIRET's in the file's order."""
    return sql.SQL(
        'SELECT {} FROM sirene_stock.pending WHERE departement = %s ORDER BY siret COLLATE "C", {}'
    ).format(
        sql.SQL(", ").join(sql.Identifier(name) for name in FLAT_FIELDS),
        sql.SQL(", ").join(sql.Identifier(name) for name in FILE_ORDER),
    )


# COPY's CSV as Arrow reads it back: an unquoted empty field is NULL, a quoted one an empty
# string, and no other text (not "NA", not "null") is taken for a NULL.
_COPY_CSV_READ = pacsv.ReadOptions(column_names=list(FLAT_FIELDS))
_COPY_CSV_PARSE = pacsv.ParseOptions(newlines_in_values=True)
_COPY_CSV_CONVERT = pacsv.ConvertOptions(
    column_types={name: pa.string() for name in FLAT_FIELDS},
    null_values=[""],
    strings_can_be_null=True,
    quoted_strings_can_be_null=False,
)


def _parse_rows(data: bytearray) -> pa.Table:
    return pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=_COPY_CSV_READ,
        parse_options=_COPY_CSV_PARSE,
        convert_options=_COPY_CSV_CONVERT,
    )


def partition_tables(
    reader: psycopg.Connection, partition: str, *, chunk_rows: int
) -> Iterator[pa.Table]:
    """The staged establishments of one partition, joined with their legal units, as Arrow
    tables of at most `chunk_rows` rows in `mapping.FLAT_FIELDS` columns.

    The rows come through `COPY … TO STDOUT` on `reader`, a connection of their own (the
    staged tables are committed data; the writer's transaction goes on beside), and each
    batch is parsed by Arrow's CSV reader: no Python object per value, and memory bounded by
    a batch, whatever the size of the partition.
    """
    if partition not in STOCK_PARTITION_KEYS:
        raise ValueError(f"unknown stock partition {partition!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    staged = _staged_columns(reader, PENDING_TABLE)
    if not staged:
        raise StockFileError(NOTHING_STAGED)
    if not staged.issuperset((*FLAT_FIELDS, *FILE_ORDER)):
        raise StockFileError(
            "the staged stock was staged by an earlier version of the pipeline: materialize "
            "the sirene_stock asset again (the same files are not copied again)"
        )
    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(_partition_query())
    with reader.transaction(), reader.cursor() as cur:
        # The partition's sort in memory (a national file's largest spills past it).
        cur.execute("SELECT set_config('work_mem', %s, true)", (_PENDING_MEMORY,))
        yield from _batches(cur, query, partition, chunk_rows)


def _batches(cur: psycopg.Cursor, query: sql.Composed, partition: str, chunk_rows: int) -> Iterator[pa.Table]:
    with cur.copy(query, (partition,)) as copy:
        # PostgreSQL sends a COPY TO one row per message: a batch is `chunk_rows` messages,
        # gathered as they come (the server waits while a batch is written) and parsed at
        # once. Arrow's streaming reader would read up to 32 blocks ahead instead.
        # The rows come sorted by SIRET (`_partition_query`): a full batch goes on until the
        # SIRET changes, so that one SIRET's rows are never split between two batches.
        data = bytearray()
        rows = 0
        last: bytes | None = None
        while row := copy.read():
            if last is not None and _siret_field(row) != last:
                # The batch's text let go before it is handed over: only its columns stay
                # while the batch is written.
                batch, data, rows, last = _parse_rows(data), bytearray(), 0, None
                yield batch
                del batch
            data += row
            rows += 1
            if rows >= chunk_rows and last is None:
                last = _siret_field(row)  # the batch is full: it ends with this SIRET
        if rows:
            batch, data = _parse_rows(data), bytearray()
            yield batch


def _siret_field(row: Buffer) -> bytes:
    """The first field of a COPY CSV row (the SIRET), as sent: equal SIRETs give equal bytes."""
    head = bytes(row[:64])
    end = head.find(b",")
    return head if end < 0 else head[:end]
