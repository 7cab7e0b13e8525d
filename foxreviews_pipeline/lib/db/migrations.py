"""Ordered, recorded, all-or-nothing schema migrations from the package's `sql/` folder.

Files are named `NNNN_description.sql` and applied in order. The pending ones are applied
in a single transaction under an advisory lock, so that two processes starting at once do
not race and a failing migration leaves the database exactly as it was. The files are package
data (`sql/` at the top level, mapped into the package by the wheel build), so an installed wheel
migrates as a source checkout does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg

from foxreviews_pipeline import top_level

SQL_DIR: Traversable = top_level("sql")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by every migrator of this schema; hashtext('foxreviews_migrations').
_LOCK_KEY = 0x0F0C5E1


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Traversable | Path = SQL_DIR) -> list[Migration]:
    migrations = []
    paths = sorted((p for p in sql_dir.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for path in paths:
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {sql_dir}")
    return migrations


def migrate(url_or_conn: str | psycopg.Connection, sql_dir: Traversable | Path = SQL_DIR) -> list[str]:
    """Apply the pending migrations; return the names applied (empty when up to date)."""
    migrations = discover(sql_dir)
    if isinstance(url_or_conn, str):
        with psycopg.connect(url_or_conn) as conn:
            return _migrate(conn, migrations)
    return _migrate(url_or_conn, migrations)


def _migrate(conn: psycopg.Connection, migrations: list[Migration]) -> list[str]:
    applied_names: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS foxreviews_schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {
            version: (name, checksum)
            for version, name, checksum in conn.execute(
                "SELECT version, name, checksum FROM foxreviews_schema_migrations"
            )
        }
        for migration in migrations:
            if migration.version in done:
                name, checksum = done[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied (as {name}); "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            try:
                conn.execute(migration.sql)
            except psycopg.Error as exc:
                raise MigrationError(f"{migration.name} failed, nothing was applied: {exc}") from exc
            conn.execute(
                "INSERT INTO foxreviews_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_names.append(migration.name)
    return applied_names
