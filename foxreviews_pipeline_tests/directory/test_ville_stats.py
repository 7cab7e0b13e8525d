"""`ville_stats`: refreshed without blocking readers, figures equal to the tables', and
refreshed once after an import."""

import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.ville_stats import ville_stats
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions
from foxreviews_pipeline.lib.directory.ville_stats import (
    APPLICATION_NAME,
    FIGURES,
    compute_ville_stats_directly,
    figures_only,
    read_ville_stats,
    refresh_ville_stats,
)


def seed(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        INSERT INTO location_ville (id, code_insee, nom, slug, nom_normalise, departement, region, population, is_active) VALUES
          (1, '75056', 'Paris', 'paris', 'paris', '75', 'Île-de-France', 2113705, true),
          (2, '69123', 'Lyon', 'lyon', 'lyon', '69', 'Auvergne-Rhône-Alpes', 522250, true),
          (3, '69266', 'Villeurbanne', 'villeurbanne', 'villeurbanne', '69', 'Auvergne-Rhône-Alpes', 154781, true),
          (4, '2A004', 'Ajaccio', 'ajaccio', 'ajaccio', '2A', 'Corse', 73916, true),
          (5, '97411', 'Saint-Denis', 'saint-denis-974', 'saint denis', '974', 'La Réunion', NULL, true),
          (6, '13055', 'Marseille', 'marseille', 'marseille', '13', 'Provence-Alpes-Côte d''Azur', 873076, false);
        INSERT INTO enterprise_entreprise (id, siret, siren, nom, is_active) VALUES
          (1, '73282932000074', '732829320', 'BOULANGERIE MARTIN', true),
          (2, '55203253400646', '552032534', 'PLOMBERIE DURAND', true),
          (3, '44306184100047', '443061841', 'GARAGE DU CENTRE', true),
          (4, '35600000000048', '356000000', 'LA POSTE', false),
          (5, '80314744300011', '803147443', 'COIFFURE LEA', true);
        INSERT INTO category_categorie (id, slug, nom) VALUES (1, 'alimentation', 'Alimentation');
        INSERT INTO subcategory_souscategorie (id, categorie_id, slug, nom) VALUES
          (10, 1, 'boulangerie-patisserie', 'Boulangerie-pâtisserie'), (20, 1, 'plombier', 'Plombier');
        INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id, is_active) VALUES
          (1, 10, 2, true), (2, 20, 2, true), (2, 20, 3, true), (3, 20, 1, false), (4, 10, 4, false),
          (5, 10, 1, true);
        """
    )


EXPECTED = {
    "total_villes": 5,
    "total_departements": 4,
    "total_regions": 4,
    "population_totale": 2113705 + 522250 + 154781 + 73916,
    # 2864652 / 4 = 716163 exactly; NULL populations are not averaged in.
    "population_moyenne": 716163,
    "total_entreprises_actives": 4,
    "total_prolocalisations_actives": 4,
}


def _wait_until_waiting_on_lock(database_url: str, query_prefix: str, timeout: float = 15) -> int:
    """The pid of the backend running `query_prefix…` once it is waiting for a lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                """
                SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock'
                  AND query ILIKE %s
                """,
                (query_prefix + "%",),
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"no backend ever waited on a lock while running {query_prefix!r}")


def _still_waiting(database_url: str, pid: int) -> bool:
    with psycopg.connect(database_url, autocommit=True) as watcher:
        row = watcher.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


def _view_locks(database_url: str, pid: int) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as watcher:
        rows = watcher.execute(
            "SELECT mode FROM pg_locks WHERE pid = %s AND granted AND relation = 'ville_stats'::regclass",
            (pid,),
        ).fetchall()
    return {mode for (mode,) in rows}


def test_figures_equal_those_computed_from_the_tables(database_url):
    with psycopg.connect(database_url) as conn:
        seed(conn)
        conn.commit()
        assert compute_ville_stats_directly(conn) == EXPECTED

    stats = refresh_ville_stats(database_url)
    assert figures_only(stats) == EXPECTED
    assert stats["refreshed_at"].tzinfo is not None

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE location_ville SET is_active = false WHERE id = 4")
        conn.execute("UPDATE enterprise_entreprise SET is_active = false WHERE id = 5")
        conn.execute("UPDATE enterprise_prolocalisation SET is_active = false WHERE entreprise_id = 5")
        conn.commit()
        direct = compute_ville_stats_directly(conn)
    assert direct["total_regions"] == 3 and direct["total_entreprises_actives"] == 3
    again = refresh_ville_stats(database_url)
    assert figures_only(again) == direct
    assert again["refreshed_at"] > stats["refreshed_at"]


def test_readers_are_not_blocked_while_a_concurrent_refresh_runs(database_url):
    with psycopg.connect(database_url) as conn:
        before = figures_only(read_ville_stats(conn))
        seed(conn)
        conn.commit()
    assert before["total_villes"] == 0  # the view still holds the figures of the empty tables

    # An ACCESS EXCLUSIVE lock on a base table holds the refresh mid-way: by then it has
    # taken its own lock on the view and waits to read the table.
    locker = psycopg.connect(database_url)
    locker.execute("LOCK TABLE enterprise_entreprise IN ACCESS EXCLUSIVE MODE")
    outcome: dict = {}

    def refresh() -> None:
        try:
            outcome["stats"] = refresh_ville_stats(database_url)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = exc

    refresher = threading.Thread(target=refresh, daemon=True)
    refresher.start()
    try:
        pid = _wait_until_waiting_on_lock(database_url, "REFRESH MATERIALIZED VIEW CONCURRENTLY")
        locks = _view_locks(database_url, pid)
        assert "ExclusiveLock" in locks and "AccessExclusiveLock" not in locks

        with psycopg.connect(database_url, autocommit=True) as reader:
            # A blocked reader fails with LockNotAvailable instead of hanging: the lock stays
            # held until the end, so this read succeeding proves it was never blocked.
            reader.execute("SET lock_timeout = '5s'")
            rows = reader.execute("SELECT * FROM ville_stats").fetchall()
            during = figures_only(read_ville_stats(reader))

        assert len(rows) == 1
        assert during == before  # readers see the previous figures until the refresh commits
        assert refresher.is_alive() and _still_waiting(database_url, pid)
    finally:
        locker.rollback()
        locker.close()
        refresher.join(timeout=60)

    assert not refresher.is_alive()
    assert "error" not in outcome, outcome.get("error")
    with psycopg.connect(database_url) as conn:
        direct = compute_ville_stats_directly(conn)
        assert figures_only(read_ville_stats(conn)) == direct == EXPECTED
    assert figures_only(outcome["stats"]) == EXPECTED


def test_a_plain_refresh_would_block_readers(database_url):
    """The same set-up with a non-concurrent refresh blocks the reader: the test above can
    tell the difference."""
    locker = psycopg.connect(database_url)
    locker.execute("LOCK TABLE enterprise_entreprise IN ACCESS EXCLUSIVE MODE")

    def plain_refresh() -> None:
        with psycopg.connect(database_url, autocommit=True, application_name=APPLICATION_NAME) as conn:
            conn.execute("REFRESH MATERIALIZED VIEW ville_stats")

    refresher = threading.Thread(target=plain_refresh, daemon=True)
    refresher.start()
    try:
        pid = _wait_until_waiting_on_lock(database_url, "REFRESH MATERIALIZED VIEW ville_stats")
        assert "AccessExclusiveLock" in _view_locks(database_url, pid)
        with psycopg.connect(database_url, autocommit=True) as reader:
            reader.execute("SET lock_timeout = '300ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reader.execute("SELECT * FROM ville_stats").fetchall()
    finally:
        locker.rollback()
        locker.close()
        refresher.join(timeout=60)
    assert not refresher.is_alive()


def test_asset_reports_the_figures_as_metadata(database_url, tmp_path: Path):
    with psycopg.connect(database_url) as conn:
        seed(conn)
        conn.commit()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [ville_stats],
        instance=instance,
        resources={"postgres": PostgresResource(database_url=database_url, home=str(tmp_path))},
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("ville_stats")
    metadata = materialization.metadata
    for name in FIGURES:
        assert isinstance(metadata[name], dg.IntMetadataValue), name
        assert metadata[name].value == EXPECTED[name], name
    assert isinstance(metadata["refreshed_at"], dg.TimestampMetadataValue)

    spec = ville_stats.specs_by_key[dg.AssetKey("ville_stats")]
    assert spec.group_name == "directory"
    assert "postgres" in spec.kinds
    assert {dep.asset_key for dep in spec.deps} == {
        dg.AssetKey("villes"),
        dg.AssetKey("entreprises"),
        dg.AssetKey("pro_localisations"),
        dg.AssetKey("uploaded_files"),
    }


# Stand-ins with the real keys and partitioning: what the automation condition sees.
@dg.asset(name="villes")
def villes_stub() -> None: ...


@dg.asset(name="entreprises", partitions_def=daily_partitions)
def entreprises_stub() -> None: ...


MID_IMPORT: dict = {}


@dg.asset(name="pro_localisations", partitions_def=daily_partitions, deps=["entreprises"])
def pro_localisations_stub(context: dg.AssetExecutionContext) -> None:
    # Evaluated while the import is half done: entreprises is written, this step is running.
    if "instance" in MID_IMPORT:
        MID_IMPORT["result"] = dg.evaluate_automation_conditions(
            defs=MID_IMPORT["defs"],
            instance=MID_IMPORT["instance"],
            asset_selection=dg.AssetSelection.assets("ville_stats"),
            cursor=MID_IMPORT["cursor"],
        )


def test_refreshed_once_after_each_import_not_during_it(tmp_path: Path):
    defs = dg.Definitions(
        assets=[villes_stub, entreprises_stub, pro_localisations_stub, ville_stats],
        # Never opened: only the conditions are evaluated here.
        resources={"postgres": PostgresResource(home=str(tmp_path))},
    )
    instance = dg.DagsterInstance.ephemeral()
    selection = dg.AssetSelection.assets("ville_stats")
    key = dg.AssetKey("ville_stats")

    def evaluate(cursor):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection, cursor=cursor
        )

    result = evaluate(None)
    assert result.get_num_requested(key) == 0  # nothing imported yet

    MID_IMPORT.clear()
    MID_IMPORT.update(defs=defs, instance=instance, cursor=result.cursor)
    imported = dg.materialize(
        [entreprises_stub, pro_localisations_stub], instance=instance, partition_key="2026-03-28"
    )
    assert imported.success
    assert MID_IMPORT["result"].get_num_requested(key) == 0  # not while the day is importing
    MID_IMPORT.clear()

    result = evaluate(result.cursor)
    assert result.get_num_requested(key) == 1  # once the day is in
    result = evaluate(result.cursor)
    assert result.get_num_requested(key) == 0  # and only once

    # A backfill of several days leads to one refresh, not one per day.
    for day in ("2026-03-29", "2026-03-30", "2026-03-31"):
        dg.materialize([entreprises_stub, pro_localisations_stub], instance=instance, partition_key=day)
    result = evaluate(result.cursor)
    assert result.get_num_requested(key) == 1
    result = evaluate(result.cursor)
    assert result.get_num_requested(key) == 0

    # Reference data counts too: a new villes import changes the town figures.
    dg.materialize([villes_stub], instance=instance)
    result = evaluate(result.cursor)
    assert result.get_num_requested(key) == 1
