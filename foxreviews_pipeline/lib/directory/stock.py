"""Backfill of the directory from a StockEtablissement file.

The file (tens of millions of rows) is never held whole. The stock reader streams mapped
blocks of ~12,000 rows; each row is routed by SIRET to one of `writers` database
connections, gathered there into batches of `chunk_rows`, de-duplicated, upserted with the
same set-based write path as a daily partition, and the batch's ProLocalisations are synced
right after. Reading and mapping (Python) run while the writers' statements run in
PostgreSQL; every hand-over queue holds at most one batch, so memory stays at a few batches
whatever the file size. Because a SIRET always goes to the same writer, its versions are
applied in file order, and two writers never touch the same establishment.

Transactions: by default each batch (its establishments *and* their ProLocalisations) is
committed on its own. A crash therefore leaves part of the file applied, every
establishment in either its old or its new state and never without its ProLocalisations;
re-running the same file converges, because the upsert skips identical rows and rows older
than what is stored, and ProLocalisations are derived from the stored establishment. One
transaction for the whole file would also work in PostgreSQL (there is no undo segment to
exhaust, and WAL is recycled at checkpoints whatever the transaction length), but on a full
44-million-row stock it would hold a row lock on every changed establishment for the hour
or more the load takes (the daily import would wait behind it), keep every replaced row
version un-vacuumable until the end, and lose all the work on a crash.
`commit_every_chunk=False` gives that all-or-nothing behaviour when the caller wants it:
one writer, nothing committed, the caller owns the transaction.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from foxreviews_pipeline.lib.directory.checks import (
    BLOCKING_CHECKS,
    ENTREPRISES,
    MAX_INVALID_SHARE,
    ROW_CHECKS,
    CheckOutcome,
    PublicationHeld,
    audit_publication,
    hold,
    merge_outcomes,
    share,
)
from foxreviews_pipeline.lib.directory.entreprises import (
    SIRENE_COLUMNS,
    UpsertCounts,
    upsert_entreprises,
)
from foxreviews_pipeline.lib.directory.prolocalisations import (
    SAMPLE_SIZE,
    ProLocalisationCounts,
    sync_prolocalisations,
)
from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.sirene.mapping import (
    ENTREPRISE_COLUMNS,
    MAPPING_VERSION,
    REJECT_INVALID_SIRET,
    Rejection,
    map_table,
)
from foxreviews_pipeline.lib.sirene.stock import (
    DEFAULT_BLOCK_SIZE,
    UniteLegaleIndex,
    UnitesLegales,
    iter_mapped_stock,
    load_unites_legales,
    sirens_of,
)
from foxreviews_pipeline.lib.sirene.stock_staging import partition_counts, partition_tables

# Rows per upsert statement (per writer). Smaller batches pay the per-batch statements
# (staging, ANALYZE, ProLocalisation temp tables) more often; larger ones cost ~1 KB of Python
# objects per row in each of the three places a batch can be (being gathered, queued, being
# written): 50,000 × 2 writers kept a 4-million-row load near 1 GB of peak RSS.
DEFAULT_CHUNK_ROWS = 50_000
# A stock partition's batches: up to three are in memory at once (being read and mapped,
# queued, being written), in each of the partitions a worker runs side by side. Smaller
# than a whole file's batches so that a worker's peak is reached, and stays, whatever the
# size of its départements.
PARTITION_CHUNK_ROWS = 20_000
# One connection per core of the usual 2-core host: with a single writer, a third of the
# machine's CPU sat idle while Python read and mapped the next batch.
DEFAULT_WRITERS = 2

STOCK_SOURCE = "sirene"
_SIRET = ENTREPRISE_COLUMNS.index("siret")
_TREATED = ENTREPRISE_COLUMNS.index("date_dernier_traitement")
_REJECTED_SAMPLE_SIZE = 20


@dataclass
class StockLoadResult:
    rows_read: int = 0
    rows_written: int = 0  # inserted + updated
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0  # older than the stored row: not applied
    duplicates: int = 0  # versions of a SIRET superseded by a later one in the same batch
    closed: int = 0
    reopened: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_sample: list[dict[str, str | None]] = field(default_factory=list)
    prolocalisations_created: int = 0
    prolocalisations_reactivated: int = 0
    prolocalisations_deactivated: int = 0
    prolocalisations_deactivated_by_reason: dict[str, int] = field(default_factory=dict)
    prolocalisations_unmatched_by_reason: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    writers: int = 1
    duration_s: float = 0.0
    # For the audit of a whole partition: the SIRETs rejected as invalid, the ProLocalisation
    # counts of every batch added up, and each batch's row-check outcomes.
    invalid_sirets: list[str] = field(default_factory=list)
    unusable_sirets: list[str] = field(default_factory=list)  # rejected for another reason
    prolocalisations: ProLocalisationCounts = field(default_factory=ProLocalisationCounts)
    batch_outcomes: dict[tuple[str, str], list[CheckOutcome]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


def dedupe_latest(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One row per SIRET, the one with the latest `date_dernier_traitement` (a row with no
    date is the oldest; on a tie the later row wins), sorted by SIRET.

    ON CONFLICT cannot touch the same row twice in one statement, and a stock file may list
    a SIRET more than once. Sorting keeps the unique-index insertions local and makes
    every batch take its row locks in the same order.
    """
    latest: dict[str, tuple[Any, ...]] = dict(zip((r[_SIRET] for r in rows), rows, strict=True))
    if len(latest) != len(rows):
        latest = {}
        for row in rows:
            siret = row[_SIRET]
            kept = latest.get(siret)
            if kept is None or (
                row[_TREATED] is not None
                and (kept[_TREATED] is None or row[_TREATED] >= kept[_TREATED])
            ):
                latest[siret] = row
    return sorted(latest.values())


def _index_of(path: Path, unites_legales: UnitesLegales, block_size: int) -> UnitesLegales:
    if not isinstance(unites_legales, (str, Path)):
        return unites_legales
    index: UniteLegaleIndex = load_unites_legales(
        unites_legales, only_sirens=sirens_of(path, block_size=block_size), block_size=block_size
    )
    # Filtering StockUniteLegale block by block leaves hundreds of MB of freed Arrow
    # buffers in the allocator's cache; the index itself is a fraction of that.
    pa.default_memory_pool().release_unused()
    return index


def _connect_like(conn: psycopg.Connection) -> psycopg.Connection:
    """Another connection to the same database as the same user."""
    return psycopg.connect(
        conn.info.dsn, password=conn.info.password or None, application_name="foxreviews-stock"
    )


# A batch's staging tables are tens of MB; with the default 8 MB of temp buffers they go
# through the kernel page by page. The setting only takes before a session's first temporary
# table, hence the savepoint: a connection that already used one keeps its value.
_TEMP_BUFFERS = "128MB"


def _tune_session(conn: psycopg.Connection) -> None:
    try:
        with conn.transaction():
            conn.execute(f"SET temp_buffers = '{_TEMP_BUFFERS}'")
    except psycopg.Error:
        pass


class _Writers:
    """Writer threads, one connection and one single-slot queue each."""

    def __init__(
        self,
        connections: Sequence[psycopg.Connection],
        write: Callable[[psycopg.Connection, list[tuple[Any, ...]]], None],
    ):
        self._write = write
        # One batch at a time per writer; None tells the writer to finish.
        self._queues: list[queue.Queue[list[tuple[Any, ...]] | None]] = [
            queue.Queue(maxsize=1) for _ in connections
        ]
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(c, q), name=f"stock-writer-{i}", daemon=True)
            for i, (c, q) in enumerate(zip(connections, self._queues, strict=True))
        ]
        for thread in self._threads:
            thread.start()

    def _run(
        self, conn: psycopg.Connection, inbox: queue.Queue[list[tuple[Any, ...]] | None]
    ) -> None:
        while True:
            item = inbox.get()
            if item is None:
                return
            if self._stop.is_set():
                continue  # drain, so that the producer never blocks on a dead writer
            try:
                self._write(conn, item)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer's thread
                self._error = self._error or exc
                self._stop.set()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, writer: int, rows: list[tuple[Any, ...]]) -> None:
        while True:
            self.check()
            try:
                self._queues[writer].put(rows, timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self, *, failed: bool) -> None:
        if failed:
            self._stop.set()
        for inbox in self._queues:
            inbox.put(None)
        for thread in self._threads:
            thread.join()
        if not failed:
            self.check()


def load_stock(
    conn: psycopg.Connection,
    path: str | Path,
    *,
    unites_legales: UnitesLegales = None,
    run_id: str | None = None,
    partition: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    writers: int = DEFAULT_WRITERS,
    block_size: int = DEFAULT_BLOCK_SIZE,
    commit_every_chunk: bool = True,
    on_chunk: Callable[[StockLoadResult], None] | None = None,
) -> StockLoadResult:
    """Load a StockEtablissement file (.zip, .csv or .parquet) into `enterprise_entreprise`
    and sync the ProLocalisations of every SIRET it holds.

    - `unites_legales`: StockUniteLegale (path, index or mapping siren → names) for the
      legal-unit names; without it establishments have no name and are rejected (`no_name`).
    - `partition`: the lineage label written to `last_partition` (default
      `stock:<file name>`, which no daily partition key can collide with).
    - `commit_every_chunk`: commit after each batch (`conn` must then not be inside a
      `conn.transaction()` block), with `writers` connections (the extra ones are opened to
      the same database as `conn` and closed at the end). False: one writer, `conn` only,
      nothing committed — the caller's transaction holds the whole load. See the module
      docstring for the trade-off.
    - `on_chunk(result)`: called after each committed batch with the running totals
      (progress logs); called from a writer thread.
    """
    path = Path(path)
    index = _index_of(path, unites_legales, block_size)
    return apply_stock_rows(
        conn,
        iter_mapped_stock(path, unites_legales=index, block_size=block_size),
        partition=partition or f"stock:{path.name}",
        run_id=run_id,
        chunk_rows=chunk_rows,
        writers=writers,
        commit_every_chunk=commit_every_chunk,
        on_chunk=on_chunk,
    )


def apply_stock_rows(
    conn: psycopg.Connection,
    mapped: Iterable[tuple[list[tuple[Any, ...]], list[Rejection]]],
    *,
    partition: str,
    run_id: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    writers: int = DEFAULT_WRITERS,
    commit_every_chunk: bool = True,
    on_chunk: Callable[[StockLoadResult], None] | None = None,
) -> StockLoadResult:
    """Apply mapped stock rows ((rows, rejections) blocks) to the directory: see `load_stock`."""
    started = time.perf_counter()
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    writers = max(1, writers) if commit_every_chunk else 1
    totals = _Totals(StockLoadResult(writers=writers), started, on_chunk)

    def write(connection: psycopg.Connection, rows: list[tuple[Any, ...]]) -> None:
        counts, pl, outcomes = _write_batch(
            connection, rows, partition=partition, run_id=run_id, commit=commit_every_chunk
        )
        totals.add_batch(counts, pl, outcomes)

    pool: _Writers | None = None
    failed = True
    # The cyclic collector stays off while mapping builds millions of acyclic tuples; it
    # runs on the young objects once per batch (`_Batches._flush`).
    with paused_gc(), _writer_connections(conn, writers) as connections:
        try:
            pool = _Writers(connections, write)
            batches = _Batches(pool, writers, chunk_rows, totals.result)
            for rows, rejections in mapped:
                totals.add_read(rows, rejections)
                batches.add(rows)
            batches.flush_all()
            failed = False
        finally:
            if pool is not None:
                pool.close(failed=failed)
    return totals.finish()


def load_stock_partition(
    conn: psycopg.Connection,
    partition: str,
    *,
    run_id: str | None = None,
    chunk_rows: int = PARTITION_CHUNK_ROWS,
    on_chunk: Callable[[StockLoadResult], None] | None = None,
) -> tuple[StockLoadResult, list[CheckOutcome]]:
    """Apply one partition (a département) of the staged stock inside the caller's
    transaction, then audit it as a whole: the outcomes of every blocking check.

    Raises `PublicationHeld` when a check fails; the caller then rolls back, and nothing of
    the partition is published. `conn` must be inside a transaction block.
    """
    staged, pending = partition_counts(conn, partition)
    if pending:
        result = _apply_partition(
            conn, partition, run_id=run_id, chunk_rows=chunk_rows, on_chunk=on_chunk
        )
    else:
        result = StockLoadResult()
    # The partition's rows the directory already held in this very version were left out
    # when the stock was staged: unchanged, and read once there.
    result.unchanged += staged - pending
    result.rows_read += staged - pending
    outcomes = _partition_outcomes(conn, result)
    hold(outcomes)
    return result, outcomes


def _apply_partition(
    conn: psycopg.Connection,
    partition: str,
    *,
    run_id: str | None,
    chunk_rows: int,
    on_chunk: Callable[[StockLoadResult], None] | None,
) -> StockLoadResult:
    """The partition's staged rows, batch by batch on Arrow columns: read (by a connection
    of their own), mapped, one row per SIRET, written and their row checks run, all in the
    caller's transaction."""
    totals = _Totals(StockLoadResult(), time.perf_counter(), on_chunk)
    _tune_session(conn)
    with paused_gc(), _connect_like(conn) as reader:
        for table in partition_tables(reader, partition, chunk_rows=chunk_rows):
            mapped, rejections = map_table(table)
            totals.add_read(mapped, rejections)
            unique = latest_per_siret(mapped)
            totals.result.duplicates += mapped.num_rows - unique.num_rows
            counts, pl, outcomes = _write_batch(
                conn, unique, partition=f"stock:{partition}", run_id=run_id, commit=False
            )
            totals.add_batch(counts, pl, outcomes)
    return totals.finish()


def latest_per_siret(mapped: pa.Table) -> pa.Table:
    """`dedupe_latest` of a mapped Arrow table: one row per SIRET, the latest
    `date_dernier_traitement` (no date is the oldest; on a tie the later row), by SIRET."""
    order = pc.sort_indices(  # a stable sort: on a tie, the later row stays after
        mapped,
        sort_keys=[
            ("siret", "ascending", "at_start"),
            ("date_dernier_traitement", "ascending", "at_start"),
        ],
    )
    ordered = mapped.take(order)
    siret = ordered.column("siret").combine_chunks()
    if len(siret) < 2:
        return ordered
    # The last row of each run of one SIRET.
    last = np.ones(len(siret), bool)
    last[:-1] = np.asarray(pc.not_equal(siret.slice(0, len(siret) - 1), siret.slice(1)))
    return ordered if last.all() else ordered.filter(pa.array(last))


def _partition_outcomes(conn: psycopg.Connection, result: StockLoadResult) -> list[CheckOutcome]:
    """Every blocking check over a whole partition: the row checks, which every batch passed
    before the next was written, summed; then the shares, which only the whole partition
    can tell (invalid SIRETs rejected, villes and trades resolved)."""
    outcomes = [merge_outcomes(key, result.batch_outcomes.get(key, [])) for key in ROW_CHECKS]
    rejected_share = share(len(result.invalid_sirets), result.rows_read)
    for i, outcome in enumerate(outcomes):
        if (outcome.asset, outcome.name) == (ENTREPRISES, "valid_identifiers"):
            outcomes[i] = CheckOutcome(
                outcome.asset,
                outcome.name,
                outcome.passed and rejected_share <= MAX_INVALID_SHARE,
                {
                    **outcome.metadata,
                    "offending": outcome.metadata["offending"] + len(result.invalid_sirets),
                    "invalid_rejected": len(result.invalid_sirets),
                    "rejected_share": round(rejected_share, 4),
                    "sample": result.invalid_sirets[:SAMPLE_SIZE],
                },
            )
    outcomes += audit_publication(
        conn,
        [],
        records=result.rows_read,
        unusable_rejected=result.unusable_sirets,
        prolocalisations=result.prolocalisations,
        checks=[k for k in BLOCKING_CHECKS if k not in ROW_CHECKS],
    )
    return outcomes


def _write_batch(
    connection: psycopg.Connection,
    rows: list[tuple[Any, ...]] | pa.Table,
    *,
    partition: str,
    run_id: str | None,
    commit: bool,
) -> tuple[UpsertCounts, ProLocalisationCounts, list[CheckOutcome]]:
    """Upsert one batch, sync its ProLocalisations, audit them and (if `commit`) commit."""
    counts = upsert_entreprises(
        connection, SIRENE_COLUMNS, rows, source=STOCK_SOURCE, partition=partition,
        run_id=run_id, mapping_version=MAPPING_VERSION,
    )
    sirets: list[str] = (
        rows.column("siret").to_pylist() if isinstance(rows, pa.Table) else [r[_SIRET] for r in rows]
    )
    pl = sync_prolocalisations(connection, sirets, partition=partition)
    # Write–audit–publish per batch: a batch that fails a blocking check is rolled back
    # and stops the load; the batches committed before it passed the same checks.
    outcomes = audit_publication(connection, sirets, records=len(rows), checks=ROW_CHECKS)
    try:
        hold(outcomes)
    except PublicationHeld:
        if commit:
            connection.rollback()
        raise
    if commit:
        connection.commit()
    return counts, pl, outcomes


class _Totals:
    """The running totals of a load: rows read (producer thread), batches written (writer
    threads, under a lock)."""

    def __init__(
        self,
        result: StockLoadResult,
        started: float,
        on_chunk: Callable[[StockLoadResult], None] | None,
    ) -> None:
        self.result = result
        self._started = started
        self._on_chunk = on_chunk
        self._rejected: Counter[str] = Counter()
        self._unmatched: Counter[str] = Counter()
        self._deactivated: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add_read(self, rows: Sized, rejections: list[Rejection]) -> None:
        result = self.result
        result.rows_read += len(rows) + len(rejections)
        for rejection in rejections:
            self._rejected[rejection.reason] += 1
            if rejection.reason == REJECT_INVALID_SIRET:
                result.invalid_sirets.append(str(rejection.siret))
            else:
                result.unusable_sirets.append(str(rejection.siret))
            if len(result.rejected_sample) < _REJECTED_SAMPLE_SIZE:
                result.rejected_sample.append(
                    {
                        "siret": rejection.siret,
                        "reason": rejection.reason,
                        "message": rejection.message,
                    }
                )

    def add_batch(
        self, counts: UpsertCounts, pl: ProLocalisationCounts, outcomes: list[CheckOutcome]
    ) -> None:
        result = self.result
        with self._lock:
            result.prolocalisations.add(pl)
            for outcome in outcomes:
                result.batch_outcomes.setdefault((outcome.asset, outcome.name), []).append(outcome)
            result.chunks += 1
            result.inserted += counts.inserted
            result.updated += counts.updated
            result.unchanged += counts.unchanged
            result.stale += counts.stale
            result.closed += counts.closed
            result.reopened += counts.reopened
            result.rows_written = result.inserted + result.updated
            result.prolocalisations_created += pl.created
            result.prolocalisations_reactivated += pl.reactivated
            result.prolocalisations_deactivated += pl.deactivated
            self._unmatched.update(pl.unmatched_by_reason)
            self._deactivated.update(pl.deactivated_by_reason)
            result.duration_s = round(time.perf_counter() - self._started, 3)
            if self._on_chunk is not None:
                self._on_chunk(result)

    def finish(self) -> StockLoadResult:
        result = self.result
        result.rows_written = result.inserted + result.updated
        result.rejected_by_reason = dict(sorted(self._rejected.items()))
        result.prolocalisations_unmatched_by_reason = dict(sorted(self._unmatched.items()))
        result.prolocalisations_deactivated_by_reason = dict(sorted(self._deactivated.items()))
        result.duration_s = round(time.perf_counter() - self._started, 3)
        return result


class _Batches:
    """Mapped rows gathered per writer (a SIRET always goes to the same one) and handed
    over, de-duplicated, every `chunk_rows` rows."""

    def __init__(self, pool: _Writers, writers: int, chunk_rows: int, result: StockLoadResult):
        self._pool = pool
        self._writers = writers
        self._chunk_rows = chunk_rows
        self._result = result
        self._pending: list[list[tuple[Any, ...]]] = [[] for _ in range(writers)]
        self._flushes = 0

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        writers, chunk_rows, pending = self._writers, self._chunk_rows, self._pending
        for row in rows:
            i = hash(row[_SIRET]) % writers if writers > 1 else 0
            batch = pending[i]
            batch.append(row)
            if len(batch) >= chunk_rows:
                self._flush(i)

    def flush_all(self) -> None:
        for i in range(self._writers):
            if self._pending[i]:
                self._flush(i)

    def _flush(self, i: int) -> None:
        unique = dedupe_latest(self._pending[i])
        self._result.duplicates += len(self._pending[i]) - len(unique)
        self._pending[i] = []
        self._flushes += 1
        gc.collect(1 if self._flushes % 16 else 2)
        self._pool.put(i, unique)


@contextmanager
def _writer_connections(
    conn: psycopg.Connection, writers: int
) -> Iterator[list[psycopg.Connection]]:
    """`conn` and `writers - 1` more to the same database, tuned; the extra ones closed after."""
    connections = [conn]
    try:
        for _ in range(writers - 1):
            connections.append(_connect_like(conn))
        for connection in connections:
            _tune_session(connection)
        yield connections
    finally:
        for extra in connections[1:]:
            extra.close()
