"""One SIRENE day applied to the directory: landed records → entreprises → ProLocalisations.

Plain functions over a psycopg connection; the caller owns the transaction, so a day is
applied whole or not at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from foxreviews_pipeline.lib.gc_pause import paused_gc

from foxreviews_pipeline.lib.directory.entreprises import SIRENE_COLUMNS, UpsertCounts, upsert_entreprises
from foxreviews_pipeline.lib.directory.prolocalisations import (
    ProLocalisationCounts,
    sync_prolocalisations,
)
from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS, map_records

assert tuple(ENTREPRISE_COLUMNS) == SIRENE_COLUMNS, "mapping and write path disagree on columns"


@dataclass
class EntreprisesResult:
    records: int
    counts: UpsertCounts
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_sample: list[dict] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())


def apply_entreprises(
    conn: psycopg.Connection, records: Sequence[dict], *, partition: str, run_id: str | None
) -> EntreprisesResult:
    with paused_gc():
        rows, rejections = map_records(records)
    counts = upsert_entreprises(
        conn, SIRENE_COLUMNS, rows, source="sirene", partition=partition, run_id=run_id
    )
    by_reason = Counter(r.reason for r in rejections)
    sample = [{"siret": r.siret, "reason": r.reason, "message": r.message} for r in rejections[:20]]
    return EntreprisesResult(len(records), counts, dict(sorted(by_reason.items())), sample)


def partition_sirets(records: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["siret"] for r in records if r.get("siret")))


def apply_prolocalisations(
    conn: psycopg.Connection, sirets: Sequence[str], *, partition: str
) -> ProLocalisationCounts:
    return sync_prolocalisations(conn, sirets, partition=partition)
