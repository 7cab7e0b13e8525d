"""The change feed: what each publish changed, for the web app to follow (docs/change-feed.md).

Rows of `directory_change` are appended by triggers (sql/0009_change_feed.sql,
sql/0012_change_feed_publications.sql) in the publishing transaction, when the publish
marked it (`begin_publication`); a write made outside a publish appends nothing.
`end_publication` counts a publication's changes, appends the snapshot marker of a first
load, writes what its changes share (`directory_publication`: transaction, time, run id,
partition) and wakes listeners (`NOTIFY foxreviews_changes`, delivered at commit, once per
publication).

Reading goes through `directory_changes_since`, the SQL contract: changes in feed order
(writing transaction, then id), only from transactions that have ended for every reader, so
a consumer that resumes from the last id it processed never skips one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from foxreviews_pipeline.lib.db.database import one_row

CHANNEL = "foxreviews_changes"
ENTITIES = ("entreprise", "prolocalisation", "ville")
OPERATIONS = ("created", "updated", "retired", "reactivated")
# A publication's mode (`foxreviews.change_feed`): 'on' records each change; 'snapshot'
# records one marker for the whole publication (a first load, `snapshot_if_first_load`).
RECORD, SNAPSHOT = "on", "snapshot"
SNAPSHOT_ENTITY = "directory"


@dataclass(frozen=True)
class Change:
    """One row of the feed."""

    id: int
    created_at: datetime
    run_id: str | None
    partition: str | None
    entity: str
    entity_id: int | None
    siret: str | None
    business_key: str | None
    op: str
    fields: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.created_at.isoformat(),
            "run_id": self.run_id,
            "partition": self.partition,
            "entity": self.entity,
            "entity_id": self.entity_id,
            "siret": self.siret,
            "business_key": self.business_key,
            "op": self.op,
            "fields": self.fields,
        }

    def line(self) -> str:
        """One line for people: id, entity, operation, key, partition, fields changed."""
        fields = ",".join(self.fields) if self.fields and self.op == "updated" else ""
        return "\t".join(
            str(v) for v in (
                self.id, self.entity, self.op, self.business_key or "", self.partition or "", fields
            )
        )


_COLUMNS = "id, created_at, run_id, partition, entity, entity_id, siret, business_key, op, fields"


def changes_since(
    conn: psycopg.Connection, after: int = 0, *, limit: int = 1000, entity: str | None = None
) -> list[Change]:
    """The changes after change `after` in feed order, at most `limit` (`follow`)."""
    return list(follow(conn, after, limit=limit, entity=entity))


def follow(
    conn: psycopg.Connection, after: int = 0, *, limit: int | None = None,
    entity: str | None = None, batch: int = 1000,
) -> Iterator[Change]:
    """Every change after `after` the horizon lets through (at most `limit`), in feed
    order, read `batch` at a time."""
    left = limit
    while left is None or left > 0:
        # Filtered by entity, the next `left` changes may all be of others: a whole batch.
        size = batch if left is None or entity is not None else min(batch, left)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM directory_changes_since(%s, %s)", (after, size)
        ).fetchall()
        if not rows:
            return
        for row in rows:
            change = Change(*row)
            after = change.id
            if entity is not None and change.entity != entity and change.entity != SNAPSHOT_ENTITY:
                continue
            yield change
            if left is not None:
                left -= 1
                if left == 0:
                    return


@dataclass(frozen=True)
class Mark:
    """A publication's id in the feed, and the marks of its transaction it replaced."""

    publication: int
    # mode, partition, run id, publication (of a publish inside a publish)
    previous: tuple[str, str, str, str]


def begin_publication(
    conn: psycopg.Connection, *, partition: str | None = None, run_id: str | None = None
) -> Mark:
    """Mark the current transaction as a publish that records its changes, under a
    publication id reserved now (its `directory_publication` row is written at the end,
    when it appended anything)."""
    previous = one_row(
        conn.execute(
            """
            SELECT coalesce(current_setting('foxreviews.change_feed', true), ''),
                   coalesce(current_setting('foxreviews.partition', true), ''),
                   coalesce(current_setting('foxreviews.run_id', true), ''),
                   coalesce(current_setting('foxreviews.publication', true), ''),
                   nextval(pg_get_serial_sequence('directory_publication', 'id'))
            """
        )
    )
    conn.execute(
        "SELECT set_config('foxreviews.change_feed', %s, true), "
        "set_config('foxreviews.partition', coalesce(%s, ''), true), "
        "set_config('foxreviews.run_id', coalesce(%s, ''), true), "
        "set_config('foxreviews.publication', %s, true)",
        (RECORD, partition, run_id, str(previous[4])),
    )
    return Mark(publication=previous[4], previous=(previous[0], previous[1], previous[2], previous[3]))


def snapshot_if_first_load(conn: psycopg.Connection, partition: str) -> bool:
    """Record this publication as one snapshot marker when no establishment was written by
    `partition` yet (a stock partition's first load): True if so. Every row it writes then
    carries `last_partition = partition`, which is what the marker tells a consumer to read."""
    first = not one_row(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM enterprise_entreprise WHERE last_partition = %s)",
            (partition,),
        )
    )[0]
    if first:
        conn.execute("SELECT set_config('foxreviews.change_feed', %s, true)", (SNAPSHOT,))
    return first


def end_publication(conn: psycopg.Connection, mark: Mark) -> dict[str, dict[str, int]]:
    """The changes this publication appended, by entity and operation; appends the snapshot
    marker of a snapshot publication, and, when anything was appended, writes the
    publication (run id, partition, time, transaction) and notifies listeners (delivered at
    commit: a publication rolled back notifies nothing)."""
    mode = one_row(conn.execute("SELECT current_setting('foxreviews.change_feed', true)"))[0]
    if mode == SNAPSHOT:
        conn.execute(
            """
            INSERT INTO directory_change (publication_id, entity, business_key, op)
            VALUES (%s, %s, nullif(current_setting('foxreviews.partition', true), ''), 'snapshot')
            """,
            (mark.publication, SNAPSHOT_ENTITY),
        )
    counts: dict[str, dict[str, int]] = {}
    for entity, op, n in conn.execute(
        "SELECT entity, op, changes FROM directory_publication_changes(%s) ORDER BY 1, 2",
        (mark.publication,),
    ):
        counts.setdefault(entity, {})[op] = n
    if counts:
        conn.execute(
            """
            INSERT INTO directory_publication (id, run_id, partition) OVERRIDING SYSTEM VALUE
            VALUES (%s, nullif(current_setting('foxreviews.run_id', true), ''),
                    nullif(current_setting('foxreviews.partition', true), ''))
            """,
            (mark.publication,),
        )
        total = sum(n for ops in counts.values() for n in ops.values())
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (CHANNEL, json.dumps({"changes": total, "partition": _partition(conn)})),
        )
    # Back to the caller's marks: what it writes next in this transaction is not this publish.
    conn.execute(
        "SELECT set_config('foxreviews.change_feed', %s, true), "
        "set_config('foxreviews.partition', %s, true), set_config('foxreviews.run_id', %s, true), "
        "set_config('foxreviews.publication', %s, true)",
        mark.previous,
    )
    return counts


def _partition(conn: psycopg.Connection) -> str | None:
    value: str | None = one_row(
        conn.execute("SELECT nullif(current_setting('foxreviews.partition', true), '')")
    )[0]
    return value


def purge_changes(conn: psycopg.Connection, before: datetime, *, dry_run: bool = False) -> int:
    """Delete (or, in a dry run, count) the changes published before `before`, and the
    publications left without any; the newest change of the feed is always kept, so that a
    consumer that is up to date can still resume."""
    condition = """
        p.id = c.publication_id AND p.created_at < %(before)s
        AND c.id IS DISTINCT FROM (
            SELECT c.id FROM directory_change c JOIN directory_publication p ON p.id = c.publication_id
            WHERE p.xid = (SELECT max(xid) FROM directory_publication)
            ORDER BY c.id DESC LIMIT 1
        )
    """
    if dry_run:
        counted: int = one_row(
            conn.execute(
                f"SELECT count(*) FROM directory_change c, directory_publication p WHERE {condition}",
                {"before": before},
            )
        )[0]
        return counted
    deleted = conn.execute(
        f"DELETE FROM directory_change c USING directory_publication p WHERE {condition}",
        {"before": before},
    ).rowcount
    conn.execute(
        "DELETE FROM directory_publication p WHERE p.created_at < %s "
        "AND NOT EXISTS (SELECT FROM directory_change c WHERE c.publication_id = p.id)",
        (before,),
    )
    return deleted
