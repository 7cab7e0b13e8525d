"""The checks of the reference tables, run inside each load's transaction (`lib/publish.py`):
a blocking one that fails rolls the load back, so no later asset joins on a nomenclature,
taxonomy or commune table it could not use. A non-blocking one is a warning."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from foxreviews_pipeline.lib.asset_keys import NAF_NOMENCLATURE, TRADE_TAXONOMY, VILLES
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.publish import CheckOutcome
from foxreviews_pipeline.lib.reference.naf import NAF_REV2

NAF_REV2_CODES = 732
VILLES_RANGE = (34_000, 36_000)
CATEGORIES_RANGE = (15, 30)
TRADES_RANGE = (80, 200)
_SAMPLE = 20


@dataclass(frozen=True)
class ReferenceCheck:
    asset: str
    name: str
    description: str
    blocking: bool
    run: Callable[[psycopg.Connection], tuple[bool, dict[str, Any]]]

    def outcome(self, conn: psycopg.Connection) -> CheckOutcome:
        passed, metadata = self.run(conn)
        return CheckOutcome(self.asset, self.name, passed, metadata, blocking=self.blocking)


def _scalar(conn: psycopg.Connection, query: str, params: Mapping[str, object] | None = None) -> Any:
    return one_row(conn.execute(query, params or {}))[0]


def _column(conn: psycopg.Connection, query: str, params: Mapping[str, object] | None = None) -> list[Any]:
    return [row[0] for row in conn.execute(query, params or {}).fetchall()]


def _naf_code_count(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    count = _scalar(conn, "SELECT count(*) FROM ref_naf_nomenclature WHERE nomenclature = %(n)s", {"n": NAF_REV2})
    return count == NAF_REV2_CODES, {"codes": count, "expected": NAF_REV2_CODES}


def _naf_codes_well_formed(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    bad = _column(conn, """
        SELECT code FROM ref_naf_nomenclature
        WHERE nomenclature = %(n)s
          AND (btrim(libelle) = '' OR libelle <> btrim(libelle)
               OR left(code, 5) <> classe OR left(classe, 4) <> groupe OR left(groupe, 2) <> division)
        ORDER BY code
    """, {"n": NAF_REV2})
    return not bad, {"offending": len(bad), "sample": bad[:_SAMPLE]}


def _every_naf_code_covered(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    total = _scalar(conn, "SELECT count(*) FROM ref_naf_nomenclature WHERE nomenclature = %(n)s", {"n": NAF_REV2})
    uncovered = _column(conn, """
        SELECT n.code FROM ref_naf_nomenclature n
        LEFT JOIN ref_naf_mapping m ON m.nomenclature = n.nomenclature AND m.naf_code = n.code
        WHERE n.nomenclature = %(n)s AND m.naf_code IS NULL
        ORDER BY n.code
    """, {"n": NAF_REV2})
    return total > 0 and not uncovered, {
        "codes": total,
        "covered": total - len(uncovered),
        "offending": len(uncovered),
        "sample": uncovered[:_SAMPLE],
    }


def _mapped_trades_reachable(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    bad = _column(conn, """
        SELECT m.naf_code || ' → ' || coalesce(s.slug, '?') FROM ref_naf_mapping m
        LEFT JOIN subcategory_souscategorie s ON s.id = m.sous_categorie_id
        LEFT JOIN category_categorie c ON c.id = s.categorie_id
        WHERE m.sous_categorie_id IS NOT NULL AND NOT (coalesce(s.is_active, false) AND coalesce(c.is_active, false))
        ORDER BY 1
    """)
    return not bad, {"offending": len(bad), "sample": bad[:_SAMPLE]}


def _taxonomy_size(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    categories, trades = one_row(conn.execute("""
        SELECT (SELECT count(*) FROM category_categorie WHERE is_active),
               (SELECT count(*) FROM subcategory_souscategorie WHERE is_active)
    """))
    passed = CATEGORIES_RANGE[0] <= categories <= CATEGORIES_RANGE[1] and TRADES_RANGE[0] <= trades <= TRADES_RANGE[1]
    return passed, {"categories": categories, "trades": trades}


def _villes_count(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    count = _scalar(conn, "SELECT count(*) FROM location_ville WHERE is_active")
    return VILLES_RANGE[0] <= count <= VILLES_RANGE[1], {
        "active_villes": count,
        "expected_range": f"{VILLES_RANGE[0]}–{VILLES_RANGE[1]}",
    }


def _villes_unique_keys(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    dup_codes, dup_slugs, shadowing = one_row(conn.execute("""
        SELECT
          (SELECT count(*) FROM (SELECT code_insee FROM location_ville GROUP BY 1 HAVING count(*) > 1) d),
          (SELECT count(*) FROM (SELECT slug FROM location_ville GROUP BY 1 HAVING count(*) > 1) d),
          (SELECT count(*) FROM location_commune_alias a
           JOIN location_ville v ON v.code_insee = a.code_insee AND v.is_active)
    """))
    return dup_codes == dup_slugs == shadowing == 0, {
        "offending": dup_codes + dup_slugs + shadowing,
        "duplicate_code_insee": dup_codes,
        "duplicate_slug": dup_slugs,
        "aliases_shadowing_a_ville": shadowing,
    }


def _villes_have_departement_and_region(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    bad = _column(conn, """
        SELECT code_insee FROM location_ville
        WHERE is_active AND (coalesce(btrim(departement), '') = '' OR coalesce(btrim(region), '') = '')
        ORDER BY 1
    """)
    return not bad, {"offending": len(bad), "sample": bad[:_SAMPLE]}


def _commune_aliases_resolve(conn: psycopg.Connection) -> tuple[bool, dict[str, Any]]:
    bad = _column(conn, """
        SELECT a.code_insee FROM location_commune_alias a
        LEFT JOIN location_ville v ON v.code_insee = a.ville_code_insee AND v.is_active
        WHERE v.id IS NULL ORDER BY 1
    """)
    return not bad, {"offending": len(bad), "sample": bad[:_SAMPLE]}


REFERENCE_CHECKS: tuple[ReferenceCheck, ...] = (
    ReferenceCheck(NAF_NOMENCLATURE, "naf_code_count",
                   f"NAF rév. 2 has exactly {NAF_REV2_CODES} sous-classes.", True, _naf_code_count),
    ReferenceCheck(NAF_NOMENCLATURE, "naf_codes_well_formed",
                   "Every code has a label and a consistent hierarchy (62.01Z ⊂ 62.01 ⊂ 62.0 ⊂ 62).",
                   True, _naf_codes_well_formed),
    ReferenceCheck(TRADE_TAXONOMY, "every_naf_code_covered",
                   "Every NAF rév. 2 code of the nomenclature is mapped to a trade or excluded with a "
                   "reason; an uncovered code would silently drop its establishments from the directory.",
                   True, _every_naf_code_covered),
    ReferenceCheck(TRADE_TAXONOMY, "mapped_trades_reachable",
                   "Every NAF code mapped to a trade points at an active trade of an active category, "
                   "so that its establishments are listed where visitors can find them.",
                   True, _mapped_trades_reachable),
    ReferenceCheck(TRADE_TAXONOMY, "taxonomy_size",
                   f"About 20 categories and 100–150 trades (warns outside {CATEGORIES_RANGE} categories, "
                   f"{TRADES_RANGE} trades): the file was probably cut or duplicated.",
                   False, _taxonomy_size),
    ReferenceCheck(VILLES, "villes_count",
                   "About 35,000 active communes (COG 2026: 34,969).", True, _villes_count),
    ReferenceCheck(VILLES, "villes_unique_keys",
                   "INSEE codes and slugs identify one ville each, and no alias shadows a current "
                   "commune (a code would then resolve two ways).", True, _villes_unique_keys),
    ReferenceCheck(VILLES, "villes_have_departement_and_region",
                   "Every active ville has a département and a région (the web app groups by both).",
                   True, _villes_have_departement_and_region),
    ReferenceCheck(VILLES, "commune_aliases_resolve",
                   "Every alias (arrondissement, commune déléguée…) leads to an active ville.",
                   False, _commune_aliases_resolve),
)


def checks_of(asset: str) -> tuple[ReferenceCheck, ...]:
    return tuple(c for c in REFERENCE_CHECKS if c.asset == asset)


def audit_named(*names: str) -> Callable[[psycopg.Connection, object], list[CheckOutcome]]:
    """The audit of a write that touches a reference table without reloading it (a staff
    upload): the checks of that name."""
    chosen = [check for check in REFERENCE_CHECKS if check.name in names]
    assert len(chosen) == len(names), names
    return lambda conn, _result: [check.outcome(conn) for check in chosen]


def audit_reference(asset: str) -> Callable[[psycopg.Connection, object], list[CheckOutcome]]:
    """The audit of a reference load (for `publish`): every check of its asset."""
    return lambda conn, _result: [check.outcome(conn) for check in checks_of(asset)]
