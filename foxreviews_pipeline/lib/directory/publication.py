"""A publication of the directory: a SIRENE day, a stock partition or a staff upload.

Each is a `write` that upserts establishments and syncs their ProLocalisations into one
`DirectoryChange`, audited by the blocking checks and published or held by `lib/publish.py`.
One result type, one audit, one set of figures (`DirectoryChange.figures`): the UI and the
import log show the same keys for the same facts, whoever wrote.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from foxreviews_pipeline.lib.asset_keys import ENTREPRISES, PRO_LOCALISATIONS
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.directory import change_feed
from foxreviews_pipeline.lib.directory.checks import (
    BLOCKING_CHECKS,
    MAX_INVALID_SHARE,
    ROW_CHECKS,
    audit_publication,
    merge_outcomes,
    share,
)
from foxreviews_pipeline.lib.directory.entreprises import EntrepriseCounts
from foxreviews_pipeline.lib.directory.prolocalisations import SAMPLE_SIZE, ProLocalisationCounts
from foxreviews_pipeline.lib.publish import CheckOutcome, Published, publish
from foxreviews_pipeline.lib.sirene.geography import merge_counts
from foxreviews_pipeline.lib.sirene.mapping import REJECT_INVALID_SIRET, Rejection

_REJECTED_SAMPLE_SIZE = 20
# The table each directory asset is.
TABLES = {ENTREPRISES: "enterprise_entreprise", PRO_LOCALISATIONS: "enterprise_prolocalisation"}
_ORDER = {key: i for i, key in enumerate(BLOCKING_CHECKS)}


@dataclass
class DirectoryChange:
    """What one publication did to the directory, and what its audit needs."""

    records: int = 0  # records the writer was given, rejected ones included
    entreprises: EntrepriseCounts = field(default_factory=EntrepriseCounts)
    duplicates: int = 0  # versions of a SIRET superseded by a later one in the same input
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejected_sample: list[dict[str, str | None]] = field(default_factory=list)
    invalid_sirets: list[str] = field(default_factory=list)  # rejected: not a valid SIRET
    unusable_sirets: list[str] = field(default_factory=list)  # rejected for another reason
    prolocalisations: ProLocalisationCounts = field(default_factory=ProLocalisationCounts)
    # The SIRETs the audit reads back, repeats included; a writer that audits its batches
    # as it goes (a stock partition) leaves it empty and records `batch_outcomes` instead.
    sirets: list[str] = field(default_factory=list)
    batch_outcomes: dict[tuple[str, str], list[CheckOutcome]] = field(default_factory=dict)
    extra: dict[str, int] = field(default_factory=dict)  # a writer's own figures
    # How the mapped establishments were positioned (`mapping.position_counts`, added up):
    # the positioned ones, the others by reason, and both per département.
    positions: dict[str, Any] = field(default_factory=dict)
    # The changes it appended to the change feed: entity → operation → count
    # (lib/directory/change_feed.py), filled by `publish_directory`.
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    batches: int = 0
    duration_s: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add_rejections(self, rejections: Sequence[Rejection]) -> None:
        by_reason = Counter(self.rejected_by_reason)
        for rejection in rejections:
            by_reason[rejection.reason] += 1
            siret = str(rejection.siret)
            (self.invalid_sirets if rejection.reason == REJECT_INVALID_SIRET else self.unusable_sirets).append(siret)
            if len(self.rejected_sample) < _REJECTED_SAMPLE_SIZE:
                self.rejected_sample.append(
                    {"siret": rejection.siret, "reason": rejection.reason, "message": rejection.message}
                )
        self.rejected_by_reason = dict(sorted(by_reason.items()))

    def add_batch(
        self,
        counts: EntrepriseCounts,
        prolocalisations: ProLocalisationCounts,
        outcomes: Sequence[CheckOutcome] = (),
    ) -> None:
        self.entreprises.add(counts)
        self.prolocalisations.add(prolocalisations)
        for outcome in outcomes:
            self.batch_outcomes.setdefault((outcome.asset, outcome.name), []).append(outcome)
        self.batches += 1

    def add_positions(self, counts: Mapping[str, Any]) -> None:
        if counts:
            merge_counts(self.positions, counts)

    def position_figures(self) -> dict[str, Any]:
        """`positions` (by reason), `positioned_share` of the mapped establishments, and per
        département the rows, the positioned ones and their share; nothing when no record
        was mapped (an upload, a re-run that mapped nothing again)."""
        by_reason = {k: v for k, v in self.positions.items() if k != "by_departement"}
        mapped = sum(by_reason.values())
        if not mapped:
            return {}
        return {
            "positions": by_reason,
            "positioned_share": round(by_reason.get("positioned", 0) / mapped, 4),
            "positioned_by_departement": {
                dep: {"establishments": n, "positioned": p, "share": round(p / n, 4) if n else 0.0}
                for dep, (n, p) in self.positions.get("by_departement", {}).items()
            },
        }

    def figures(self) -> dict[str, dict[str, Any]]:
        """The publication's figures per asset, plain values, the same keys for every writer."""
        counts, pl = self.entreprises, self.prolocalisations
        return {
            ENTREPRISES: {
                "records": self.records,
                "inserted": counts.inserted,
                "updated": counts.updated,
                "closed": counts.closed,
                "reopened": counts.reopened,
                "unchanged": counts.unchanged,
                "stale_skipped": counts.stale,
                "duplicates": self.duplicates,
                "rejected": self.rejected,
                "rejected_by_reason": self.rejected_by_reason,
                "rejected_sample": self.rejected_sample,
                **self.extra,
                **self.position_figures(),
                "changes": self.changes,
                "duration_s": self.duration_s,
            },
            PRO_LOCALISATIONS: {
                "establishments": pl.establishments,
                "desired": pl.desired,
                "created": pl.created,
                "reactivated": pl.reactivated,
                "deactivated": pl.deactivated,
                "deactivated_by_reason": pl.deactivated_by_reason,
                "not_published": pl.not_published,
                "unmatched": pl.unmatched,
                "unmatched_by_reason": pl.unmatched_by_reason,
                "naf2025": pl.naf2025,
                "changes": self.changes,
                "duration_s": self.duration_s,
            },
        }


def audit_change(
    conn: psycopg.Connection,
    change: DirectoryChange,
    checks: Sequence[tuple[str, str]] = tuple(BLOCKING_CHECKS),
) -> list[CheckOutcome]:
    """Every check of `checks` on a publication, in the order of `BLOCKING_CHECKS`: the row
    checks on the SIRETs it wrote (or its batches' outcomes added up), the share checks on
    the whole of it."""
    rows = [key for key in checks if key in ROW_CHECKS]
    shares = [key for key in checks if key not in ROW_CHECKS]
    if change.batch_outcomes:
        outcomes = [_merged(key, change) for key in rows]
    else:
        outcomes = audit_publication(
            conn, change.sirets, records=change.records, invalid_rejected=change.invalid_sirets,
            checks=rows,
        )
    if shares:
        outcomes += audit_publication(
            conn, [], records=change.records, unusable_rejected=change.unusable_sirets,
            prolocalisations=change.prolocalisations, checks=shares,
            positions=change.positions,
        )
    return sorted(outcomes, key=lambda o: _ORDER.get((o.asset, o.name), len(_ORDER)))


def _merged(key: tuple[str, str], change: DirectoryChange) -> CheckOutcome:
    """A row check over the batches of a publication; the invalid SIRETs the mapping
    rejected count against the whole of it."""
    outcome = merge_outcomes(key, change.batch_outcomes.get(key, []))
    if key != (ENTREPRISES, "valid_identifiers"):
        return outcome
    invalid = change.invalid_sirets
    rejected_share = share(len(invalid), change.records)
    return CheckOutcome(
        outcome.asset,
        outcome.name,
        outcome.passed and rejected_share <= MAX_INVALID_SHARE,
        {
            **outcome.metadata,
            "offending": outcome.metadata["offending"] + len(invalid),
            "invalid_rejected": len(invalid),
            "rejected_share": round(rejected_share, 4),
            "sample": [*outcome.metadata["sample"], *invalid][:SAMPLE_SIZE],
        },
    )


def publish_directory(
    conn: psycopg.Connection,
    write: Callable[[psycopg.Connection], DirectoryChange],
    *,
    checks: Sequence[tuple[str, str]] = tuple(BLOCKING_CHECKS),
    partition: str | None = None,
    run_id: str | None = None,
    snapshot_if_first_load: bool = False,
) -> Published[DirectoryChange]:
    """Write, audit with `checks`, and publish or hold (`PublicationHeld`, nothing kept).

    Its changes go to the change feed in its transaction, under `partition` and `run_id`;
    with `snapshot_if_first_load`, a first load of `partition` is one snapshot marker
    (`change_feed.snapshot_if_first_load`)."""
    started = time.perf_counter()

    def marked_write(c: psycopg.Connection) -> DirectoryChange:
        if snapshot_if_first_load and partition is not None:
            change_feed.snapshot_if_first_load(c, partition)
        return write(c)

    published = publish(
        conn, marked_write, lambda c, change: audit_change(c, change, checks),
        partition=partition, run_id=run_id,
    )
    published.result.changes = published.changes
    published.result.duration_s = round(time.perf_counter() - started, 3)
    return published


def partition_rows(conn: psycopg.Connection, last_partition: str) -> dict[str, int]:
    """The rows a partition wrote last, per asset: its establishments (through the
    `last_partition` index) and their ProLocalisations."""
    entreprises, prolocalisations = one_row(
        conn.execute(
            """
            SELECT count(*), coalesce(sum(p.n), 0) FROM enterprise_entreprise e
            LEFT JOIN LATERAL (
                SELECT count(*) AS n FROM enterprise_prolocalisation p WHERE p.entreprise_id = e.id
            ) p ON true
            WHERE e.last_partition = %s
            """,
            (last_partition,),
        )
    )
    return {ENTREPRISES: int(entreprises), PRO_LOCALISATIONS: int(prolocalisations)}
