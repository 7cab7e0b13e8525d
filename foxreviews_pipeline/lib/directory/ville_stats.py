"""The `ville_stats` materialized view: one row of directory-wide figures for the web app.

The view is refreshed CONCURRENTLY: PostgreSQL builds the new contents beside the old
ones and applies the difference, holding only an EXCLUSIVE lock on the view, which
readers' ACCESS SHARE lock does not conflict with — the web app keeps reading the previous
figures until the refresh commits. That needs a unique index on a plain column (`id`,
sql/0002_ville_stats.sql) and a view that has been populated once.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

VIEW = "ville_stats"
APPLICATION_NAME = "foxreviews-ville-stats"

# The figures of the view, in the order the web app documents them.
FIGURES = (
    "total_villes",
    "total_departements",
    "total_regions",
    "population_totale",
    "population_moyenne",
    "total_entreprises_actives",
    "total_prolocalisations_actives",
)


def read_ville_stats(conn: psycopg.Connection) -> dict[str, Any]:
    """The figures as stored in the view (what the web app reads), with `refreshed_at`."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {', '.join(FIGURES)}, refreshed_at FROM ville_stats WHERE id = 1"
        ).fetchone()
    if row is None:
        raise RuntimeError("ville_stats holds no row: has migration 0002 been applied?")
    return dict(row)


def refresh_ville_stats(url: str) -> dict[str, Any]:
    """Refresh the view without blocking its readers and return its new figures.

    The refresh runs in its own (autocommit) transaction, so the view's lock is held for the
    refresh only, and the figures returned are the committed ones readers now see.
    `REFRESH … CONCURRENTLY` is refused on a never-populated view; that one case falls back
    to a plain refresh (there is nothing for readers to read yet anyway).
    """
    with psycopg.connect(url, autocommit=True, application_name=APPLICATION_NAME) as conn:
        populated = conn.execute(
            "SELECT ispopulated FROM pg_matviews"
            " WHERE schemaname = current_schema() AND matviewname = %s",
            (VIEW,),
        ).fetchone()
        if populated is None:
            raise RuntimeError("the ville_stats materialized view is missing: run the migrations")
        if populated[0]:
            conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY ville_stats")
        else:
            conn.execute("REFRESH MATERIALIZED VIEW ville_stats")
        return read_ville_stats(conn)
