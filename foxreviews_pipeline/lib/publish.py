"""Write–audit–publish: the one way anything reaches the tables the web app reads.

Every writer — a SIRENE day, a stock partition, a staff upload, a reference load — hands
`publish` two functions: `write` applies its changes, `audit` judges what the transaction
now sees. Both run inside one transaction (a savepoint when the caller already holds one);
when a blocking outcome failed, `PublicationHeld` is raised inside it, so the changes are
rolled back and readers never see them. A non-blocking outcome is reported, never held on.
So `blocking` means one thing everywhere: nothing is committed when a blocking check fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg

from foxreviews_pipeline.lib.directory.change_feed import begin_publication, end_publication

_Result = TypeVar("_Result")

# Held, shared, by every publish for its transaction, and alone by a bulk load of the
# directory for the whole of it (lib/directory/bulk_load.py): a publish waits for a bulk
# load to end before it reads anything, so that nothing it writes is lost by the swap.
PUBLISHERS_LOCK = 0x0F0C5E2
# Set on the sessions that publish into a bulk load's shadow tables: they do not wait for
# the lock their own bulk load holds.
BULK_LOAD_SETTING = "foxreviews.bulk_load"


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict on what a writer's transaction sees."""

    asset: str
    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    blocking: bool = True

    @property
    def label(self) -> str:
        return f"{self.asset}:{self.name}"


class PublicationHeld(Exception):
    """A blocking check failed: the writer's transaction is rolled back."""

    def __init__(self, outcomes: Sequence[CheckOutcome]):
        self.outcomes = list(outcomes)
        self.failed = [o for o in self.outcomes if o.blocking and not o.passed]
        details = ", ".join(f"{o.label} ({_offending(o)})" for o in self.failed)
        super().__init__(f"held back, nothing published: blocking check failed: {details}")


def _offending(outcome: CheckOutcome) -> str:
    count = outcome.metadata.get("offending")
    return f"{count} offending" if count is not None else "failed"


def raise_if_held(outcomes: Sequence[CheckOutcome]) -> None:
    """Raise PublicationHeld when a blocking outcome failed."""
    if any(o.blocking and not o.passed for o in outcomes):
        raise PublicationHeld(outcomes)


@dataclass
class Published(Generic[_Result]):
    """What a publication wrote, and every check outcome that let it through."""

    result: _Result
    outcomes: list[CheckOutcome]
    # The changes it appended to the change feed, by entity and operation
    # (lib/directory/change_feed.py).
    changes: dict[str, dict[str, int]] = field(default_factory=dict)


def publish(
    conn: psycopg.Connection,
    write: Callable[[psycopg.Connection], _Result],
    audit: Callable[[psycopg.Connection, _Result], Sequence[CheckOutcome]],
    *,
    partition: str | None = None,
    run_id: str | None = None,
) -> Published[_Result]:
    """Write, audit, and publish or hold, in one transaction of `conn` (a savepoint inside
    the caller's transaction, which commits). Raises `PublicationHeld`, with every outcome,
    after rolling the write back.

    The transaction is marked as a publish (of `partition`, by `run_id`), so that what it
    changes is appended to the change feed in it, and held back with it."""
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock_shared(%s) WHERE current_setting(%s, true) IS DISTINCT FROM 'on'",
            (PUBLISHERS_LOCK, BULK_LOAD_SETTING),
        )
        # A publish is many statements of a fraction of a second each: compiling one with
        # JIT (when its estimated cost passes `jit_above_cost`) takes longer than running it.
        conn.execute("SELECT set_config('jit', 'off', true)")
        mark = begin_publication(conn, partition=partition, run_id=run_id)
        result = write(conn)
        outcomes = list(audit(conn, result))
        raise_if_held(outcomes)
        changes = end_publication(conn, mark)
    return Published(result, outcomes, changes)
