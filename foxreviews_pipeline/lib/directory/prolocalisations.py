"""ProLocalisations (entreprise × sous-catégorie × ville) for a set of establishments.

The desired state is derived from the stored establishment (which holds the newest SIRENE
data), so re-running any partition converges on the same answer. A ProLocalisation that is
no longer desired is set inactive with a reason, never deleted: its reviews and content
belong to the web app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.arrays import TextArray
from foxreviews_pipeline.lib.db.copy import drop_temp
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.db.upsert import analyze_stage


@dataclass
class ProLocalisationCounts:
    establishments: int = 0
    active: int = 0
    ville_resolved: int = 0
    trade_resolved: int = 0
    desired: int = 0
    created: int = 0
    reactivated: int = 0
    deactivated: int = 0
    not_published: int = 0  # active, but their diffusion status forbids a page
    # Active, with a NAF 2025 code of the list not mapped yet and no trade to keep: waiting
    # for the mapping, not a sign of unknown codes (the trades_resolved gate leaves them out).
    trade_pending: int = 0
    # How the NAF 2025 rules applied (`NAF2025_COUNTS`).
    naf2025: dict[str, int] = field(default_factory=dict)
    deactivated_by_reason: dict[str, int] = field(default_factory=dict)
    unmatched_by_reason: dict[str, int] = field(default_factory=dict)
    # A few of the day's active establishments left without a ville / a trade, for the audit.
    unresolved_ville_sample: list[dict[str, Any]] = field(default_factory=list)
    unresolved_trade_sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def unmatched(self) -> int:
        return sum(self.unmatched_by_reason.values())

    @property
    def changed(self) -> int:
        return self.created + self.reactivated + self.deactivated

    def add(self, other: ProLocalisationCounts) -> None:
        """Add another batch's counts to these (samples kept to SAMPLE_SIZE)."""
        for name in (
            "establishments", "active", "ville_resolved", "trade_resolved", "desired",
            "created", "reactivated", "deactivated", "not_published", "trade_pending",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in (
            (self.deactivated_by_reason, other.deactivated_by_reason),
            (self.unmatched_by_reason, other.unmatched_by_reason),
            (self.naf2025, other.naf2025),
        ):
            for reason, n in theirs.items():
                mine[reason] = mine.get(reason, 0) + n
        for sample, more in (
            (self.unresolved_ville_sample, other.unresolved_ville_sample),
            (self.unresolved_trade_sample, other.unresolved_trade_sample),
        ):
            sample.extend(more[: max(0, SAMPLE_SIZE - len(sample))])


# Which ville an establishment is in: by INSEE code (an arrondissement or commune déléguée
# goes to its current commune); by postal code + normalised name only when the code is
# missing (resolved afterwards, see `_resolve_by_postal_code`).
_RESOLVED = """
    SELECT e.id AS entreprise_id, e.siret, e.is_active, e.naf_code, e.naf_nomenclature,
           e.naf25_code, e.code_commune, v.id AS ville_id, e.code_postal, e.ville_nom,
           entreprise_publishable(e.statut_diffusion, e.nom, e.source) AS publishable,
           m.sous_categorie_id, m.excluded_reason, m.nomenclature AS mapped_through,
           (m.naf_code IS NOT NULL) AS naf_known,
           (n.code IS NOT NULL) AS naf_listed,
           -- Mapped through rév. 2 while NAF 2025 says another trade: rév. 2 decides.
           (m.nomenclature = 'NAFRev2' AND o.naf_code IS NOT NULL
            AND o.sous_categorie_id IS DISTINCT FROM m.sous_categorie_id) AS trades_differ,
           false AS trade_kept,
           (sub.id IS NOT NULL AND sub.is_active AND cat.is_active) AS trade_active
    FROM {establishments} e
    LEFT JOIN location_commune_alias a ON a.code_insee = e.code_commune
    LEFT JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, e.code_commune)
                              AND v.is_active
    -- Through the nomenclature the record states; a NAF 2025 record whose activity only
    -- switched nomenclature through the rév. 2 code it kept (docs/data-model.md, "NAF 2025").
    LEFT JOIN ref_naf_mapping m
        ON m.nomenclature = CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
                                 THEN 'NAFRev2' ELSE e.naf_nomenclature END
       AND m.naf_code = CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
                             THEN e.naf_rev2_code ELSE e.naf_code END
    LEFT JOIN ref_naf_mapping o ON o.nomenclature = 'NAF2025' AND o.naf_code = e.naf25_code
    LEFT JOIN ref_naf_nomenclature n ON n.nomenclature = e.naf_nomenclature AND n.code = e.naf_code
    LEFT JOIN subcategory_souscategorie sub ON sub.id = m.sous_categorie_id
    LEFT JOIN category_categorie cat ON cat.id = sub.categorie_id
    WHERE {scope}
"""
# The establishments of the scope: by an array through the SIRET index, so that the plan
# stays an index lookup per establishment whatever the size of the table or the freshness of
# its statistics.
_BY_SIRET = {"establishments": "enterprise_entreprise", "scope": "e.siret = ANY(%s)"}

# Why an active establishment has no page; the first that applies.
_UNMATCHED_REASON = """
    CASE
        WHEN naf_code IS NULL THEN 'no_naf_code'
        WHEN coalesce(naf_nomenclature, '') NOT IN ('NAFRev2', 'NAF2025') THEN 'old_naf_nomenclature'
        WHEN NOT naf_known AND NOT trade_kept AND naf_nomenclature = 'NAF2025' AND naf_listed
            THEN 'naf2025_unmapped'
        WHEN NOT naf_known AND NOT trade_kept THEN 'naf_code_unknown'
        WHEN excluded_reason IS NOT NULL THEN 'naf_excluded'
        WHEN NOT trade_active THEN 'trade_inactive'
        WHEN ville_id IS NULL AND code_commune IS NULL THEN 'no_commune'
        WHEN ville_id IS NULL THEN 'commune_unknown'
    END
"""


def sync_prolocalisations(
    conn: psycopg.Connection,
    sirets: Iterable[str],
    *,
    partition: str | None = None,
    written: str | None = None,
    created: str | None = None,
) -> ProLocalisationCounts:
    """Create, reactivate or retire the ProLocalisations of these establishments.

    `written`: the establishments are new ones, stored as they are in this temporary table
    (`upsert_entreprises`' `all_new`): they have no ProLocalisation yet, so there is none to
    keep, reactivate or retire, and they are read from there rather than looked up.
    `created`: a temporary table of the ids of those of them this transaction created
    (`upsert_entreprises`' `CREATED`): no other transaction can have given them a page, so
    theirs are inserted as they are."""
    drop_temp(conn, "stage_proloc_resolved", "stage_proloc_desired", "stage_proloc_existing")
    scope = list(dict.fromkeys(sirets))
    counts = ProLocalisationCounts(establishments=len(scope))
    if not scope:
        return counts
    _stage_resolved(conn, scope, written)
    _count_resolution(conn, counts)
    if written is not None:
        # New establishments: the pages they should have are all to create, inserted
        # straight from their resolution.
        counts.desired = counts.created = conn.execute(
            _INSERT.format(rows=f"SELECT {_PAGE} FROM stage_proloc_resolved WHERE {_DESIRED}"),
            {"partition": partition},
        ).rowcount
        return counts
    counts.desired = _stage_desired(conn)
    _stage_existing(conn)
    counts.created = _create_new(conn, partition, created=created)
    counts.reactivated = _reactivate_wanted(conn, partition)
    counts.deactivated_by_reason = _retire_unwanted(conn, partition)
    counts.deactivated = sum(counts.deactivated_by_reason.values())
    return counts


def _stage_resolved(conn: psycopg.Connection, scope: list[str], written: str | None) -> None:
    """`stage_proloc_resolved`: each establishment of the scope with its ville and trade."""
    if written is None:
        conn.execute(
            "CREATE TEMP TABLE stage_proloc_resolved ON COMMIT DROP AS " + _RESOLVED.format(**_BY_SIRET),
            (TextArray(scope),),
        )
    else:
        conn.execute(
            "CREATE TEMP TABLE stage_proloc_resolved ON COMMIT DROP AS "
            + _RESOLVED.format(establishments=written, scope="true")
        )
    analyze_stage(conn, "stage_proloc_resolved", ["entreprise_id", "ville_id", "code_commune"])
    _resolve_by_postal_code(conn)
    if written is None:
        _keep_trades(conn)


# The NAF 2025 figures of a batch's active establishments (ProLocalisationCounts.naf2025).
NAF2025_COUNTS: dict[str, str] = {
    "stated_naf2025": "the activity is stated in NAF 2025",
    "kept_rev2_trade": "NAF 2025 by a switch alone: mapped through the rév. 2 code kept",
    "mapped_naf2025": "mapped through the NAF 2025 mapping",
    "naf2025_unmapped": "a NAF 2025 code of the list that is not mapped yet",
    "unmapped_kept_trade": "of those, establishments that keep the trade of their page",
    "trades_differ": "rév. 2 and NAF 2025 point to different trades: the rév. 2 trade is kept",
}


def _keep_trades(conn: psycopg.Connection) -> None:
    """Establishments whose NAF 2025 code is not mapped yet keep the trade of their active
    page: a code waiting for review never retires a page."""
    conn.execute(
        """
        UPDATE stage_proloc_resolved r
        SET sous_categorie_id = k.sous_categorie_id, excluded_reason = NULL,
            trade_kept = true, trade_active = k.trade_active
        FROM (
            SELECT DISTINCT ON (p.entreprise_id) p.entreprise_id, p.sous_categorie_id,
                   (sub.is_active AND cat.is_active) AS trade_active
            FROM enterprise_prolocalisation p
            JOIN subcategory_souscategorie sub ON sub.id = p.sous_categorie_id
            JOIN category_categorie cat ON cat.id = sub.categorie_id
            WHERE p.is_active AND p.entreprise_id IN (
                SELECT entreprise_id FROM stage_proloc_resolved
                WHERE naf_nomenclature = 'NAF2025' AND NOT naf_known AND naf_listed)
            ORDER BY p.entreprise_id, p.id
        ) k
        WHERE r.entreprise_id = k.entreprise_id
        """
    )


def _count_resolution(conn: psycopg.Connection, counts: ProLocalisationCounts) -> None:
    """How many active establishments found their ville and trade, and why the others did not."""
    row = one_row(
        conn.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE ville_id IS NOT NULL),
                   count(*) FILTER (WHERE sous_categorie_id IS NOT NULL AND trade_active),
                   count(*) FILTER (WHERE NOT publishable),
                   count(*) FILTER (WHERE naf_nomenclature = 'NAF2025' AND NOT naf_known
                                    AND naf_listed AND NOT trade_kept),
                   count(*) FILTER (WHERE naf_nomenclature = 'NAF2025'),
                   count(*) FILTER (WHERE naf_nomenclature = 'NAF2025' AND mapped_through = 'NAFRev2'),
                   count(*) FILTER (WHERE mapped_through = 'NAF2025'),
                   count(*) FILTER (WHERE naf_nomenclature = 'NAF2025' AND NOT naf_known AND naf_listed),
                   count(*) FILTER (WHERE trade_kept),
                   count(*) FILTER (WHERE trades_differ)
            FROM stage_proloc_resolved WHERE is_active
            """
        )
    )
    (
        counts.active, counts.ville_resolved, counts.trade_resolved, counts.not_published,
        counts.trade_pending, *naf2025,
    ) = row
    counts.naf2025 = dict(zip(NAF2025_COUNTS, naf2025, strict=True))
    counts.unresolved_ville_sample = _sample(
        conn, "ville_id IS NULL", "siret, code_commune, code_postal, ville_nom"
    )
    counts.unresolved_trade_sample = _sample(
        conn,
        "(sous_categorie_id IS NULL OR NOT trade_active)",
        "siret, naf_code, naf_nomenclature, naf25_code, excluded_reason",
    )
    counts.unmatched_by_reason = _unmatched_by_reason(conn)


def _unmatched_by_reason(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        f"""
        SELECT reason, count(*) FROM (
            SELECT {_UNMATCHED_REASON} AS reason FROM stage_proloc_resolved WHERE is_active
        ) r WHERE reason IS NOT NULL GROUP BY reason ORDER BY reason
        """
    )
    return dict(rows)


# A page: an establishment × trade × town; those an establishment of the scope should have.
_PAGE = "entreprise_id, sous_categorie_id, ville_id"
_DESIRED = (
    "is_active AND publishable AND ville_id IS NOT NULL AND sous_categorie_id IS NOT NULL AND trade_active"
)
# New pages (`{rows}`: a query of `_PAGE` columns), written by the partition `%(partition)s`.
_INSERT = f"""
    INSERT INTO enterprise_prolocalisation ({_PAGE}, is_active, last_partition)
    SELECT {_PAGE}, true, %(partition)s FROM ({{rows}}) new
"""


def _stage_desired(conn: psycopg.Connection) -> int:
    """`stage_proloc_desired`: the ProLocalisations the scope should have; returns their count."""
    conn.execute(
        f"CREATE TEMP TABLE stage_proloc_desired ON COMMIT DROP AS "
        f"SELECT {_PAGE} FROM stage_proloc_resolved WHERE {_DESIRED}"
    )
    desired: int = one_row(conn.execute("SELECT count(*) FROM stage_proloc_desired"))[0]
    return desired


def _stage_existing(conn: psycopg.Connection) -> None:
    """`stage_proloc_existing`: the ProLocalisations the scope has now, active or not."""
    # Read once through the (entreprise, …) unique index with an array of ids: a plan that
    # stays right whatever the table's statistics say (a join against a freshly filled table
    # is planned as if it were empty). The array is built in the server, not sent.
    conn.execute(
        """
        CREATE TEMP TABLE stage_proloc_existing ON COMMIT DROP AS
        SELECT id, entreprise_id, sous_categorie_id, ville_id, is_active
        FROM enterprise_prolocalisation
        WHERE entreprise_id = ANY(ARRAY(SELECT entreprise_id FROM stage_proloc_resolved))
        """
    )
    analyze_stage(conn, "stage_proloc_desired")
    analyze_stage(conn, "stage_proloc_existing")


def _create_new(conn: psycopg.Connection, partition: str | None, *, created: str | None = None) -> int:
    """Insert the desired ProLocalisations that do not exist yet; returns how many.

    Those of the establishments whose ids are in the temporary table `created` are inserted
    as they are: none has a page yet, nor can another transaction give it one before this
    one commits (a unique key violated, if one ever were, fails the statement). The others'
    are the desired ones not stored yet, and a page another publish inserted meanwhile is
    left to it (`ON CONFLICT DO NOTHING`)."""
    desired = f"SELECT {_PAGE} FROM stage_proloc_desired d"
    inserted = 0
    others = desired
    if created is not None:
        fresh = f"EXISTS (SELECT FROM {sql.Identifier(created).as_string(None)} c WHERE c.id = d.entreprise_id)"
        inserted = conn.execute(
            _INSERT.format(rows=f"{desired} WHERE {fresh}"), {"partition": partition}
        ).rowcount
        others = f"{desired} WHERE NOT {fresh}"
    return inserted + conn.execute(
        _INSERT.format(rows=f"{others} EXCEPT SELECT {_PAGE} FROM stage_proloc_existing")
        + f" ON CONFLICT ({_PAGE}) DO NOTHING",
        {"partition": partition},
    ).rowcount


def _reactivate_wanted(conn: psycopg.Connection, partition: str | None) -> int:
    """Reactivate the inactive ProLocalisations that are desired again; returns how many."""
    return conn.execute(
        """
        UPDATE enterprise_prolocalisation p
        SET is_active = true, deactivated_at = NULL, deactivation_reason = NULL,
            last_partition = %(partition)s, updated_at = now()
        FROM stage_proloc_existing x
        JOIN stage_proloc_desired d USING (entreprise_id, sous_categorie_id, ville_id)
        WHERE p.id = x.id AND NOT x.is_active
        """,
        {"partition": partition},
    ).rowcount


def _retire_unwanted(conn: psycopg.Connection, partition: str | None) -> dict[str, int]:
    """Set inactive, with their reason, the active ProLocalisations no longer desired;
    returns how many per reason."""
    rows = conn.execute(
        """
        WITH retiring AS (
            SELECT x.id, CASE
                WHEN NOT r.is_active THEN 'closed'
                WHEN NOT r.publishable THEN 'not_diffusible'
                WHEN r.sous_categorie_id IS DISTINCT FROM x.sous_categorie_id
                     AND r.ville_id IS DISTINCT FROM x.ville_id THEN 'trade_changed_and_moved'
                WHEN r.sous_categorie_id IS DISTINCT FROM x.sous_categorie_id THEN 'trade_changed'
                WHEN r.ville_id IS DISTINCT FROM x.ville_id THEN 'moved'
                ELSE 'trade_inactive'
            END AS reason
            FROM stage_proloc_existing x
            JOIN stage_proloc_resolved r ON r.entreprise_id = x.entreprise_id
            LEFT JOIN stage_proloc_desired d ON d.entreprise_id = x.entreprise_id
                AND d.sous_categorie_id = x.sous_categorie_id AND d.ville_id = x.ville_id
            WHERE x.is_active AND d.entreprise_id IS NULL
        ), retired AS (
            UPDATE enterprise_prolocalisation p
            SET is_active = false, deactivated_at = now(), updated_at = now(),
                last_partition = %(partition)s, deactivation_reason = t.reason
            FROM retiring t WHERE p.id = t.id
            RETURNING p.deactivation_reason
        )
        SELECT deactivation_reason, count(*) FROM retired GROUP BY 1 ORDER BY 1
        """,
        {"partition": partition},
    )
    return dict(rows)


SAMPLE_SIZE = 20


def _sample(conn: psycopg.Connection, condition: str, columns: str) -> list[dict[str, Any]]:
    """Up to SAMPLE_SIZE active establishments of the scope matching `condition`."""
    cur = conn.execute(
        f"SELECT {columns} FROM stage_proloc_resolved WHERE is_active AND {condition} "
        f"ORDER BY siret LIMIT {SAMPLE_SIZE}"
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _resolve_by_postal_code(conn: psycopg.Connection) -> None:
    """Establishments with no commune code: the ville whose postal codes include theirs and
    whose normalised name equals their town name (accents, case, "ST" are not differences)."""
    from foxreviews_pipeline.lib.reference.communes import normalise_name

    candidates = conn.execute(
        """
        SELECT r.entreprise_id, r.ville_nom, v.id, v.nom
        FROM stage_proloc_resolved r
        JOIN location_ville v ON v.codes_postaux ? r.code_postal AND v.is_active
        WHERE r.ville_id IS NULL AND r.code_commune IS NULL AND r.ville_nom IS NOT NULL
        """
    ).fetchall()
    found = {
        entreprise_id: ville_id
        for entreprise_id, ville_nom, ville_id, nom in candidates
        if normalise_name(ville_nom) == normalise_name(nom)
    }
    if found:
        conn.execute(
            """
            UPDATE stage_proloc_resolved r SET ville_id = f.ville_id
            FROM unnest(%s::bigint[], %s::bigint[]) AS f(entreprise_id, ville_id)
            WHERE r.entreprise_id = f.entreprise_id
            """,
            (list(found), list(found.values())),
        )
