"""One SIRENE day applied to the directory: landed records → entreprises → ProLocalisations.

Plain functions over a psycopg connection; the caller owns the transaction, so a day is
applied whole or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from foxreviews_pipeline.lib.directory.entreprises import (
    SIRENE_COLUMNS,
    UpsertCounts,
    upsert_entreprises,
)
from foxreviews_pipeline.lib.directory.prolocalisations import (
    ProLocalisationCounts,
    sync_prolocalisations,
)
from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.sirene.mapping import (
    MAPPING_VERSION,
    REJECT_INVALID_SIRET,
    map_records,
)


@dataclass
class EntreprisesResult:
    records: int
    counts: UpsertCounts
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_sample: list[dict[str, str | None]] = field(default_factory=list)
    invalid_sirets: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


def _already_applied(conn: psycopg.Connection, records: Sequence[Mapping[str, Any]]) -> set[str]:
    """SIRETs whose stored row came from this very INSEE version of the record, mapped by
    the current rules: mapping them again could only give the same row."""
    stored = conn.execute(
        """
        SELECT siret, date_dernier_traitement FROM enterprise_entreprise
        WHERE siret = ANY(%s) AND source = 'sirene' AND mapping_version = %s
        """,
        ([r.get("siret") for r in records], MAPPING_VERSION),
    ).fetchall()
    if not stored:
        return set()
    versions: dict[str, datetime] = dict(stored)
    done: set[str] = set()
    for record in records:
        siret: str | None = record.get("siret")
        if siret is None:
            continue  # no stored row has a NULL siret
        treated = versions.get(siret)
        raw = record.get("dateDernierTraitementEtablissement")
        if treated is not None and raw and datetime.fromisoformat(raw) == treated:
            done.add(siret)
    return done


def apply_entreprises(
    conn: psycopg.Connection,
    records: Sequence[Mapping[str, Any]],
    *,
    partition: str,
    run_id: str | None,
) -> EntreprisesResult:
    # A day's records are hundreds of thousands of acyclic objects: the cyclic collector
    # stays off while they are compared, mapped and written (gc_pause.py).
    with paused_gc():
        done = _already_applied(conn, records)
        todo = [r for r in records if r.get("siret") not in done] if done else records
        rows, rejections = map_records(todo)
        counts = upsert_entreprises(
            conn, SIRENE_COLUMNS, rows, source="sirene", partition=partition, run_id=run_id,
            mapping_version=MAPPING_VERSION,
        )
    counts.unchanged += len(done)
    by_reason = Counter(r.reason for r in rejections)
    sample = [{"siret": r.siret, "reason": r.reason, "message": r.message} for r in rejections[:20]]
    invalid = [str(r.siret) for r in rejections if r.reason == REJECT_INVALID_SIRET]
    return EntreprisesResult(len(records), counts, dict(sorted(by_reason.items())), sample, invalid)


def partition_sirets(records: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["siret"] for r in records if r.get("siret")))


def apply_prolocalisations(
    conn: psycopg.Connection, sirets: Sequence[str], *, partition: str
) -> ProLocalisationCounts:
    with paused_gc():
        return sync_prolocalisations(conn, sirets, partition=partition)
