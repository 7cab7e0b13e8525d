"""NAF 2025 → trade: learned from the directory's own pairs of codes, combined with INSEE's
correspondence table, overridden by reviewed rows (docs/data-model.md, "NAF 2025").

Through 2026 every SIRENE record carries its NAF rév. 2 code and its future NAF 2025 code
(`activitePrincipaleNAF25Etablissement`). The rév. 2 code maps to a trade (or an exclusion)
through the reviewed mapping, so the establishments of a NAF 2025 code say where it belongs:

1. a `reviewed` row of `naf_mapping.csv` (nomenclature `NAF2025`) decides;
2. otherwise the `evidence`: when at least `EVIDENCE_MIN_SHARE` of the establishments of the
   code map one way (a trade, or one exclusion), and INSEE's correspondence does not point
   unambiguously elsewhere;
3. otherwise, with no evidence, the `correspondence` when every rév. 2 code INSEE pairs with
   the code maps the same way;
4. anything else is left to review (`ref_naf_review`, with the counts), and its
   establishments keep the trade they had.
"""

from __future__ import annotations

import csv
import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from foxreviews_pipeline.lib.reference.naf import NafCode, load_naf
from foxreviews_pipeline.lib.reference.snapshots import (
    NAF2025_CORRESPONDENCE_FILE,
    NAF2025_FILE,
    REFERENCE_DATA_DIR,
    read_csv_gz,
)

NAF_2025 = "NAF2025"
# The day INSEE's APE codes become NAF 2025 (décret n° 2025-736).
NAF2025_SWITCH = date(2027, 1, 1)
# The share of a code's establishments that must agree for the evidence to decide alone: a
# few records coded oddly by INSEE do not send a code to review, a real split does.
EVIDENCE_MIN_SHARE = 0.95

BASIS_REVIEWED, BASIS_EVIDENCE, BASIS_CORRESPONDENCE = "reviewed", "evidence", "correspondence"


def load_naf2025(path: Path | None = None) -> list[NafCode]:
    """The NAF 2025 sous-classes, sorted by code."""
    if path is None:
        return list(_shipped_codes())
    return load_naf(path)


@functools.cache
def _shipped_codes() -> tuple[NafCode, ...]:
    return tuple(load_naf(REFERENCE_DATA_DIR / NAF2025_FILE))


@functools.cache
def load_correspondence() -> tuple[tuple[str, str], ...]:
    """INSEE's correspondence NAF rév. 2 → NAF 2025 as (rév. 2 code, NAF 2025 code) pairs."""
    rows = read_csv_gz(REFERENCE_DATA_DIR / NAF2025_CORRESPONDENCE_FILE)
    return tuple((row["naf_rev2"], row["naf2025"]) for row in rows)


def correspondents() -> dict[str, tuple[str, ...]]:
    """Each rév. 2 code's NAF 2025 codes."""
    found: dict[str, list[str]] = defaultdict(list)
    for rev2, code in load_correspondence():
        found[rev2].append(code)
    return {rev2: tuple(codes) for rev2, codes in found.items()}


def load_correspondence_table(conn: psycopg.Connection, pairs: Iterable[tuple[str, str]]) -> int:
    """Replace `ref_naf_correspondence` with `pairs`; returns how many rows it holds."""
    pairs = sorted(set(pairs))
    stored = set(conn.execute("SELECT naf_rev2, naf2025 FROM ref_naf_correspondence").fetchall())
    if stored != set(pairs):
        conn.execute("DELETE FROM ref_naf_correspondence")
        with conn.cursor().copy("COPY ref_naf_correspondence (naf_rev2, naf2025) FROM STDIN") as copy:
            for pair in pairs:
                copy.write_row(pair)
    return len(pairs)


# An outcome of the mapping: ("trade", slug) or ("excluded", reason).
Outcome = tuple[str, str]


def _label(outcome: Outcome) -> str:
    kind, value = outcome
    return value if kind == "trade" else f"excluded: {value}"


@dataclass(frozen=True)
class Decision:
    code: str
    outcome: Outcome | None  # None: to review
    basis: str | None
    evidence: dict[str, int]
    reason: str = ""

    @property
    def establishments(self) -> int:
        return sum(self.evidence.values())


def decide(
    codes: Iterable[str],
    evidence: Mapping[str, Mapping[Outcome, int]],
    correspondence: Mapping[str, set[Outcome]],
    reviewed: Iterable[str] = (),
) -> list[Decision]:
    """The decision for every code of `codes` not in `reviewed` (pure: the rules above)."""
    done = set(reviewed)
    decisions = []
    for code in sorted(set(codes) - done):
        seen = Counter(evidence.get(code, {}))
        counts = {_label(o): n for o, n in seen.most_common()}
        paired = correspondence.get(code, set())
        total = sum(seen.values())
        if total:
            top, n = seen.most_common(1)[0]
            if len(paired) == 1 and top not in paired:
                decisions.append(Decision(code, None, None, counts, "evidence and correspondence disagree"))
            elif n / total >= EVIDENCE_MIN_SHARE:
                decisions.append(Decision(code, top, BASIS_EVIDENCE, counts))
            else:
                decisions.append(Decision(code, None, None, counts, "evidence splits"))
        elif len(paired) == 1:
            decisions.append(Decision(code, next(iter(paired)), BASIS_CORRESPONDENCE, counts))
        elif paired:
            decisions.append(Decision(code, None, None, counts, "no evidence; correspondence splits"))
        else:
            decisions.append(Decision(code, None, None, counts, "no evidence; no correspondence"))
    return decisions


@dataclass
class Naf2025Coverage:
    codes: int = 0  # in the NAF 2025 list
    reviewed: int = 0
    evidence: int = 0
    correspondence: int = 0
    to_review: int = 0
    mapped_to_trade: int = 0
    excluded: int = 0
    establishments_with_code: int = 0
    establishments_covered: int = 0
    changed_codes: list[str] = field(default_factory=list)
    review: list[Decision] = field(default_factory=list)

    @property
    def mapped(self) -> int:
        return self.reviewed + self.evidence + self.correspondence

    @property
    def establishments_share(self) -> float:
        if not self.establishments_with_code:
            return 1.0
        return self.establishments_covered / self.establishments_with_code

    def as_dict(self) -> dict[str, int | float]:
        return {
            "naf2025_codes": self.codes,
            "naf2025_mapped": self.mapped,
            "naf2025_reviewed": self.reviewed,
            "naf2025_from_evidence": self.evidence,
            "naf2025_from_correspondence": self.correspondence,
            "naf2025_to_review": self.to_review,
            "naf2025_establishments": self.establishments_with_code,
            "naf2025_establishments_covered": self.establishments_covered,
            "naf2025_establishments_share": round(self.establishments_share, 4),
        }


def _evidence(conn: psycopg.Connection) -> dict[str, dict[Outcome, int]]:
    """For each NAF 2025 code, how the establishments carrying it map through rév. 2."""
    rows = conn.execute(
        """
        SELECT e.naf25_code, s.slug, m.excluded_reason, count(*)
        FROM enterprise_entreprise e
        JOIN ref_naf_mapping m ON m.nomenclature = 'NAFRev2'
         AND m.naf_code = CASE WHEN e.naf_nomenclature = 'NAFRev2' THEN e.naf_code
                               ELSE e.naf_rev2_code END
        LEFT JOIN subcategory_souscategorie s ON s.id = m.sous_categorie_id
        WHERE e.naf25_code IS NOT NULL
          AND (e.naf_nomenclature = 'NAFRev2' OR e.naf_rev2_code IS NOT NULL)
        GROUP BY 1, 2, 3
        """
    ).fetchall()
    found: dict[str, dict[Outcome, int]] = defaultdict(dict)
    for code, slug, reason, n in rows:
        outcome: Outcome = ("trade", slug) if slug is not None else ("excluded", reason)
        found[code][outcome] = found[code].get(outcome, 0) + n
    return found


def _correspondence_outcomes(conn: psycopg.Connection) -> dict[str, set[Outcome]]:
    rows = conn.execute(
        """
        SELECT c.naf2025, s.slug, m.excluded_reason
        FROM ref_naf_correspondence c
        JOIN ref_naf_mapping m ON m.nomenclature = 'NAFRev2' AND m.naf_code = c.naf_rev2
        LEFT JOIN subcategory_souscategorie s ON s.id = m.sous_categorie_id
        """
    ).fetchall()
    found: dict[str, set[Outcome]] = defaultdict(set)
    for code, slug, reason in rows:
        found[code].add(("trade", slug) if slug is not None else ("excluded", reason))
    return found


def _stored(conn: psycopg.Connection) -> dict[str, tuple[int | None, str | None]]:
    return {
        code: (sub, reason)
        for code, sub, reason in conn.execute(
            "SELECT naf_code, sous_categorie_id, excluded_reason FROM ref_naf_mapping "
            "WHERE nomenclature = %s",
            (NAF_2025,),
        )
    }


def learn_naf2025_mapping(conn: psycopg.Connection, codes: Sequence[str]) -> Naf2025Coverage:
    """Rewrite the learned NAF 2025 rows of `ref_naf_mapping` and the review list from the
    directory's evidence and the correspondence table; reviewed rows are kept as they are.

    `codes` is the NAF 2025 list; a code seen in the directory but outside it is learned too
    (kept and counted, never an error). Returns the coverage and the codes whose mapping
    changed."""
    before = _stored(conn)
    reviewed = {
        code
        for (code,) in conn.execute(
            "SELECT naf_code FROM ref_naf_mapping WHERE nomenclature = %s AND basis = %s",
            (NAF_2025, BASIS_REVIEWED),
        )
    }
    evidence = _evidence(conn)
    decisions = decide([*codes, *evidence], evidence, _correspondence_outcomes(conn), reviewed)
    slugs: dict[str, int] = dict(
        conn.execute("SELECT slug, id FROM subcategory_souscategorie").fetchall()
    )

    learned = [d for d in decisions if d.outcome is not None]
    review = [d for d in decisions if d.outcome is None]
    _write_learned(conn, learned, slugs)
    _write_review(conn, review)

    after = _stored(conn)
    coverage = Naf2025Coverage(
        codes=len(set(codes)),
        reviewed=len(reviewed),
        evidence=sum(1 for d in learned if d.basis == BASIS_EVIDENCE),
        correspondence=sum(1 for d in learned if d.basis == BASIS_CORRESPONDENCE),
        to_review=len(review),
        mapped_to_trade=sum(1 for sub, _ in after.values() if sub is not None),
        excluded=sum(1 for sub, _ in after.values() if sub is None),
        changed_codes=sorted(c for c in set(before) | set(after) if before.get(c) != after.get(c)),
        review=sorted(review, key=lambda d: (-d.establishments, d.code)),
    )
    row = conn.execute(
        """
        SELECT count(*), count(m.naf_code)
        FROM enterprise_entreprise e
        LEFT JOIN ref_naf_mapping m ON m.nomenclature = 'NAF2025' AND m.naf_code = e.naf25_code
        WHERE e.naf25_code IS NOT NULL
        """
    ).fetchone()
    if row is not None:
        coverage.establishments_with_code, coverage.establishments_covered = row
    return coverage


def _write_learned(
    conn: psycopg.Connection, learned: Sequence[Decision], slugs: Mapping[str, int]
) -> None:
    """The learned rows of `ref_naf_mapping` become `learned`; a row that does not change is
    not touched, and a reviewed row is never overwritten."""
    conn.execute(
        "CREATE TEMP TABLE stage_naf2025_learned (naf_code text PRIMARY KEY, "
        "sous_categorie_id bigint, excluded_reason text, basis text, evidence jsonb) ON COMMIT DROP"
    )
    with conn.cursor().copy(
        "COPY stage_naf2025_learned (naf_code, sous_categorie_id, excluded_reason, basis, evidence) "
        "FROM STDIN"
    ) as copy:
        for d in learned:
            assert d.outcome is not None
            kind, value = d.outcome
            copy.write_row((
                d.code,
                slugs[value] if kind == "trade" else None,
                value if kind == "excluded" else None,
                d.basis,
                Jsonb(d.evidence),
            ))
    conn.execute(
        """
        DELETE FROM ref_naf_mapping t
        WHERE t.nomenclature = 'NAF2025' AND t.basis <> 'reviewed'
          AND NOT EXISTS (SELECT 1 FROM stage_naf2025_learned s WHERE s.naf_code = t.naf_code)
        """
    )
    conn.execute(
        """
        INSERT INTO ref_naf_mapping AS t
            (nomenclature, naf_code, sous_categorie_id, excluded_reason, basis, evidence)
        SELECT 'NAF2025', naf_code, sous_categorie_id, excluded_reason, basis, evidence
        FROM stage_naf2025_learned
        ON CONFLICT (nomenclature, naf_code) DO UPDATE
        SET sous_categorie_id = excluded.sous_categorie_id, excluded_reason = excluded.excluded_reason,
            basis = excluded.basis, evidence = excluded.evidence, updated_at = now()
        WHERE t.basis <> 'reviewed'
          AND (t.sous_categorie_id, t.excluded_reason, t.basis, t.evidence)
              IS DISTINCT FROM (excluded.sous_categorie_id, excluded.excluded_reason,
                                excluded.basis, excluded.evidence)
        """
    )
    conn.execute("DROP TABLE stage_naf2025_learned")


def _write_review(conn: psycopg.Connection, review: Sequence[Decision]) -> None:
    """`ref_naf_review` becomes `review`, rows that do not change untouched."""
    wanted = {d.code: d for d in review}
    stored = {
        code: (n, evidence, reason)
        for code, n, evidence, reason in conn.execute(
            "SELECT naf_code, establishments, evidence, reason FROM ref_naf_review "
            "WHERE nomenclature = %s",
            (NAF_2025,),
        )
    }
    gone = [code for code in stored if code not in wanted]
    if gone:
        conn.execute(
            "DELETE FROM ref_naf_review WHERE nomenclature = %s AND naf_code = ANY(%s)",
            (NAF_2025, gone),
        )
    changed = [
        d for d in review if stored.get(d.code) != (d.establishments, d.evidence, d.reason)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO ref_naf_review (nomenclature, naf_code, establishments, evidence, reason)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (nomenclature, naf_code) DO UPDATE
            SET establishments = excluded.establishments, evidence = excluded.evidence,
                reason = excluded.reason, updated_at = now()
            """,
            [(NAF_2025, d.code, d.establishments, Jsonb(d.evidence), d.reason) for d in changed],
        )


def write_review_file(path: Path, review: Sequence[Decision], labels: Mapping[str, str]) -> Path:
    """The codes left to review as a CSV in `naf_mapping.csv`'s columns, decisions empty,
    with the counts: fill `sous_categorie` or `excluded_reason` and move the row into
    `naf_mapping.csv`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["nomenclature", "naf_code", "libelle", "sous_categorie", "excluded_reason",
             "establishments", "evidence", "reason"]
        )
        for d in review:
            evidence = "; ".join(f"{k}: {n}" for k, n in d.evidence.items())
            writer.writerow(
                [NAF_2025, d.code, labels.get(d.code, ""), "", "", d.establishments, evidence, d.reason]
            )
    temporary.replace(path)
    return path


def naf2025_sirets_to_resync(conn: psycopg.Connection, codes: Sequence[str]) -> list[str]:
    """Establishments mapped through NAF 2025 (no rév. 2 code kept) with one of `codes`."""
    if not codes:
        return []
    return [
        siret
        for (siret,) in conn.execute(
            """
            SELECT siret FROM enterprise_entreprise
            WHERE naf_nomenclature = 'NAF2025' AND naf_rev2_code IS NULL AND naf_code = ANY(%s)
            """,
            (list(codes),),
        )
    ]
