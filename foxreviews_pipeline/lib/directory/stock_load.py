"""The directory loaded from the staged SIRENE stock, one partition (a département) at a time.

`publish_stock_partition` reads a partition of the stock staged by
`lib/sirene/stock_staging.py` in batches of Arrow columns, maps them by the rules of a day,
keeps one row per SIRET, upserts them with the set-based write path of a day and syncs their
ProLocalisations; each batch passes the row checks before the next is written, and the
partition is audited whole and published or held as one (`lib/directory/publication.py`).
A crash or a failed check rolls the whole partition back, and re-running it converges: the
upsert skips identical rows and rows older than what is stored, and ProLocalisations are
derived from the stored establishment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from foxreviews_pipeline.lib.db.database import connect_like
from foxreviews_pipeline.lib.directory.checks import ROW_CHECKS, audit_publication
from foxreviews_pipeline.lib.directory.entreprises import (
    CREATED,
    SIRENE_COLUMNS,
    STORED,
    WRITTEN,
    upsert_entreprises,
)
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations
from foxreviews_pipeline.lib.directory.publication import DirectoryChange, publish_directory
from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.publish import Published, raise_if_held
from foxreviews_pipeline.lib.sirene.mapping import MAPPING_VERSION, map_table, position_counts
from foxreviews_pipeline.lib.sirene.stock_staging import (
    StagedStock,
    partition_counts,
    partition_tables,
    stage_stock,
)

# Rows per batch of a stock partition (one upsert statement each). Smaller batches pay the
# per-batch statements (staging, ANALYZE, ProLocalisation temp tables) more often; larger
# ones hold more rows in memory, in each of the partitions a worker runs side by side. At
# this size a worker's peak is reached, and stays, whatever the size of its départements.
PARTITION_CHUNK_ROWS = 20_000

STOCK_SOURCE = "sirene"


# The staged establishments still to apply (`e`, a row of `sirene_stock.etablissement`): those
# whose stored row did not come from this very INSEE version mapped by the current rules (a
# day's `_already_applied`, set-based). The versions are compared as INSEE writes them: the
# stored version in ISO text ("2024-03-17 04:21:27", staging's DateStyle), its space made
# INSEE's "T". Equal texts are equal versions; a version INSEE wrote otherwise (with a
# fraction, say) is only applied again, to no change. Parsing the file's text instead cost
# every staged row 2-4 µs, where this costs each stored row 0.3 µs, an empty directory none.
STILL_TO_APPLY = sql.SQL(
    "NOT EXISTS (SELECT 1 FROM enterprise_entreprise x WHERE x.siret = e.siret "
    "AND x.source = 'sirene' AND x.mapping_version = {} "
    "AND replace(x.date_dernier_traitement::text, ' ', 'T') = e.\"dateDernierTraitementEtablissement\")"
).format(sql.Literal(MAPPING_VERSION))


def stage_for_directory(
    conn: psycopg.Connection, etablissements: Path, unites_legales: Path | None, *, force: bool = False
) -> StagedStock:
    """Stage a stock (`stage_stock`), each partition's rows still to apply counted against
    the directory (`STILL_TO_APPLY`)."""
    return stage_stock(conn, etablissements, unites_legales, still_to_apply=STILL_TO_APPLY, force=force)


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


def publish_stock_partition(
    conn: psycopg.Connection,
    partition: str,
    *,
    run_id: str | None = None,
    chunk_rows: int = PARTITION_CHUNK_ROWS,
    on_batch: Callable[[DirectoryChange], None] | None = None,
    all_new: bool = False,
) -> Published[DirectoryChange]:
    """One partition (a département) of the staged stock written, audited whole by every
    blocking check and published or held (`PublicationHeld`: nothing of it is kept).
    `all_new`: none of its SIRETs is stored (`upsert_entreprises`)."""
    return publish_directory(
        conn,
        lambda c: write_stock_partition(
            c, partition, run_id=run_id, chunk_rows=chunk_rows, on_batch=on_batch, all_new=all_new
        ),
        # A partition's first load is one marker in the change feed (docs/change-feed.md).
        partition=f"stock:{partition}", run_id=run_id, snapshot_if_first_load=True,
    )


def write_stock_partition(
    conn: psycopg.Connection,
    partition: str,
    *,
    run_id: str | None = None,
    chunk_rows: int = PARTITION_CHUNK_ROWS,
    on_batch: Callable[[DirectoryChange], None] | None = None,
    all_new: bool = False,
) -> DirectoryChange:
    """The partition's staged rows, batch by batch on Arrow columns: read (by a connection
    of their own), mapped, one row per SIRET, written, their ProLocalisations synced and
    their row checks passed before the next batch, all in `conn`'s transaction.
    `all_new`: none of its SIRETs is stored (`upsert_entreprises`); a batch holds all the
    rows of each of its SIRETs (`partition_tables`), so each is written once."""
    change = DirectoryChange()
    staged, pending = partition_counts(conn, partition)
    if pending:
        _tune_session(conn)
        with paused_gc(), connect_like(conn, "foxreviews-stock") as reader:
            for table in partition_tables(reader, partition, chunk_rows=chunk_rows):
                mapped, rejections = map_table(table)
                del table  # what the mapping did not keep is let go before the write
                change.records += mapped.num_rows + len(rejections)
                change.add_rejections(rejections)
                change.add_positions(position_counts(mapped))
                unique = latest_per_siret(mapped)
                change.duplicates += mapped.num_rows - unique.num_rows
                _write_batch(
                    conn, change, unique, partition=f"stock:{partition}", run_id=run_id, all_new=all_new
                )
                if on_batch is not None:
                    on_batch(change)
    # The partition's rows the directory already held in this very version were left out
    # when the stock was staged: unchanged, and read once there.
    change.entreprises.unchanged += staged - pending
    change.records += staged - pending
    return change


def _write_batch(
    conn: psycopg.Connection,
    change: DirectoryChange,
    rows: pa.Table,
    *,
    partition: str,
    run_id: str | None,
    all_new: bool = False,
) -> None:
    """Upsert one batch, sync its ProLocalisations and pass its row checks, or stop the
    partition there (`PublicationHeld`)."""
    counts = upsert_entreprises(
        conn, SIRENE_COLUMNS, rows, source=STOCK_SOURCE, partition=partition,
        run_id=run_id, mapping_version=MAPPING_VERSION, all_new=all_new,
    )
    sirets: list[str] = rows.column("siret").to_pylist()
    written = WRITTEN if all_new else None
    # Every row of the batch is staged: the upsert holds them all as stored (`STORED`).
    prolocalisations = sync_prolocalisations(
        conn, sirets, partition=partition, written=written,
        created=None if all_new else CREATED, stored=None if all_new else STORED,
    )
    outcomes = audit_publication(conn, sirets, records=len(rows), checks=ROW_CHECKS, written=written)
    raise_if_held(outcomes)
    change.add_batch(counts, prolocalisations, outcomes)


def latest_per_siret(mapped: pa.Table) -> pa.Table:
    """One row per SIRET of a mapped Arrow table: the one with the latest
    `date_dernier_traitement` (a row with no date is the oldest; on a tie the later row
    wins), sorted by SIRET.

    ON CONFLICT cannot touch the same row twice in one statement, and a stock file may list
    a SIRET more than once. Sorting keeps the unique-index insertions local and makes every
    batch take its row locks in the same order.
    """
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
