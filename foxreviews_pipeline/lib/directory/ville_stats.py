"""The `ville_stats` materialized view: one row of directory-wide figures for the web app.

The view is refreshed CONCURRENTLY: PostgreSQL builds the new contents beside the old
ones and applies the difference, holding only an EXCLUSIVE lock on the view, which
readers' ACCESS SHARE lock does not conflict with — the web app keeps reading the previous
figures until the refresh commits. That needs a unique index on a plain column (`id`,
sql/0002_ville_stats.sql) and a view that has been populated once.

The same step refreshes the town centres derived from the directory (`refresh_town_centres`):
a town that neither geo.api.gouv.fr nor an upload gave a centre takes the median position of its active
positioned establishments.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from foxreviews_pipeline.lib.publish import publish

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


# Each town without a centre from geo.api.gouv.fr: the median latitude and longitude of its
# active establishments that have a position (an arrondissement's or a former commune's
# establishments count for the town they belong to). A town whose establishments all went
# keeps the centre it had: a stale centre is still the town's.
_REFRESH_CENTRES = """
WITH centre AS (
    SELECT coalesce(a.ville_code_insee, e.code_commune) AS code_insee,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY e.sirene_lat) AS lat,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY e.sirene_lng) AS lng
    FROM enterprise_entreprise e
    LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
    WHERE e.is_active AND e.sirene_lat IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM location_ville g
          WHERE g.code_insee = coalesce(a.ville_code_insee, e.code_commune)
            AND g.position_source IN ('geo_api', 'upload')
      )
    GROUP BY 1
)
UPDATE location_ville v
SET lat = c.lat, lng = c.lng, position_source = 'establishments', updated_at = now()
FROM centre c
WHERE v.code_insee = c.code_insee AND coalesce(v.position_source, 'establishments') = 'establishments'
  AND (v.lat, v.lng, v.position_source) IS DISTINCT FROM (c.lat, c.lng, 'establishments')
"""


def town_positions(conn: psycopg.Connection) -> dict[str, Any]:
    """The active towns by source of their centre, and how many have none."""
    rows = conn.execute(
        "SELECT position_source, count(*) FILTER (WHERE lat IS NOT NULL AND lng IS NOT NULL),"
        " count(*) FILTER (WHERE lat IS NULL OR lng IS NULL)"
        " FROM location_ville WHERE is_active GROUP BY 1"
    ).fetchall()
    return {
        "villes_positioned_by_source": {
            source: int(n) for source, n, _ in sorted(rows, key=lambda r: r[0] or "") if source and n
        },
        "villes_without_position": sum(int(missing) for _, _, missing in rows),
    }


# The towns' derived centres are a publication of their own in the change feed.
CENTRES_PARTITION = "town_centres"


def refresh_town_centres(url: str, *, run_id: str | None = None) -> dict[str, Any]:
    """Derive the centre of every town neither geo.api.gouv.fr nor an upload gave one from its establishments, in
    one transaction published like any other (`lib/publish.py`: a moved centre is a town
    change in the feed, under `CENTRES_PARTITION` and `run_id`); returns `centres_updated`,
    `changes` and `town_positions`."""
    with psycopg.connect(url, application_name=APPLICATION_NAME) as conn:
        published = publish(
            conn, lambda c: max(c.execute(_REFRESH_CENTRES).rowcount, 0), lambda c, n: [],
            partition=CENTRES_PARTITION, run_id=run_id,
        )
        conn.commit()
        return {"centres_updated": published.result, "changes": published.changes, **town_positions(conn)}


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
