"""Set-based writes of the reference data into PostgreSQL.

Each function takes an open connection (the caller owns the transaction), COPYs its rows
into a temporary staging table and applies them with one `INSERT … ON CONFLICT … DO
UPDATE … WHERE (…) IS DISTINCT FROM (…)`, so that a row that did not change is not
written at all and a second run reports zero changes. Rows that left the source are
deactivated (villes, categories, trades) — never deleted, because the web app's content
points at them — or deleted when they are pure lookups (aliases, mapping rows).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from foxreviews_pipeline.lib.db.upsert import UpsertCounts, stage, upsert
from foxreviews_pipeline.lib.reference.communes import (
    Commune,
    CommuneAlias,
    normalise_name,
    ville_slugs,
)
from foxreviews_pipeline.lib.reference.naf import NAF_REV2, NafCode
from foxreviews_pipeline.lib.reference.tables import (
    CATEGORIES,
    SOUS_CATEGORIES,
    VILLES,
    Table,
    resolve_categories,
    stage_rows,
    upsert_rows,
)
from foxreviews_pipeline.lib.reference.taxonomy import Taxonomy, TaxonomyError

# The NULL rules of the reference load: the source is authoritative, except for what it
# leaves empty and others may fill — a trade's SEO texts (the web app and staff uploads) and
# a ville's coordinates (the offline snapshot has none; geo.api.gouv.fr runs store them).
_TAXONOMY_KEEPS = frozenset({"meta_description", "mots_cles"})
_COORDINATES = frozenset({"lat", "lng"})


@dataclass
class LoadCounts:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    deactivated: int = 0
    deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __add__(self, other: LoadCounts) -> LoadCounts:
        pairs = zip(asdict(self).values(), asdict(other).values(), strict=True)
        return LoadCounts(*(a + b for a, b in pairs))

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deactivated + self.deleted


def _count(conn: psycopg.Connection, query: str, params: Mapping[str, object] | None = None) -> int:
    return len(conn.execute(query, params or {}).fetchall())


def _counts(counts: UpsertCounts, removed: int = 0, *, deleted: bool = False) -> LoadCounts:
    if deleted:
        return LoadCounts(counts.staged, counts.inserted, counts.updated, deleted=removed)
    return LoadCounts(counts.staged, counts.inserted, counts.updated, removed)


def _deactivate_missing(conn: psycopg.Connection, table: Table, stage_name: str) -> int:
    """Deactivate the active rows the source no longer has (among those the taxonomy owns,
    where the table records it); how many."""
    owned = sql.SQL(" AND t.from_taxonomy" if "from_taxonomy" in table.from_reference else "")
    return conn.execute(
        sql.SQL(
            "UPDATE {table} t SET is_active = false, updated_at = now() WHERE t.is_active{owned} "
            "AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.{key} = t.{key})"
        ).format(
            table=sql.Identifier(table.name),
            owned=owned,
            stage=sql.Identifier(stage_name),
            key=sql.Identifier(table.key),
        )
    ).rowcount


def _blank(value: str | None) -> str | None:
    """An empty text in the taxonomy file: no value (the stored one stays)."""
    return value or None


# ---------------------------------------------------------------------------------------
# NAF


def load_naf_nomenclature(
    conn: psycopg.Connection, codes: Sequence[NafCode], nomenclature: str = NAF_REV2
) -> LoadCounts:
    """Upsert the nomenclature's codes. Codes are never removed: SIRENE keeps old ones."""
    counts = upsert(
        conn,
        "ref_naf_nomenclature",
        key=("nomenclature", "code"),
        columns=("nomenclature", "code", "libelle", "section", "division", "groupe", "classe"),
        rows=((nomenclature, c.code, c.libelle, c.section, c.division, c.groupe, c.classe) for c in codes),
        stage_name="stage_naf",
    )
    return _counts(counts)


# ---------------------------------------------------------------------------------------
# Trade taxonomy


@dataclass
class TaxonomyCounts:
    categories: LoadCounts
    sous_categories: LoadCounts
    mapping: LoadCounts

    @property
    def total(self) -> LoadCounts:
        return self.categories + self.sous_categories + self.mapping


def load_trade_taxonomy(conn: psycopg.Connection, taxonomy: Taxonomy) -> TaxonomyCounts:
    """Categories, then trades, then the NAF mapping. A category or trade that left the
    file is deactivated; a renamed one keeps its id, hence its mapping and its pages.

    `meta_description` and `mots_cles` left empty in the file keep the database's value
    (the web app and staff uploads may fill them)."""
    problems = taxonomy.problems()
    if problems:
        raise TaxonomyError("; ".join(problems))

    stage_rows(
        conn, CATEGORIES, "stage_categorie",
        ((c.slug, c.nom, c.description, _blank(c.meta_description), c.ordre) for c in taxonomy.categories),
        primary_key=("slug",),
    )
    upserted = upsert_rows(
        conn, CATEGORIES, "stage_categorie", keep_existing_when_null=_TAXONOMY_KEEPS, from_reference=True
    )
    deactivated = _deactivate_missing(conn, CATEGORIES, "stage_categorie")
    categories = _counts(upserted, deactivated)

    stage_rows(
        conn, SOUS_CATEGORIES, "stage_souscategorie",
        ((s.slug, s.nom, s.categorie, s.description, _blank(s.meta_description), _blank(s.mots_cles), s.ordre)
         for s in taxonomy.sous_categories),
        primary_key=("slug",),
    )
    resolve_categories(conn, "stage_souscategorie")
    # The taxonomy is checked above: every trade's category is in it.
    conn.execute("DELETE FROM stage_souscategorie WHERE categorie_id IS NULL")
    upserted = upsert_rows(
        conn, SOUS_CATEGORIES, "stage_souscategorie", keep_existing_when_null=_TAXONOMY_KEEPS,
        from_reference=True,
    )
    deactivated = _deactivate_missing(conn, SOUS_CATEGORIES, "stage_souscategorie")
    sous_categories = _counts(upserted, deactivated)

    stage(
        conn, "stage_naf_mapping",
        like="ref_naf_mapping",
        columns=("nomenclature", "naf_code", "sous_categorie", "excluded_reason", "basis"),
        rows=((m.nomenclature, m.naf_code, m.sous_categorie, m.excluded_reason, "reviewed")
              for m in taxonomy.mappings),
        types={"sous_categorie": "text"},
        computed={"sous_categorie_id": "bigint"},
        primary_key=("nomenclature", "naf_code"),
    )
    conn.execute("""
        UPDATE stage_naf_mapping m SET sous_categorie_id = s.id
        FROM subcategory_souscategorie s WHERE s.slug = m.sous_categorie
    """)
    upserted = upsert(
        conn, "ref_naf_mapping", stage_name="stage_naf_mapping",
        key=("nomenclature", "naf_code"),
        columns=("nomenclature", "naf_code", "sous_categorie_id", "excluded_reason", "basis"),
    )
    # Reviewed rows that left the file; rows learned from the directory (lib/reference/
    # naf2025.py) are rewritten by their own step.
    deleted = _count(conn, """
        DELETE FROM ref_naf_mapping t
        WHERE t.basis = 'reviewed'
          AND NOT EXISTS (SELECT 1 FROM stage_naf_mapping m
                          WHERE m.nomenclature = t.nomenclature AND m.naf_code = t.naf_code)
        RETURNING 1
    """)
    mapping = _counts(upserted, deleted, deleted=True)
    return TaxonomyCounts(categories, sous_categories, mapping)


# ---------------------------------------------------------------------------------------
# Villes


@dataclass
class VillesCounts:
    villes: LoadCounts
    aliases: LoadCounts


def load_villes(
    conn: psycopg.Connection, communes: Sequence[Commune], aliases: Sequence[CommuneAlias]
) -> VillesCounts:
    """Upsert one ville per current commune (keyed by INSEE code) and the alias lookup.

    Coordinates missing from the source (the offline snapshot has none) keep the values a
    geo.api.gouv.fr run stored. A commune absent from the source is deactivated and keeps
    its slug, so that its URL never points at another town."""
    slugs = ville_slugs(communes)
    stage_rows(
        conn, VILLES, "stage_ville",
        ((c.code_insee, c.nom, normalise_name(c.nom), slugs[c.code_insee], c.code_postal_principal,
          json.dumps(sorted(c.codes_postaux)), c.departement, c.region, c.lat, c.lng, c.population)
         for c in communes),
        primary_key=("code_insee",),
        # Joined to location_ville three times below: without statistics the planner takes
        # the staged table for a few rows and scans it once per ville.
        analyze=True,
    )
    # A slug still held by a ville that left the source stays with it; the newcomer is
    # disambiguated with its INSEE code, as homonyms are.
    conn.execute("""
        UPDATE stage_ville s SET slug = s.slug || '-' || lower(s.code_insee)
        FROM location_ville v
        WHERE v.slug = s.slug AND v.code_insee <> s.code_insee
          AND NOT EXISTS (SELECT 1 FROM stage_ville o WHERE o.code_insee = v.code_insee)
    """)
    # Slugs are unique and checked row by row: villes whose slug changes first move to a
    # free placeholder, so that two villes may exchange slugs within one run (`moving-<id>-<slug>`:
    # the change feed reads it as the slug it stands for, sql/0009_change_feed.sql).
    conn.execute("""
        UPDATE location_ville v SET slug = 'moving-' || v.id || '-' || v.slug
        FROM stage_ville s
        WHERE s.code_insee = v.code_insee AND s.slug <> v.slug
    """)
    upserted = upsert_rows(conn, VILLES, "stage_ville", keep_existing_when_null=_COORDINATES, from_reference=True)
    # A centre the source gave (geo.api.gouv.fr) replaces one derived from establishments.
    conn.execute("""
        UPDATE location_ville v SET position_source = 'geo_api'
        FROM stage_ville s
        WHERE s.code_insee = v.code_insee AND s.lat IS NOT NULL AND s.lng IS NOT NULL
          AND v.position_source IS DISTINCT FROM 'geo_api'
    """)
    deactivated = _deactivate_missing(conn, VILLES, "stage_ville")
    villes = _counts(upserted, deactivated)
    if villes.changed:
        # A GIN index queues new entries in a pending list that every search reads in full
        # until a vacuum merges it: after thousands of villes, each postal-code lookup of a
        # day would cost a millisecond instead of a few microseconds. Merged now.
        conn.execute("SELECT gin_clean_pending_list('location_ville_codes_postaux_idx'::regclass)")

    current = {c.code_insee for c in communes}
    upserted = upsert(
        conn,
        "location_commune_alias",
        key=("code_insee",),
        columns=("code_insee", "ville_code_insee", "kind", "nom"),
        rows=((a.code_insee, a.ville_code_insee, a.kind, a.nom) for a in aliases
              if a.code_insee not in current),
        stage_name="stage_commune_alias",
    )
    deleted = _count(conn, """
        DELETE FROM location_commune_alias t
        WHERE NOT EXISTS (SELECT 1 FROM stage_commune_alias s WHERE s.code_insee = t.code_insee)
        RETURNING 1
    """)
    return VillesCounts(villes, _counts(upserted, deleted, deleted=True))
