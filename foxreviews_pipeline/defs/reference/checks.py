"""Quality gates of the reference group. Blocking ones stop downstream assets from running
on a nomenclature, taxonomy or commune table they could not join correctly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import psycopg

from foxreviews_pipeline.defs.reference.assets import naf_nomenclature, trade_taxonomy, villes
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.lib.reference.naf import NAF_REV2

NAF_REV2_CODES = 732
VILLES_RANGE = (34_000, 36_000)
CATEGORIES_RANGE = (15, 30)
TRADES_RANGE = (80, 200)
_SAMPLE = 20


def _row(
    conn: psycopg.Connection, query: str, params: Mapping[str, object] | None = None
) -> tuple[Any, ...]:
    """The one row of an aggregate query."""
    row = conn.execute(query, params or {}).fetchone()
    if row is None:
        raise RuntimeError(f"an aggregate query returned no row: {query.strip()}")
    return row


def _scalar(
    postgres: PostgresResource, query: str, params: Mapping[str, object] | None = None
) -> Any:
    with postgres.connection() as conn:
        return _row(conn, query, params)[0]


def _column(
    postgres: PostgresResource, query: str, params: Mapping[str, object] | None = None
) -> list[Any]:
    with postgres.connection() as conn:
        return [row[0] for row in conn.execute(query, params or {}).fetchall()]


@dg.asset_check(asset=naf_nomenclature, blocking=True)
def naf_code_count(postgres: PostgresResource) -> dg.AssetCheckResult:
    """NAF rév. 2 has exactly 732 sous-classes."""
    count = _scalar(postgres, "SELECT count(*) FROM ref_naf_nomenclature WHERE nomenclature = %(n)s", {"n": NAF_REV2})
    return dg.AssetCheckResult(
        passed=count == NAF_REV2_CODES,
        metadata={"codes": dg.MetadataValue.int(count), "expected": dg.MetadataValue.int(NAF_REV2_CODES)},
    )


@dg.asset_check(asset=naf_nomenclature, blocking=True)
def naf_codes_well_formed(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every code has a label and a consistent hierarchy (62.01Z ⊂ 62.01 ⊂ 62.0 ⊂ 62)."""
    bad = _column(postgres, """
        SELECT code FROM ref_naf_nomenclature
        WHERE nomenclature = %(n)s
          AND (btrim(libelle) = '' OR libelle <> btrim(libelle)
               OR left(code, 5) <> classe OR left(classe, 4) <> groupe OR left(groupe, 2) <> division)
        ORDER BY code
    """, {"n": NAF_REV2})
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"malformed": dg.MetadataValue.int(len(bad)), "sample": dg.MetadataValue.json(bad[:_SAMPLE])},
    )


@dg.asset_check(asset=trade_taxonomy, blocking=True)
def every_naf_code_covered(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every NAF rév. 2 code of the nomenclature is mapped to a trade or excluded with a
    reason; an uncovered code would silently drop its establishments from the directory."""
    with postgres.connection() as conn:
        (total,) = _row(
            conn, "SELECT count(*) FROM ref_naf_nomenclature WHERE nomenclature = %(n)s", {"n": NAF_REV2}
        )
        uncovered = [r[0] for r in conn.execute("""
            SELECT n.code FROM ref_naf_nomenclature n
            LEFT JOIN ref_naf_mapping m ON m.nomenclature = n.nomenclature AND m.naf_code = n.code
            WHERE n.nomenclature = %(n)s AND m.naf_code IS NULL
            ORDER BY n.code
        """, {"n": NAF_REV2}).fetchall()]
    return dg.AssetCheckResult(
        passed=total > 0 and not uncovered,
        metadata={
            "codes": dg.MetadataValue.int(total),
            "covered": dg.MetadataValue.int(total - len(uncovered)),
            "uncovered": dg.MetadataValue.int(len(uncovered)),
            "uncovered_sample": dg.MetadataValue.json(uncovered[:_SAMPLE]),
        },
    )


@dg.asset_check(asset=trade_taxonomy, blocking=True)
def mapped_trades_reachable(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every NAF code mapped to a trade points at an active trade of an active category,
    so that its establishments are listed where visitors can find them."""
    bad = _column(postgres, """
        SELECT m.naf_code || ' → ' || coalesce(s.slug, '?') FROM ref_naf_mapping m
        LEFT JOIN subcategory_souscategorie s ON s.id = m.sous_categorie_id
        LEFT JOIN category_categorie c ON c.id = s.categorie_id
        WHERE m.sous_categorie_id IS NOT NULL AND NOT (coalesce(s.is_active, false) AND coalesce(c.is_active, false))
        ORDER BY 1
    """)
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"unreachable": dg.MetadataValue.int(len(bad)), "sample": dg.MetadataValue.json(bad[:_SAMPLE])},
    )


@dg.asset_check(asset=trade_taxonomy, blocking=False)
def taxonomy_size(postgres: PostgresResource) -> dg.AssetCheckResult:
    """About 20 categories and 100–150 trades: far outside that, the file was probably cut or duplicated."""
    with postgres.connection() as conn:
        categories, trades = _row(conn, """
            SELECT (SELECT count(*) FROM category_categorie WHERE is_active),
                   (SELECT count(*) FROM subcategory_souscategorie WHERE is_active)
        """)
    return dg.AssetCheckResult(
        passed=CATEGORIES_RANGE[0] <= categories <= CATEGORIES_RANGE[1] and TRADES_RANGE[0] <= trades <= TRADES_RANGE[1],
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"categories": dg.MetadataValue.int(categories), "trades": dg.MetadataValue.int(trades)},
    )


@dg.asset_check(asset=villes, blocking=True)
def villes_count(postgres: PostgresResource) -> dg.AssetCheckResult:
    """About 35,000 active communes (COG 2026: 34,969)."""
    count = _scalar(postgres, "SELECT count(*) FROM location_ville WHERE is_active")
    return dg.AssetCheckResult(
        passed=VILLES_RANGE[0] <= count <= VILLES_RANGE[1],
        metadata={"active_villes": dg.MetadataValue.int(count),
                  "expected_range": dg.MetadataValue.text(f"{VILLES_RANGE[0]}–{VILLES_RANGE[1]}")},
    )


@dg.asset_check(asset=villes, blocking=True)
def villes_unique_keys(postgres: PostgresResource) -> dg.AssetCheckResult:
    """INSEE codes and slugs identify one ville each, and no alias shadows a current
    commune (a code would then resolve two ways)."""
    with postgres.connection() as conn:
        dup_codes, dup_slugs, shadowing = _row(conn, """
            SELECT
              (SELECT count(*) FROM (SELECT code_insee FROM location_ville GROUP BY 1 HAVING count(*) > 1) d),
              (SELECT count(*) FROM (SELECT slug FROM location_ville GROUP BY 1 HAVING count(*) > 1) d),
              (SELECT count(*) FROM location_commune_alias a
               JOIN location_ville v ON v.code_insee = a.code_insee AND v.is_active)
        """)
    return dg.AssetCheckResult(
        passed=dup_codes == dup_slugs == shadowing == 0,
        metadata={
            "duplicate_code_insee": dg.MetadataValue.int(dup_codes),
            "duplicate_slug": dg.MetadataValue.int(dup_slugs),
            "aliases_shadowing_a_ville": dg.MetadataValue.int(shadowing),
        },
    )


@dg.asset_check(asset=villes, blocking=True)
def villes_have_departement_and_region(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every active ville has a département and a région (the web app groups by both)."""
    bad = _column(postgres, """
        SELECT code_insee FROM location_ville
        WHERE is_active AND (coalesce(btrim(departement), '') = '' OR coalesce(btrim(region), '') = '')
        ORDER BY 1
    """)
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"missing": dg.MetadataValue.int(len(bad)), "sample": dg.MetadataValue.json(bad[:_SAMPLE])},
    )


@dg.asset_check(asset=villes, blocking=False)
def commune_aliases_resolve(postgres: PostgresResource) -> dg.AssetCheckResult:
    """Every alias (arrondissement, commune déléguée…) leads to an active ville."""
    bad = _column(postgres, """
        SELECT a.code_insee FROM location_commune_alias a
        LEFT JOIN location_ville v ON v.code_insee = a.ville_code_insee AND v.is_active
        WHERE v.id IS NULL ORDER BY 1
    """)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"dangling": dg.MetadataValue.int(len(bad)), "sample": dg.MetadataValue.json(bad[:_SAMPLE])},
    )


REFERENCE_CHECKS = [
    naf_code_count,
    naf_codes_well_formed,
    every_naf_code_covered,
    mapped_trades_reachable,
    taxonomy_size,
    villes_count,
    villes_unique_keys,
    villes_have_departement_and_region,
    commune_aliases_resolve,
]
