"""ProLocalisations (entreprise × sous-catégorie × ville) for a set of establishments.

The desired state is derived from the stored establishment (which holds the newest SIRENE
data), so re-running any partition converges on the same answer. A ProLocalisation that is
no longer desired is set inactive with a reason, never deleted: its reviews and content
belong to the web app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from foxreviews_pipeline.lib.db.copy import copy_rows, drop_temp

_SCOPE = "stage_proloc_scope"


@dataclass
class ProLocalisationCounts:
    establishments: int = 0
    desired: int = 0
    created: int = 0
    reactivated: int = 0
    deactivated: int = 0
    deactivated_by_reason: dict[str, int] = field(default_factory=dict)
    unmatched_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def unmatched(self) -> int:
        return sum(self.unmatched_by_reason.values())

    @property
    def changed(self) -> int:
        return self.created + self.reactivated + self.deactivated


# Which ville an establishment is in: by INSEE code (an arrondissement or commune déléguée
# goes to its current commune); by postal code + normalised name only when the code is
# missing (`fallback_ville_id`, resolved beforehand).
_RESOLVED = f"""
    SELECT e.id AS entreprise_id, e.is_active, e.naf_code, e.naf_nomenclature, e.code_commune,
           coalesce(v.id, sc.fallback_ville_id) AS ville_id,
           m.sous_categorie_id, m.excluded_reason,
           (m.naf_code IS NOT NULL) AS naf_known,
           (sub.id IS NOT NULL AND sub.is_active AND cat.is_active) AS trade_active
    FROM {_SCOPE} sc
    JOIN enterprise_entreprise e ON e.siret = sc.siret
    LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
    LEFT JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
                              AND v.is_active
    LEFT JOIN ref_naf_mapping m ON m.nomenclature = e.naf_nomenclature AND m.naf_code = e.naf_code
    LEFT JOIN subcategory_souscategorie sub ON sub.id = m.sous_categorie_id
    LEFT JOIN category_categorie cat ON cat.id = sub.categorie_id
"""


def sync_prolocalisations(
    conn: psycopg.Connection,
    sirets: Iterable[str],
    *,
    partition: str | None = None,
    fallback: dict[str, int] | None = None,
) -> ProLocalisationCounts:
    """Create, reactivate or retire the ProLocalisations of these establishments.

    `fallback` maps a SIRET without commune code to a ville id found by postal code and
    normalised name (see `find_fallback_villes`).
    """
    drop_temp(conn, _SCOPE, "stage_proloc_resolved", "stage_proloc_desired")
    conn.execute(
        f"CREATE TEMP TABLE {_SCOPE} (siret text PRIMARY KEY, fallback_ville_id bigint) ON COMMIT DROP"
    )
    fallback = fallback or {}
    counts = ProLocalisationCounts(
        establishments=copy_rows(
            conn, _SCOPE, ("siret", "fallback_ville_id"), ((s, fallback.get(s)) for s in sirets)
        )
    )
    if not counts.establishments:
        return counts
    conn.execute(f"ANALYZE {_SCOPE}")
    conn.execute(
        f"""
        CREATE TEMP TABLE stage_proloc_resolved ON COMMIT DROP AS {_RESOLVED}
        """
    )
    counts.unmatched_by_reason = {
        reason: n
        for reason, n in conn.execute(
            """
            SELECT reason, count(*) FROM (
                SELECT CASE
                    WHEN naf_code IS NULL THEN 'no_naf_code'
                    WHEN coalesce(naf_nomenclature, '') <> 'NAFRev2' THEN 'old_naf_nomenclature'
                    WHEN NOT naf_known THEN 'naf_code_unknown'
                    WHEN excluded_reason IS NOT NULL THEN 'naf_excluded'
                    WHEN NOT trade_active THEN 'trade_inactive'
                    WHEN ville_id IS NULL AND code_commune IS NULL THEN 'no_commune'
                    WHEN ville_id IS NULL THEN 'commune_unknown'
                END AS reason
                FROM stage_proloc_resolved WHERE is_active
            ) r WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason
            """
        )
    }
    conn.execute(
        """
        CREATE TEMP TABLE stage_proloc_desired ON COMMIT DROP AS
        SELECT entreprise_id, sous_categorie_id, ville_id FROM stage_proloc_resolved
        WHERE is_active AND ville_id IS NOT NULL AND sous_categorie_id IS NOT NULL AND trade_active
        """
    )
    counts.desired = conn.execute("SELECT count(*) FROM stage_proloc_desired").fetchone()[0]

    counts.created, counts.reactivated = conn.execute(
        """
        WITH written AS (
            INSERT INTO enterprise_prolocalisation AS p
                (entreprise_id, sous_categorie_id, ville_id, is_active, last_partition)
            SELECT d.entreprise_id, d.sous_categorie_id, d.ville_id, true, %(partition)s
            FROM stage_proloc_desired d
            WHERE NOT EXISTS (
                SELECT 1 FROM enterprise_prolocalisation x
                WHERE x.entreprise_id = d.entreprise_id AND x.sous_categorie_id = d.sous_categorie_id
                  AND x.ville_id = d.ville_id AND x.is_active
            )
            ON CONFLICT (entreprise_id, sous_categorie_id, ville_id) DO UPDATE
                SET is_active = true, deactivated_at = NULL, deactivation_reason = NULL,
                    last_partition = excluded.last_partition, updated_at = now()
                WHERE NOT p.is_active
            RETURNING (p.xmax = 0) AS created
        )
        SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM written
        """,
        {"partition": partition},
    ).fetchone()

    counts.deactivated_by_reason = {
        reason: n
        for reason, n in conn.execute(
            """
            WITH retired AS (
                UPDATE enterprise_prolocalisation p
                SET is_active = false, deactivated_at = now(), updated_at = now(),
                    last_partition = %(partition)s,
                    deactivation_reason = CASE
                        WHEN NOT r.is_active THEN 'closed'
                        WHEN r.sous_categorie_id IS DISTINCT FROM p.sous_categorie_id
                             AND r.ville_id IS DISTINCT FROM p.ville_id THEN 'trade_changed_and_moved'
                        WHEN r.sous_categorie_id IS DISTINCT FROM p.sous_categorie_id THEN 'trade_changed'
                        WHEN r.ville_id IS DISTINCT FROM p.ville_id THEN 'moved'
                        ELSE 'trade_inactive'
                    END
                FROM stage_proloc_resolved r
                WHERE p.entreprise_id = r.entreprise_id AND p.is_active
                  AND NOT EXISTS (
                      SELECT 1 FROM stage_proloc_desired d
                      WHERE d.entreprise_id = p.entreprise_id
                        AND d.sous_categorie_id = p.sous_categorie_id AND d.ville_id = p.ville_id
                  )
                RETURNING p.deactivation_reason
            )
            SELECT deactivation_reason, count(*) FROM retired GROUP BY 1 ORDER BY 1
            """,
            {"partition": partition},
        )
    }
    counts.deactivated = sum(counts.deactivated_by_reason.values())
    return counts


def find_fallback_villes(conn: psycopg.Connection, sirets: Iterable[str], normalise) -> dict[str, int]:
    """Ville ids for establishments with no commune code, by postal code + normalised name."""
    drop_temp(conn, "stage_fallback_sirets")
    conn.execute("CREATE TEMP TABLE stage_fallback_sirets (siret text PRIMARY KEY) ON COMMIT DROP")
    copy_rows(conn, "stage_fallback_sirets", ("siret",), ((s,) for s in sirets))
    found: dict[str, int] = {}
    candidates = conn.execute(
        """
        SELECT e.siret, e.ville_nom, v.id, v.nom
        FROM stage_fallback_sirets s
        JOIN enterprise_entreprise e ON e.siret = s.siret
        JOIN location_ville v ON v.codes_postaux ? e.code_postal AND v.is_active
        WHERE e.code_commune IS NULL AND e.code_postal IS NOT NULL AND e.ville_nom IS NOT NULL
        """
    ).fetchall()
    conn.execute("DROP TABLE stage_fallback_sirets")
    for siret, ville_nom, ville_id, nom in candidates:
        if normalise(ville_nom) == normalise(nom):
            found[siret] = ville_id
    return found
