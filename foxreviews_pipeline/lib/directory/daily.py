"""One SIRENE day applied to the directory: landed records → entreprises → ProLocalisations.

Plain functions over a psycopg connection: `publish_day` writes, audits and publishes the
day in one transaction (`lib/directory/publication.py`), so it is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from foxreviews_pipeline.lib.directory.entreprises import (
    CREATED,
    SIRENE_COLUMNS,
    STORED,
    upsert_entreprises,
)
from foxreviews_pipeline.lib.directory.prolocalisations import sync_prolocalisations
from foxreviews_pipeline.lib.directory.publication import DirectoryChange, publish_directory
from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.publish import Published
from foxreviews_pipeline.lib.sirene.mapping import (
    MAPPING_VERSION,
    map_table,
    position_counts,
    records_table,
    treatment_times,
)

_TREATED = "dateDernierTraitementEtablissement"


def landed_table(records: pa.Table | Sequence[Mapping[str, Any]]) -> pa.Table:
    """A day's landed records as the mapping's string columns (`read_columns` gives them so;
    API-shaped records are converted)."""
    return records if isinstance(records, pa.Table) else records_table(records)


def _already_applied(conn: psycopg.Connection, table: pa.Table, partition: str) -> np.ndarray:
    """Which rows this partition already wrote from this very INSEE version of the record,
    mapped by the current rules: mapping them again could only give the same row.

    Found through the `last_partition` index: nothing to read on a day's first run, the
    day's own rows on a re-run. A row another partition wrote last is mapped again, and
    the upsert finds it unchanged."""
    siret = table.column("siret")
    stored = conn.execute(
        """
        SELECT siret, date_dernier_traitement FROM enterprise_entreprise
        WHERE last_partition = %s AND source = 'sirene' AND mapping_version = %s
          AND date_dernier_traitement IS NOT NULL
        """,
        (partition, MAPPING_VERSION),
    ).fetchall()
    if not stored:
        return np.zeros(table.num_rows, bool)
    stored_sirets, stored_times = zip(*stored, strict=True)
    at = pc.index_in(siret, value_set=pa.array(stored_sirets, pa.string()))
    version = pa.array(stored_times, pa.timestamp("us")).take(at)
    same = pc.equal(treatment_times(table.column(_TREATED)), version)
    return np.asarray(same.fill_null(False), bool)


def write_day(
    conn: psycopg.Connection,
    records: pa.Table | Sequence[Mapping[str, Any]],
    *,
    partition: str,
    run_id: str | None,
) -> DirectoryChange:
    """Map and write a day's records (`landed_table` columns, or API-shaped records) and
    sync their ProLocalisations; the caller audits and publishes (`publish_day`)."""
    table = landed_table(records)
    change = DirectoryChange(records=table.num_rows, sirets=landed_sirets(table))
    # A day's records are many objects: the cyclic collector stays off while they are
    # compared, mapped and written (gc_pause.py).
    with paused_gc():
        done = _already_applied(conn, table, partition)
        todo = table.filter(pa.array(~done)) if done.any() else table
        mapped, rejections = map_table(todo)
        counts = upsert_entreprises(
            conn, SIRENE_COLUMNS, mapped, source="sirene", partition=partition, run_id=run_id,
            mapping_version=MAPPING_VERSION,
        )
        counts.unchanged += int(done.sum())
        change.add_rejections(rejections)
        change.add_positions(position_counts(mapped))
        scope = list(dict.fromkeys(change.sirets))
        # The upsert holds the establishments it staged as stored; the day's others (rejected,
        # or applied already) are looked up.
        scope_array = pa.array(scope, pa.string())
        unstored = scope_array.filter(
            pc.invert(pc.is_in(scope_array, value_set=mapped.column("siret").combine_chunks()))
        ).to_pylist()
        prolocalisations = sync_prolocalisations(
            conn, scope, partition=partition, created=CREATED, stored=STORED, unstored=unstored
        )
    change.add_batch(counts, prolocalisations)
    return change


def publish_day(
    conn: psycopg.Connection,
    records: pa.Table | Sequence[Mapping[str, Any]],
    *,
    partition: str,
    run_id: str | None,
) -> Published[DirectoryChange]:
    """A day written, audited by every blocking check, and published or held."""
    return publish_directory(
        conn, lambda c: write_day(c, records, partition=partition, run_id=run_id),
        partition=partition, run_id=run_id,
    )


def landed_sirets(records: pa.Table | Sequence[Mapping[str, Any]]) -> list[str]:
    """Every record's SIRET, in order, repeats included (what the audit counts)."""
    siret = landed_table(records).column("siret")
    given: list[str] = siret.filter(pc.and_(pc.is_valid(siret), pc.not_equal(siret, ""))).to_pylist()
    return given
