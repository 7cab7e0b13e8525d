"""ProLocalisations (entreprise × sous-catégorie × ville) for a set of establishments.

The desired state is derived from the stored establishment (which holds the newest SIRENE
data), so re-running any partition converges on the same answer. A ProLocalisation that is
no longer desired is set inactive with a reason, never deleted: its reviews and content
belong to the web app.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


# What the resolution reads of an establishment (`_RESOLVED`'s `e`).
RESOLUTION_COLUMNS = (
    "id", "siret", "is_active", "naf_code", "naf_nomenclature", "naf25_code", "naf_rev2_code",
    "code_commune", "code_postal", "ville_nom", "statut_diffusion", "nom", "source",
)

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

# Why an active establishment has no page: the first of these that applies.
UNMATCHED_REASONS: tuple[tuple[str, str], ...] = (
    ("no_naf_code", "naf_code IS NULL"),
    ("old_naf_nomenclature", "coalesce(naf_nomenclature, '') NOT IN ('NAFRev2', 'NAF2025')"),
    ("naf2025_unmapped", "NOT naf_known AND NOT trade_kept AND naf_nomenclature = 'NAF2025' AND naf_listed"),
    ("naf_code_unknown", "NOT naf_known AND NOT trade_kept"),
    ("naf_excluded", "excluded_reason IS NOT NULL"),
    ("trade_inactive", "NOT trade_active"),
    ("no_commune", "ville_id IS NULL AND code_commune IS NULL"),
    ("commune_unknown", "ville_id IS NULL"),
)
_UNMATCHED_REASON = (
    "CASE " + " ".join(f"WHEN {condition} THEN '{reason}'" for reason, condition in UNMATCHED_REASONS) + " END"
)


def sync_prolocalisations(
    conn: psycopg.Connection,
    sirets: Iterable[str],
    *,
    partition: str | None = None,
    written: str | None = None,
    created: str | None = None,
    stored: str | None = None,
    unstored: Sequence[str] = (),
) -> ProLocalisationCounts:
    """Create, reactivate or retire the ProLocalisations of these establishments.

    `stored`: a temporary table of `RESOLUTION_COLUMNS` holding these establishments as
    stored now by this transaction (`upsert_entreprises`' `STORED`), but for those of the
    SIRETs `unstored`: the first are read from there, only the others looked up.

    `written`: the establishments are new ones, stored as they are in this temporary table
    (`upsert_entreprises`' `all_new`): they have no ProLocalisation yet, so there is none to
    keep, reactivate or retire, and they are read from there rather than looked up.
    `created`: a temporary table of the ids of those of them this transaction created
    (`upsert_entreprises`' `CREATED`): no other transaction can have given them a page, so
    theirs are inserted straight from their resolution, and no stored page of theirs is
    looked for."""
    drop_temp(conn, "stage_proloc_resolved", "stage_proloc_desired", "stage_proloc_existing")
    scope = list(dict.fromkeys(sirets))
    counts = ProLocalisationCounts(establishments=len(scope))
    if not scope:
        return counts
    _stage_resolved(conn, scope, written, stored, unstored)
    _count_resolution(conn, counts)
    if written is not None:
        # New establishments: the pages they should have are all to create, inserted
        # straight from their resolution.
        counts.desired = counts.created = conn.execute(
            _INSERT.format(rows=f"SELECT {_PAGE} FROM stage_proloc_resolved WHERE {_DESIRED}"),
            {"partition": partition},
        ).rowcount
        return counts
    # The establishments this transaction created: no other transaction can have given them
    # a page, nor have they one yet, so theirs are inserted straight from their resolution
    # (a unique key violated, if one ever were, fails the statement). The others' desired and
    # stored pages are staged and compared.
    others = "true"
    fresh = 0
    if created is not None:
        created_here = (
            f"EXISTS (SELECT FROM {sql.Identifier(created).as_string(None)} c WHERE c.id = r.entreprise_id)"
        )
        fresh = conn.execute(
            _INSERT.format(rows=f"SELECT {_PAGE} FROM stage_proloc_resolved r WHERE {_DESIRED} AND {created_here}"),
            {"partition": partition},
        ).rowcount
        others = f"NOT {created_here}"
    counts.desired = fresh + _stage_desired(conn, others)
    _stage_existing(conn, others)
    counts.created = fresh + _create_new(conn, partition)
    counts.reactivated = _reactivate_wanted(conn, partition)
    counts.deactivated_by_reason = _retire_unwanted(conn, partition)
    counts.deactivated = sum(counts.deactivated_by_reason.values())
    return counts


def _stage_resolved(
    conn: psycopg.Connection, scope: list[str], written: str | None, stored: str | None, unstored: Sequence[str]
) -> None:
    """`stage_proloc_resolved`: each establishment of the scope with its ville and trade."""
    params: tuple[TextArray, ...] = ()
    if written is not None:
        source = {"establishments": written, "scope": "true"}
    elif stored is not None:
        # Those of the scope this transaction holds as stored, and the others looked up.
        columns = ", ".join(RESOLUTION_COLUMNS)
        source = {
            "establishments": f"(SELECT {columns} FROM {sql.Identifier(stored).as_string(None)} "
            f"UNION ALL SELECT {columns} FROM enterprise_entreprise WHERE siret = ANY(%s))",
            "scope": "true",
        }
        params = (TextArray(list(unstored)),)
    else:
        source, params = _BY_SIRET, (TextArray(scope),)
    conn.execute("CREATE TEMP TABLE stage_proloc_resolved ON COMMIT DROP AS " + _RESOLVED.format(**source), params or None)
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
    """How many active establishments found their ville and trade, and why the others did not:
    one scan of the resolution, and one more for each sample that has rows to show."""
    row = one_row(
        conn.execute(
            f"""
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
                   count(*) FILTER (WHERE trades_differ),
                   {", ".join(f"count(*) FILTER (WHERE reason = '{reason}')" for reason, _ in UNMATCHED_REASONS)}
            FROM (SELECT *, {_UNMATCHED_REASON} AS reason FROM stage_proloc_resolved WHERE is_active OFFSET 0) r
            """
        )
    )
    (
        counts.active, counts.ville_resolved, counts.trade_resolved, counts.not_published,
        counts.trade_pending, *rest,
    ) = row
    naf2025, unmatched = rest[: len(NAF2025_COUNTS)], rest[len(NAF2025_COUNTS) :]
    counts.naf2025 = dict(zip(NAF2025_COUNTS, naf2025, strict=True))
    counts.unmatched_by_reason = {
        reason: n for (reason, _), n in sorted(zip(UNMATCHED_REASONS, unmatched, strict=True)) if n
    }
    if counts.ville_resolved < counts.active:
        counts.unresolved_ville_sample = _sample(
            conn, "ville_id IS NULL", "siret, code_commune, code_postal, ville_nom"
        )
    if counts.trade_resolved < counts.active:
        counts.unresolved_trade_sample = _sample(
            conn,
            "(sous_categorie_id IS NULL OR NOT trade_active)",
            "siret, naf_code, naf_nomenclature, naf25_code, excluded_reason",
        )


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


def _stage_desired(conn: psycopg.Connection, scope: str) -> int:
    """`stage_proloc_desired`: the ProLocalisations the establishments of the resolution `r`
    that meet `scope` should have; returns their count."""
    conn.execute(
        f"CREATE TEMP TABLE stage_proloc_desired ON COMMIT DROP AS "
        f"SELECT {_PAGE} FROM stage_proloc_resolved r WHERE {_DESIRED} AND {scope}"
    )
    desired: int = one_row(conn.execute("SELECT count(*) FROM stage_proloc_desired"))[0]
    return desired


def _stage_existing(conn: psycopg.Connection, scope: str) -> None:
    """`stage_proloc_existing`: the ProLocalisations the establishments of the resolution `r`
    that meet `scope` have now, active or not."""
    # Read once through the (entreprise, …) unique index with an array of ids: a plan that
    # stays right whatever the table's statistics say (a join against a freshly filled table
    # is planned as if it were empty). The array is built in the server, not sent.
    conn.execute(
        f"""
        CREATE TEMP TABLE stage_proloc_existing ON COMMIT DROP AS
        SELECT id, entreprise_id, sous_categorie_id, ville_id, is_active
        FROM enterprise_prolocalisation
        WHERE entreprise_id = ANY(ARRAY(SELECT entreprise_id FROM stage_proloc_resolved r WHERE {scope}))
        """
    )
    analyze_stage(conn, "stage_proloc_desired")
    analyze_stage(conn, "stage_proloc_existing")


def _create_new(conn: psycopg.Connection, partition: str | None) -> int:
    """Insert the desired ProLocalisations that do not exist yet; returns how many. A page
    another publish inserted meanwhile is left to it (`ON CONFLICT DO NOTHING`)."""
    return conn.execute(
        _INSERT.format(rows=f"SELECT {_PAGE} FROM stage_proloc_desired EXCEPT SELECT {_PAGE} FROM stage_proloc_existing")
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
