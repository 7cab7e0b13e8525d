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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import psycopg

from foxreviews_pipeline.lib.db.copy import copy_rows, drop_temp
from foxreviews_pipeline.lib.reference.communes import (
    Commune,
    CommuneAlias,
    normalise_name,
    ville_slugs,
)
from foxreviews_pipeline.lib.reference.naf import NAF_REV2, NafCode
from foxreviews_pipeline.lib.reference.taxonomy import Taxonomy, TaxonomyError


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
        return LoadCounts(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deactivated + self.deleted


def _stage(conn: psycopg.Connection, name: str, ddl: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    drop_temp(conn, name)
    conn.execute(f"CREATE TEMP TABLE {name} ({ddl}) ON COMMIT DROP")
    return copy_rows(conn, name, columns, rows)


def _upsert(conn: psycopg.Connection, query: str, params: dict | None = None) -> tuple[int, int]:
    """(inserted, updated) from an upsert that RETURNS `(xmax = 0)`: true for a new row."""
    flags = [row[0] for row in conn.execute(query, params or {}).fetchall()]
    inserted = sum(1 for f in flags if f)
    return inserted, len(flags) - inserted


def _count(conn: psycopg.Connection, query: str, params: dict | None = None) -> int:
    return len(conn.execute(query, params or {}).fetchall())


# ---------------------------------------------------------------------------------------
# NAF


def load_naf_nomenclature(
    conn: psycopg.Connection, codes: Sequence[NafCode], nomenclature: str = NAF_REV2
) -> LoadCounts:
    """Upsert the nomenclature's codes. Codes are never removed: SIRENE keeps old ones."""
    rows = _stage(
        conn, "stage_naf",
        "code text PRIMARY KEY, libelle text, section text, division text, groupe text, classe text",
        ("code", "libelle", "section", "division", "groupe", "classe"),
        ((c.code, c.libelle, c.section, c.division, c.groupe, c.classe) for c in codes),
    )
    inserted, updated = _upsert(conn, """
        INSERT INTO ref_naf_nomenclature AS t (nomenclature, code, libelle, section, division, groupe, classe)
        SELECT %(nomenclature)s, code, libelle, section, division, groupe, classe FROM stage_naf
        ON CONFLICT (nomenclature, code) DO UPDATE SET
            libelle = excluded.libelle, section = excluded.section, division = excluded.division,
            groupe = excluded.groupe, classe = excluded.classe, updated_at = now()
        WHERE (t.libelle, t.section, t.division, t.groupe, t.classe)
              IS DISTINCT FROM (excluded.libelle, excluded.section, excluded.division, excluded.groupe, excluded.classe)
        RETURNING (xmax = 0)
    """, {"nomenclature": nomenclature})
    return LoadCounts(rows=rows, inserted=inserted, updated=updated)


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

    rows = _stage(
        conn, "stage_categorie",
        "slug text PRIMARY KEY, nom text, description text, meta_description text, ordre integer",
        ("slug", "nom", "description", "meta_description", "ordre"),
        ((c.slug, c.nom, c.description, c.meta_description, c.ordre) for c in taxonomy.categories),
    )
    inserted, updated = _upsert(conn, """
        INSERT INTO category_categorie AS t (slug, nom, description, meta_description, ordre, is_active, from_taxonomy)
        SELECT slug, nom, description, meta_description, ordre, true, true FROM stage_categorie
        ON CONFLICT (slug) DO UPDATE SET
            nom = excluded.nom, description = excluded.description,
            meta_description = coalesce(nullif(excluded.meta_description, ''), t.meta_description),
            ordre = excluded.ordre, is_active = true, from_taxonomy = true, updated_at = now()
        WHERE (t.nom, t.description, t.meta_description, t.ordre, t.is_active, t.from_taxonomy)
              IS DISTINCT FROM (excluded.nom, excluded.description,
                                coalesce(nullif(excluded.meta_description, ''), t.meta_description),
                                excluded.ordre, true, true)
        RETURNING (xmax = 0)
    """)
    deactivated = _count(conn, """
        UPDATE category_categorie SET is_active = false, updated_at = now()
        WHERE is_active AND from_taxonomy AND slug NOT IN (SELECT slug FROM stage_categorie)
        RETURNING 1
    """)
    categories = LoadCounts(rows, inserted, updated, deactivated)

    rows = _stage(
        conn, "stage_souscategorie",
        "slug text PRIMARY KEY, categorie text, nom text, description text, meta_description text, "
        "mots_cles text, ordre integer",
        ("slug", "categorie", "nom", "description", "meta_description", "mots_cles", "ordre"),
        ((s.slug, s.categorie, s.nom, s.description, s.meta_description, s.mots_cles, s.ordre)
         for s in taxonomy.sous_categories),
    )
    inserted, updated = _upsert(conn, """
        INSERT INTO subcategory_souscategorie AS t
            (categorie_id, slug, nom, description, meta_description, mots_cles, ordre, is_active, from_taxonomy)
        SELECT c.id, s.slug, s.nom, s.description, s.meta_description, s.mots_cles, s.ordre, true, true
        FROM stage_souscategorie s JOIN category_categorie c ON c.slug = s.categorie
        ON CONFLICT (slug) DO UPDATE SET
            categorie_id = excluded.categorie_id, nom = excluded.nom, description = excluded.description,
            meta_description = coalesce(nullif(excluded.meta_description, ''), t.meta_description),
            mots_cles = coalesce(nullif(excluded.mots_cles, ''), t.mots_cles),
            ordre = excluded.ordre, is_active = true, from_taxonomy = true, updated_at = now()
        WHERE (t.categorie_id, t.nom, t.description, t.meta_description, t.mots_cles, t.ordre,
               t.is_active, t.from_taxonomy)
              IS DISTINCT FROM (excluded.categorie_id, excluded.nom, excluded.description,
                                coalesce(nullif(excluded.meta_description, ''), t.meta_description),
                                coalesce(nullif(excluded.mots_cles, ''), t.mots_cles),
                                excluded.ordre, true, true)
        RETURNING (xmax = 0)
    """)
    deactivated = _count(conn, """
        UPDATE subcategory_souscategorie SET is_active = false, updated_at = now()
        WHERE is_active AND from_taxonomy AND slug NOT IN (SELECT slug FROM stage_souscategorie)
        RETURNING 1
    """)
    sous_categories = LoadCounts(rows, inserted, updated, deactivated)

    rows = _stage(
        conn, "stage_naf_mapping",
        "nomenclature text, naf_code text, sous_categorie text, excluded_reason text, "
        "PRIMARY KEY (nomenclature, naf_code)",
        ("nomenclature", "naf_code", "sous_categorie", "excluded_reason"),
        ((m.nomenclature, m.naf_code, m.sous_categorie, m.excluded_reason) for m in taxonomy.mappings),
    )
    inserted, updated = _upsert(conn, """
        INSERT INTO ref_naf_mapping AS t (nomenclature, naf_code, sous_categorie_id, excluded_reason)
        SELECT m.nomenclature, m.naf_code, s.id, m.excluded_reason
        FROM stage_naf_mapping m LEFT JOIN subcategory_souscategorie s ON s.slug = m.sous_categorie
        ON CONFLICT (nomenclature, naf_code) DO UPDATE SET
            sous_categorie_id = excluded.sous_categorie_id, excluded_reason = excluded.excluded_reason,
            updated_at = now()
        WHERE (t.sous_categorie_id, t.excluded_reason)
              IS DISTINCT FROM (excluded.sous_categorie_id, excluded.excluded_reason)
        RETURNING (xmax = 0)
    """)
    # Only the nomenclatures the file carries: a NAF 2025 mapping loaded from elsewhere stays.
    deleted = _count(conn, """
        DELETE FROM ref_naf_mapping t
        WHERE t.nomenclature IN (SELECT DISTINCT nomenclature FROM stage_naf_mapping)
          AND NOT EXISTS (SELECT 1 FROM stage_naf_mapping m
                          WHERE m.nomenclature = t.nomenclature AND m.naf_code = t.naf_code)
        RETURNING 1
    """)
    mapping = LoadCounts(rows, inserted, updated, deleted=deleted)
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
    rows = _stage(
        conn, "stage_ville",
        "code_insee text PRIMARY KEY, nom text, slug text, nom_normalise text, code_postal_principal text, "
        "codes_postaux jsonb, departement text, region text, lat double precision, lng double precision, "
        "population integer",
        ("code_insee", "nom", "slug", "nom_normalise", "code_postal_principal", "codes_postaux",
         "departement", "region", "lat", "lng", "population"),
        ((c.code_insee, c.nom, slugs[c.code_insee], normalise_name(c.nom), c.code_postal_principal,
          json.dumps(sorted(c.codes_postaux)), c.departement, c.region, c.lat, c.lng, c.population)
         for c in communes),
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
    # free placeholder, so that two villes may exchange slugs within one run.
    conn.execute("""
        UPDATE location_ville v SET slug = 'moving-' || v.id
        FROM stage_ville s
        WHERE s.code_insee = v.code_insee AND s.slug <> v.slug
    """)
    inserted, updated = _upsert(conn, """
        INSERT INTO location_ville AS t (code_insee, nom, slug, nom_normalise, code_postal_principal,
                                         codes_postaux, departement, region, lat, lng, population, is_active)
        SELECT code_insee, nom, slug, nom_normalise, code_postal_principal, codes_postaux,
               departement, region, lat, lng, population, true
        FROM stage_ville
        ON CONFLICT (code_insee) DO UPDATE SET
            nom = excluded.nom, slug = excluded.slug, nom_normalise = excluded.nom_normalise,
            code_postal_principal = excluded.code_postal_principal, codes_postaux = excluded.codes_postaux,
            departement = excluded.departement, region = excluded.region,
            lat = coalesce(excluded.lat, t.lat), lng = coalesce(excluded.lng, t.lng),
            population = excluded.population, is_active = true, updated_at = now()
        WHERE (t.nom, t.slug, t.nom_normalise, t.code_postal_principal, t.codes_postaux, t.departement,
               t.region, t.lat, t.lng, t.population, t.is_active)
              IS DISTINCT FROM (excluded.nom, excluded.slug, excluded.nom_normalise,
                                excluded.code_postal_principal, excluded.codes_postaux, excluded.departement,
                                excluded.region, coalesce(excluded.lat, t.lat), coalesce(excluded.lng, t.lng),
                                excluded.population, true)
        RETURNING (xmax = 0)
    """)
    deactivated = _count(conn, """
        UPDATE location_ville v SET is_active = false, updated_at = now()
        WHERE v.is_active AND NOT EXISTS (SELECT 1 FROM stage_ville s WHERE s.code_insee = v.code_insee)
        RETURNING 1
    """)
    villes = LoadCounts(rows, inserted, updated, deactivated)

    current = {c.code_insee for c in communes}
    rows = _stage(
        conn, "stage_commune_alias",
        "code_insee text PRIMARY KEY, ville_code_insee text, kind text, nom text",
        ("code_insee", "ville_code_insee", "kind", "nom"),
        ((a.code_insee, a.ville_code_insee, a.kind, a.nom) for a in aliases
         if a.code_insee not in current),
    )
    inserted, updated = _upsert(conn, """
        INSERT INTO location_commune_alias AS t (code_insee, ville_code_insee, kind, nom)
        SELECT code_insee, ville_code_insee, kind, nom FROM stage_commune_alias
        ON CONFLICT (code_insee) DO UPDATE SET
            ville_code_insee = excluded.ville_code_insee, kind = excluded.kind, nom = excluded.nom,
            updated_at = now()
        WHERE (t.ville_code_insee, t.kind, t.nom) IS DISTINCT FROM (excluded.ville_code_insee, excluded.kind, excluded.nom)
        RETURNING (xmax = 0)
    """)
    deleted = _count(conn, """
        DELETE FROM location_commune_alias t
        WHERE NOT EXISTS (SELECT 1 FROM stage_commune_alias s WHERE s.code_insee = t.code_insee)
        RETURNING 1
    """)
    return VillesCounts(villes, LoadCounts(rows, inserted, updated, deleted=deleted))
