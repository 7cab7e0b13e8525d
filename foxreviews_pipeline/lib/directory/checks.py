"""The blocking checks every writer of the directory runs before it publishes.

Every writer of the directory (a SIRENE day, a stock partition, an upload) publishes through
`lib/directory/publication.py`, which audits what its transaction sees with
`audit_publication` before it commits (`lib/publish.py`). See docs/data-model.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from foxreviews_pipeline.lib.asset_keys import ENTREPRISES, PRO_LOCALISATIONS
from foxreviews_pipeline.lib.db.arrays import TextArray
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.directory.prolocalisations import SAMPLE_SIZE, ProLocalisationCounts
from foxreviews_pipeline.lib.gc_pause import paused_gc
from foxreviews_pipeline.lib.publish import CheckOutcome
from foxreviews_pipeline.lib.sirene.identifiers import sirets_valid

# Text columns SIRENE ingestion writes: none may ever hold INSEE's "[ND]" mask.
_TEXT_COLUMNS = ("nom", "nom_commercial", "adresse", "code_postal", "ville_nom", "code_commune")
# What a non-diffusible establishment may not show (docs/data-model.md, "Diffusion").
PERSONAL_COLUMNS = ("nom", "nom_commercial", "adresse", "code_postal")

# Below these shares of a batch's active establishments, something upstream is broken (the
# communes or the taxonomy not loaded, INSEE codes changed): the batch is not published.
MIN_VILLE_SHARE = 0.95
# Many NAF codes are excluded on purpose (holdings, wholesale, public bodies…): about half
# of a real day maps to a trade; far below that, the mapping is broken.
MIN_TRADE_SHARE = 0.25
# INSEE's identifiers are checked at the source: more than this share of a batch failing
# Luhn means a corrupt extract, not a few odd records.
MAX_INVALID_SHARE = 0.01
# Records rejected for any other reason (today: no usable name). A real day has a handful; a
# day that names nobody (a stock read without its StockUniteLegale, a broken extract) is not
# a day to publish.
MAX_UNUSABLE_SHARE = 0.05
# Positions converted from SIRENE's coordinates that land outside their own département or
# territory: a few are odd addresses; more than this share of the batch's positioned
# establishments is a projection bug (lib/sirene/geography.py), not data.
MAX_OUTSIDE_TERRITORY_SHARE = 0.01


# (asset, check) → what it guarantees; the Dagster checks are declared from this table.
BLOCKING_CHECKS: dict[tuple[str, str], str] = {
    (ENTREPRISES, "valid_identifiers"): (
        "Every stored SIRET and SIREN is valid (Luhn; La Poste's rule) and at most "
        f"{MAX_INVALID_SHARE:.0%} of the batch was rejected as an invalid SIRET."
    ),
    (ENTREPRISES, "records_usable"): (
        f"At most {MAX_UNUSABLE_SHARE:.0%} of the batch's records were rejected for a reason "
        "other than an invalid identifier (no usable name): a batch that names nobody is a "
        "broken extract."
    ),
    (ENTREPRISES, "one_row_per_siret"): "The batch's records and stored rows hold each SIRET once.",
    (ENTREPRISES, "no_nd_stored"): "INSEE's [ND] mask never reaches the table as if it were data.",
    (ENTREPRISES, "diffusion_policy"): (
        "No establishment that may not be published (diffusion status other than O, or P "
        "without a name) carries a name, trade name or address, or an active ProLocalisation."
    ),
    (ENTREPRISES, "positions_in_territory"): (
        f"At most {MAX_OUTSIDE_TERRITORY_SHARE:.0%} of the batch's positioned establishments "
        "fall outside the bounding box of their département or territory once converted to "
        "WGS84 (more is a projection bug, not data)."
    ),
    (PRO_LOCALISATIONS, "villes_resolved"): (
        f"At least {MIN_VILLE_SHARE:.0%} of the batch's active establishments resolve to a ville."
    ),
    (PRO_LOCALISATIONS, "trades_resolved"): (
        f"At least {MIN_TRADE_SHARE:.0%} of the batch's active establishments map to a trade "
        "(those whose NAF 2025 code is listed but not mapped yet are left out: a change of "
        "nomenclature is not an unknown code)."
    ),
}
# Checks on shares of a batch's records: they describe INSEE data, so uploads (staff
# decisions row by row) and single stock batches do not run them.
SHARE_CHECKS = (
    (ENTREPRISES, "records_usable"),
    (ENTREPRISES, "positions_in_territory"),
    (PRO_LOCALISATIONS, "villes_resolved"),
    (PRO_LOCALISATIONS, "trades_resolved"),
)
ROW_CHECKS = tuple(k for k in BLOCKING_CHECKS if k not in SHARE_CHECKS)


@dataclass
class EntrepriseAudit:
    rows: int = 0
    duplicate_sirets: int = 0
    invalid_identifiers: list[str] = field(default_factory=list)
    nd_rows: int = 0
    nd_sample: list[str] = field(default_factory=list)
    # Establishments that may not be published yet show something (`diffusion_policy`).
    diffusion_violations: list[dict[str, Any]] = field(default_factory=list)


def audit_entreprises(
    conn: psycopg.Connection, sirets: Sequence[str], *, written: str | None = None
) -> EntrepriseAudit:
    """What the establishments of these SIRETs look like in the table, now: read once for
    every row check. `written`: they are new ones, stored as they are in this temporary table
    (`upsert_entreprises`' `all_new`), read from there."""
    audit = EntrepriseAudit()
    nd = " OR ".join(f"e.{c} = '[ND]'" for c in _TEXT_COLUMNS)
    personal = " OR ".join(f"e.{c} IS NOT NULL" for c in PERSONAL_COLUMNS)
    # Only for an establishment that may not be published: what it shows, and its pages by
    # their index (never a scan of all pages). A CASE rather than a lateral join, which the
    # planner turns into a filter applied after the pages were counted for every row.
    hidden = "NOT entreprise_publishable(e.statut_diffusion, e.nom, e.source)"
    # Summed up by the server: the keys of the rows of the usual lengths (a 14-character SIRET
    # and a 9-character SIREN) as one string, 23 characters a row, which the client checks as
    # one array; any other row's keys as two arrays; the rest as counts and the few rows that
    # offend (a row each, read by the client, cost three times this statement). Two arrays of
    # every key cost the server twice the string, and the client a Python string per key.
    # `OFFSET 0` keeps the rows' expressions computed once each: pulled up into the
    # aggregates that name them twice, they were computed twice (0.07 → 0.22 s for a day).
    (
        audit.rows, packed, odd_sirets, odd_sirens, audit.nd_rows, nd_sample, violations
    ) = one_row(
        conn.execute(
            f"""
            SELECT count(*),
                   coalesce(string_agg(e.siret || e.siren, '') FILTER (WHERE e.sized), ''),
                   coalesce(array_agg(e.siret) FILTER (WHERE NOT e.sized), '{{}}'),
                   coalesce(array_agg(e.siren) FILTER (WHERE NOT e.sized), '{{}}'),
                   count(*) FILTER (WHERE e.nd),
                   coalesce((array_agg(e.siret ORDER BY e.siret) FILTER (WHERE e.nd))[1:{SAMPLE_SIZE}], '{{}}'),
                   coalesce(jsonb_agg(jsonb_build_array(e.siret, e.statut_diffusion, e.personal_fields, e.pages)
                                      ORDER BY e.siret)
                            FILTER (WHERE e.personal_fields OR e.pages > 0), '[]')
            FROM (
                SELECT e.siret, e.siren,
                       coalesce(length(e.siret) = {_SIRET_LENGTH} AND length(e.siren) = {_SIREN_LENGTH}, false)
                           AS sized,
                       ({nd}) AS nd, e.statut_diffusion,
                       CASE WHEN {hidden} THEN e.statut_diffusion IS DISTINCT FROM 'P' AND ({personal}) END
                           AS personal_fields,
                       CASE WHEN {hidden} THEN (SELECT count(*) FROM enterprise_prolocalisation p
                                                WHERE p.entreprise_id = e.id AND p.is_active) END AS pages
                FROM {"enterprise_entreprise" if written is None else written} e
                {"WHERE e.siret = ANY(%s)" if written is None else ""}
                OFFSET 0
            ) e
            """,
            (TextArray(sirets),) if written is None else None,
        )
    )
    audit.duplicate_sirets, audit.invalid_identifiers = _check_keys(packed, odd_sirets, odd_sirens)
    audit.nd_sample = list(nd_sample)
    audit.diffusion_violations = [
        {"siret": siret, "statut_diffusion": statut, "personal_fields": personal_fields,
         "active_prolocalisations": pages}
        for siret, statut, personal_fields, pages in violations
    ]
    return audit


_SIRET_LENGTH, _SIREN_LENGTH = 14, 9
_KEYS_LENGTH = _SIRET_LENGTH + _SIREN_LENGTH
# The place value of each digit of a SIRET.
_PLACES = 10 ** np.arange(_SIRET_LENGTH - 1, -1, -1, dtype=np.int64)


def _check_keys(packed: str, odd_sirets: Sequence[str], odd_sirens: Sequence[str | None]) -> tuple[int, list[str]]:
    """How many stored rows repeat a SIRET, and the SIRETs that are not valid identifiers,
    of the rows whose keys are `packed` (SIRET then SIREN, 23 characters a row) and the
    other rows (`odd_sirets[i]` stored with `odd_sirens[i]`)."""
    if odd_sirets or not packed.isascii():
        # A key of another length or with a character beyond ASCII (the table's constraints
        # keep both out): every key as a string, checked one by one where it must be.
        sirets = [packed[i : i + _SIRET_LENGTH] for i in range(0, len(packed), _KEYS_LENGTH)]
        sirens: list[str | None] = [
            packed[i + _SIRET_LENGTH : i + _KEYS_LENGTH] for i in range(0, len(packed), _KEYS_LENGTH)
        ]
        sirets += odd_sirets
        sirens += odd_sirens
        return len(sirets) - len(set(sirets)), _invalid_identifiers(sirets, sirens)
    # As on any real day: every key checked at once, as bytes.
    keys = np.frombuffer(packed.encode("ascii"), np.uint8).reshape(-1, _KEYS_LENGTH)
    digits = keys - np.uint8(48)  # a byte that is not a digit wraps past 9
    numeric = (digits[:, :_SIRET_LENGTH] <= 9).all(axis=1)
    # The repeats: of the SIRETs of digits, as numbers (sorted faster than strings); of any other.
    numbers = digits[numeric, :_SIRET_LENGTH].astype(np.int64) @ _PLACES
    others = [keys[i, :_SIRET_LENGTH].tobytes() for i in np.flatnonzero(~numeric).tolist()]
    repeated = len(numbers) - len(np.unique(numbers)) + len(others) - len(set(others))
    ok = numeric & (keys[:, _SIRET_LENGTH:] == keys[:, :_SIREN_LENGTH]).all(axis=1)
    formed = np.flatnonzero(ok)
    ok[formed] = sirets_valid(digits[formed, :_SIRET_LENGTH])
    return repeated, [keys[i, :_SIRET_LENGTH].tobytes().decode("ascii") for i in np.flatnonzero(~ok).tolist()]


def _invalid_identifiers(sirets: Sequence[str], sirens: Sequence[str | None]) -> list[str]:
    """The SIRETs that are not valid identifiers (`sirens[i]` the SIREN stored with
    `sirets[i]`): a malformed one (14 ASCII digits, its SIREN the first nine), or a wrong key
    (`sirets_valid`)."""
    formed: list[str] = []
    invalid: list[str] = []
    for siret, siren in zip(sirets, sirens, strict=True):
        well_formed = len(siret) == 14 and siret.isascii() and siret.isdigit()
        (formed if well_formed and siren == siret[:9] else invalid).append(siret)
    if formed:
        digits = np.frombuffer("".join(formed).encode("ascii"), np.uint8).reshape(-1, 14) - 48
        valid = sirets_valid(digits)
        invalid += [siret for siret, ok in zip(formed, valid.tolist(), strict=True) if not ok]
    return invalid


def merge_outcomes(key: tuple[str, str], outcomes: Sequence[CheckOutcome]) -> CheckOutcome:
    """One check's outcomes over the batches of a larger write, as one: passed when every
    batch passed, the offending rows added up."""
    failed = [o for o in outcomes if not o.passed]
    return CheckOutcome(
        key[0],
        key[1],
        not failed,
        {
            "offending": sum(int(o.metadata.get("offending", 0)) for o in outcomes),
            "batches": len(outcomes),
            "sample": [s for o in failed for s in o.metadata.get("sample", [])][:SAMPLE_SIZE],
        },
    )


def share(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def audit_publication(
    conn: psycopg.Connection,
    sirets: Sequence[str],
    *,
    records: int,
    invalid_rejected: Sequence[str] = (),
    unusable_rejected: Sequence[str] = (),
    prolocalisations: ProLocalisationCounts | None = None,
    checks: Sequence[tuple[str, str]] = tuple(BLOCKING_CHECKS),
    positions: Mapping[str, Any] | None = None,
    written: str | None = None,
) -> list[CheckOutcome]:
    """Every blocking check of `checks` on what this transaction sees for `sirets`.

    `records` is how many records the batch held (before mapping); `invalid_rejected` the
    SIRETs the mapping rejected as invalid, `unusable_rejected` those it rejected for another
    reason; `prolocalisations` what the ProLocalisation sync
    of the batch found (needed for the share checks); `positions` how the batch's mapping
    positioned its establishments (`mapping.position_counts`, for `positions_in_territory`);
    `written` the temporary table new establishments were stored in (`audit_entreprises`).
    """
    wanted = set(checks)
    outcomes: list[CheckOutcome] = []
    # Tens of thousands of result rows on top of a day's landed records: the cyclic
    # collector would walk that whole heap for objects that hold no cycle.
    with paused_gc():
        audit = audit_entreprises(conn, sirets, written=written)
    if (ENTREPRISES, "valid_identifiers") in wanted:
        invalid_share = share(len(invalid_rejected), records) if records else 0.0
        outcomes.append(
            CheckOutcome(
                ENTREPRISES,
                "valid_identifiers",
                not audit.invalid_identifiers and invalid_share <= MAX_INVALID_SHARE,
                {
                    "offending": len(audit.invalid_identifiers) + len(invalid_rejected),
                    "invalid_stored": len(audit.invalid_identifiers),
                    "invalid_rejected": len(invalid_rejected),
                    "rejected_share": round(invalid_share, 4),
                    "sample": [*audit.invalid_identifiers, *invalid_rejected][:SAMPLE_SIZE],
                },
            )
        )
    if (ENTREPRISES, "records_usable") in wanted:
        unusable_share = share(len(unusable_rejected), records) if records else 0.0
        outcomes.append(
            CheckOutcome(
                ENTREPRISES,
                "records_usable",
                unusable_share <= MAX_UNUSABLE_SHARE,
                {
                    "offending": len(unusable_rejected),
                    "rejected_share": round(unusable_share, 4),
                    "records": records,
                    "sample": list(unusable_rejected[:SAMPLE_SIZE]),
                },
            )
        )
    if (ENTREPRISES, "one_row_per_siret") in wanted:
        distinct = len(set(sirets))
        outcomes.append(
            CheckOutcome(
                ENTREPRISES,
                "one_row_per_siret",
                audit.duplicate_sirets == 0 and distinct == len(sirets),
                {
                    "offending": audit.duplicate_sirets + len(sirets) - distinct,
                    "batch_sirets": len(sirets),
                    "distinct_sirets": distinct,
                    "duplicate_rows": audit.duplicate_sirets,
                },
            )
        )
    if (ENTREPRISES, "no_nd_stored") in wanted:
        outcomes.append(
            CheckOutcome(
                ENTREPRISES,
                "no_nd_stored",
                audit.nd_rows == 0,
                {"offending": audit.nd_rows, "sample": audit.nd_sample},
            )
        )
    if (ENTREPRISES, "diffusion_policy") in wanted:
        violations = audit.diffusion_violations
        outcomes.append(
            CheckOutcome(
                ENTREPRISES,
                "diffusion_policy",
                not violations,
                {"offending": len(violations), "sample": violations[:SAMPLE_SIZE]},
            )
        )
    if (ENTREPRISES, "positions_in_territory") in wanted:
        outcomes.append(positions_outcome(positions or {}))
    pl = prolocalisations
    if pl is not None and (PRO_LOCALISATIONS, "villes_resolved") in wanted:
        outcomes.append(
            _share_outcome(
                "villes_resolved", pl, pl.ville_resolved, MIN_VILLE_SHARE, pl.unresolved_ville_sample
            )
        )
    if pl is not None and (PRO_LOCALISATIONS, "trades_resolved") in wanted:
        outcomes.append(
            _share_outcome(
                "trades_resolved", pl, pl.trade_resolved, MIN_TRADE_SHARE, pl.unresolved_trade_sample,
                pending=pl.trade_pending,
            )
        )
    return outcomes


def positions_outcome(positions: Mapping[str, Any]) -> CheckOutcome:
    """`positions_in_territory` on a batch's position counts: of the establishments whose
    coordinates were converted, the share that fell outside their territory."""
    outside = int(positions.get("outside_territory", 0))
    converted = int(positions.get("positioned", 0)) + outside
    outside_share = outside / converted if converted else 0.0
    return CheckOutcome(
        ENTREPRISES,
        "positions_in_territory",
        outside_share <= MAX_OUTSIDE_TERRITORY_SHARE,
        {
            "offending": outside,
            "converted": converted,
            "outside_share": round(outside_share, 4),
            "by_reason": {k: v for k, v in positions.items() if k != "by_departement"},
        },
    )


def _share_outcome(
    name: str,
    pl: ProLocalisationCounts,
    resolved: int,
    minimum: float,
    sample: list[dict[str, Any]],
    *,
    pending: int = 0,
) -> CheckOutcome:
    """A check that enough of the batch's active establishments resolved; `pending` of them
    are left out of the count (waiting for a mapping, not unresolvable)."""
    considered = pl.active - pending
    resolved_share = share(resolved, considered)
    metadata: dict[str, Any] = {
        "offending": considered - resolved,
        "share": round(resolved_share, 4),
        "active": pl.active,
        "resolved": resolved,
        "unmatched_by_reason": pl.unmatched_by_reason,
        "sample": sample,
    }
    if pending:
        metadata["pending_naf2025_mapping"] = pending
    return CheckOutcome(PRO_LOCALISATIONS, name, resolved_share >= minimum, metadata)
