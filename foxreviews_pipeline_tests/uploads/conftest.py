"""Shared set-up of the upload tests: an upload folder, reference rows, and the path a file
takes (sensor registration, then the import run) without Dagster in between."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from foxreviews_pipeline.lib.uploads import (
    ImportOutcome,
    Registration,
    UploadPaths,
    import_upload,
    register,
)
from foxreviews_pipeline.lib.uploads.intake import QUEUED

FIXTURES = Path(__file__).parent / "fixtures"

# Valid SIRETs (Luhn) of real-looking establishments.
SIRET_A = "73282932000074"
SIRET_B = "55203253400646"
SIRET_C = "44306184100047"

TABLES = {
    "enterprise_entreprise": "siret",
    "enterprise_prolocalisation": "id",
    "location_ville": "code_insee",
    "category_categorie": "slug",
    "subcategory_souscategorie": "slug",
}


def seed_reference(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        INSERT INTO ref_naf_nomenclature (code, libelle, section, division, groupe, classe) VALUES
          ('10.71C', 'Boulangerie et boulangerie-pâtisserie', 'C', '10', '10.7', '10.71'),
          ('43.22A', 'Travaux d''installation d''eau et de gaz en tous locaux', 'F', '43', '43.2', '43.22'),
          ('62.01Z', 'Programmation informatique', 'J', '62', '62.0', '62.01');
        INSERT INTO ref_naf_nomenclature (nomenclature, code, libelle, section, division, groupe, classe)
        VALUES ('NAF2025', '10.71H', 'Boulangerie et boulangerie-pâtisserie', 'C', '10', '10.7', '10.71');
        INSERT INTO category_categorie (id, slug, nom) VALUES
          (1, 'alimentation', 'Alimentation'), (2, 'batiment', 'Bâtiment');
        INSERT INTO subcategory_souscategorie (id, categorie_id, slug, nom) VALUES
          (10, 1, 'boulangerie-patisserie', 'Boulangerie-pâtisserie'), (20, 2, 'plombier', 'Plombier');
        INSERT INTO ref_naf_mapping (naf_code, sous_categorie_id, excluded_reason) VALUES
          ('10.71C', 10, NULL), ('43.22A', 20, NULL), ('62.01Z', NULL, 'not a consumer trade');
        INSERT INTO ref_naf_mapping (nomenclature, naf_code, sous_categorie_id, basis) VALUES
          ('NAF2025', '10.71H', 10, 'evidence');
        INSERT INTO location_ville (id, code_insee, nom, slug, nom_normalise, code_postal_principal,
                                    codes_postaux, departement, region, population) VALUES
          (100, '69123', 'Lyon', 'lyon', 'lyon', '69001', '["69001","69002","69003"]', '69',
           'Auvergne-Rhône-Alpes', 520000),
          (101, '01053', 'Bourg-en-Bresse', 'bourg-en-bresse', 'bourg en bresse', '01000',
           '["01000"]', '01', 'Auvergne-Rhône-Alpes', 41000);
        SELECT setval(pg_get_serial_sequence('category_categorie', 'id'), 1000);
        SELECT setval(pg_get_serial_sequence('subcategory_souscategorie', 'id'), 1000);
        SELECT setval(pg_get_serial_sequence('location_ville', 'id'), 1000);
        """
    )


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    """Every row of the tables an upload may write, with its row version."""
    return {
        table: conn.execute(f"SELECT xmin::text, t.* FROM {table} t ORDER BY {key}").fetchall()
        for table, key in TABLES.items()
    }


@dataclass
class UploadEnv:
    url: str
    paths: UploadPaths

    def drop(self, name: str, content: bytes | str, encoding: str = "utf-8") -> Path:
        path = self.paths.folder("incoming") / name
        path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
        return path

    def process(self, name: str) -> tuple[Registration, ImportOutcome | None]:
        """What the sensor then the run do with `incoming/<name>`."""
        registration = register(self.url, self.paths, name)
        assert registration is not None, f"incoming/{name} was not there to register"
        if registration.outcome != QUEUED:
            return registration, None
        return registration, import_upload(
            self.url, self.paths, registration.partition_key, run_id="test-run"
        )

    def log(self, log_id: int) -> dict:
        with psycopg.connect(self.url) as conn:
            cur = conn.execute("SELECT * FROM core_importlog WHERE id = %s", (log_id,))
            names = [d.name for d in cur.description]
            return dict(zip(names, cur.fetchone(), strict=True))

    def snapshot(self) -> dict[str, list[tuple]]:
        with psycopg.connect(self.url) as conn:
            return snapshot(conn)

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.url) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def files(self, folder: str) -> list[str]:
        return sorted(p.name for p in self.paths.folder(folder).iterdir())


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> UploadEnv:
    with psycopg.connect(database_url) as conn:
        seed_reference(conn)
    paths = UploadPaths(tmp_path / "uploads")
    paths.ensure()
    return UploadEnv(database_url, paths)
