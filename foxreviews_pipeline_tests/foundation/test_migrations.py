import threading

import psycopg
import pytest

from foxreviews_pipeline.lib.db.migrations import SQL_DIR, MigrationError, discover, migrate


def _schema_snapshot(url):
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        applied = conn.execute(
            "SELECT version, name, checksum FROM foxreviews_schema_migrations ORDER BY 1"
        ).fetchall()
    return tables, indexes, applied


def test_migrations_apply_once_and_are_recorded(new_database):
    url = new_database(migrated=False)
    applied = migrate(url)
    assert applied == [m.name for m in discover()]
    before = _schema_snapshot(url)
    assert migrate(url) == []
    assert _schema_snapshot(url) == before
    assert [row[1] for row in before[2]] == applied


def test_a_broken_migration_leaves_the_schema_untouched(new_database, tmp_path):
    url = new_database(migrated=False)
    for path in SQL_DIR.iterdir():
        if path.name.endswith(".sql"):
            (tmp_path / path.name).write_text(path.read_text())
    migrate(url, tmp_path)
    before = _schema_snapshot(url)
    (tmp_path / "9001_add_a_table.sql").write_text(
        "CREATE TABLE half_done (id int);\n"
        "ALTER TABLE enterprise_entreprise ADD COLUMN doomed text;\n"
        "SELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match=r"9001_add_a_table\.sql failed, nothing was applied"):
        migrate(url, tmp_path)
    assert _schema_snapshot(url) == before


def test_an_edited_applied_migration_is_refused(new_database, tmp_path):
    url = new_database(migrated=False)
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (id int);")
    migrate(url, tmp_path)
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(url, tmp_path)


def test_concurrent_migrators_apply_each_migration_once(new_database):
    url = new_database(migrated=False)
    results, errors = [], []

    def run():
        try:
            results.append(migrate(url))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, len(discover())]


def test_ville_stats_refreshes_concurrently_on_a_fresh_database(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY ville_stats")
        row = conn.execute("SELECT id, total_villes, population_totale FROM ville_stats").fetchone()
    assert row == (1, 0, 0)


def test_schema_keeps_one_row_per_siret_and_rejects_nd(database_url):
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO enterprise_entreprise (siret, siren, nom) VALUES ('73282932000074', '732829320', 'X')"
        )
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(
                "INSERT INTO enterprise_entreprise (siret, siren, nom) VALUES ('73282932000074', '732829320', 'Y')"
            )
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(
                "INSERT INTO enterprise_entreprise (siret, siren, nom, adresse) "
                "VALUES ('55203253400646', '552032534', 'Z', '[ND]')"
            )
