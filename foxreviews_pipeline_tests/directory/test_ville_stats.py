"""`ville_stats`: refreshed without blocking readers, figures equal to the tables', and
refreshed once after an import by the `ville_stats_after_import` sensor."""

import threading
import time
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

from foxreviews_pipeline.defs.directory.ville_stats import (
    UPSTREAM_KEYS,
    ville_stats,
    ville_stats_after_import_sensor,
    ville_stats_refresh_job,
)
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

# What ville_stats is computed from: the directory's assets, daily and stock, and uploads.
UPSTREAM = {
    dg.AssetKey(key)
    for key in (
        "villes", "entreprises", "pro_localisations", "stock_entreprises",
        "stock_pro_localisations", "uploaded_files",
    )
}


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
    assert {dep.asset_key for dep in spec.deps} == UPSTREAM


# Stand-ins with the real keys and partitioning: what the sensor sees of an import.
@dg.asset(name="villes")
def villes_stub() -> None: ...


@dg.asset(name="entreprises", partitions_def=daily_partitions)
def entreprises_stub() -> None: ...


MID_IMPORT: dict = {}


@dg.asset(name="pro_localisations", partitions_def=daily_partitions, deps=["entreprises"])
def pro_localisations_stub() -> None:
    # Ticks while the import is half done: entreprises is written, this step is running.
    if "instance" in MID_IMPORT:
        MID_IMPORT["tick"] = tick(MID_IMPORT["instance"], None)


import_stub_job = dg.define_asset_job(
    "daily_import_stub", selection=[entreprises_stub, pro_localisations_stub]
)
DEFS = dg.Definitions(
    assets=[villes_stub, entreprises_stub, pro_localisations_stub, ville_stats],
    jobs=[ville_stats_refresh_job, import_stub_job],
    sensors=[ville_stats_after_import_sensor],
    # Never opened: only the sensor is evaluated here.
    resources={"postgres": PostgresResource(home="/nonexistent")},
)


def tick(instance: dg.DagsterInstance, cursor: str | None) -> SensorExecutionData:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=DEFS)
    return ville_stats_after_import_sensor.evaluate_tick(context)


def report(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> int:
    """Records a materialization of `key`; returns its event-log storage id."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))
    [record] = instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    return record.storage_id


# Where a launched run says it comes from; a queued run must carry one. Never loaded here.
ORIGIN = RemoteRepositoryOrigin(
    code_location_origin=RegisteredCodeLocationOrigin("foxreviews_pipeline"),
    repository_name="__repository__",
)


def in_flight_run(
    instance: dg.DagsterInstance,
    job_name: str,
    status: dg.DagsterRunStatus = dg.DagsterRunStatus.QUEUED,
    assets: set[str] | None = None,
) -> dg.DagsterRun:
    """A run in the instance as a launch leaves it, with no worker behind it."""
    selection = frozenset(dg.AssetKey(key) for key in assets) if assets else None
    return instance.add_run(
        dg.DagsterRun(
            job_name=job_name,
            status=status,
            asset_selection=selection,
            remote_job_origin=ORIGIN.get_job_origin(job_name),
        )
    )


def test_the_sensor_targets_the_named_job_and_follows_the_asset_deps():
    sensor = ville_stats_after_import_sensor
    assert sensor.job_name == "ville_stats_refresh" == ville_stats_refresh_job.name
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
    # Read from the asset: an upstream asset added to its deps is watched without more code.
    assert set(UPSTREAM_KEYS) == set(ville_stats.dependency_keys) == UPSTREAM


def test_nothing_imported_nothing_requested():
    instance = dg.DagsterInstance.ephemeral()
    result = tick(instance, None)
    assert not result.run_requests
    assert "no materialization" in (result.skip_message or "")

    report(instance, "ville_stats")  # its own refresh is not an import
    assert not tick(instance, None).run_requests


def test_one_refresh_after_an_import_then_none():
    instance = dg.DagsterInstance.ephemeral()
    storage_id = report(instance, "entreprises", "2026-03-28")

    first = tick(instance, None)
    [request] = first.run_requests
    assert request.run_key == f"ville_stats_after_import:{storage_id}"
    assert request.tags["foxreviews/trigger"] == "after_import"
    assert request.job_name is None  # the sensor's own job: ville_stats_refresh
    assert first.cursor == str(storage_id)

    again = tick(instance, first.cursor)
    assert not again.run_requests
    assert "no materialization" in (again.skip_message or "")

    # Any upstream asset counts: reference data changes the town figures.
    villes_id = report(instance, "villes")
    third = tick(instance, first.cursor)
    assert len(third.run_requests) == 1 and third.cursor == str(villes_id)


def test_many_imports_between_two_ticks_make_one_refresh():
    instance = dg.DagsterInstance.ephemeral()
    ids = [report(instance, "entreprises", day) for day in ("2026-03-29", "2026-03-30", "2026-03-31")]
    ids.append(report(instance, "pro_localisations", "2026-03-31"))
    ids.append(report(instance, "uploaded_files", "upload-1"))

    result = tick(instance, None)
    assert len(result.run_requests) == 1
    assert result.cursor == str(max(ids))
    assert not tick(instance, result.cursor).run_requests


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
def test_no_second_refresh_while_one_is_queued_or_running(status):
    instance = dg.DagsterInstance.ephemeral()
    storage_id = report(instance, "entreprises", "2026-03-28")
    refresh = in_flight_run(instance, "ville_stats_refresh", status)

    postponed = tick(instance, None)
    assert not postponed.run_requests
    assert refresh.run_id in (postponed.skip_message or "")
    assert postponed.cursor is None  # not advanced: the import still calls for a refresh

    instance.report_run_canceled(refresh)
    after = tick(instance, None)
    assert len(after.run_requests) == 1 and after.cursor == str(storage_id)


def test_a_refresh_launched_from_the_ui_counts_too():
    instance = dg.DagsterInstance.ephemeral()
    report(instance, "villes")
    run = in_flight_run(instance, "__ASSET_JOB", dg.DagsterRunStatus.STARTED, {"ville_stats"})
    result = tick(instance, None)
    assert not result.run_requests and run.run_id in (result.skip_message or "")


def test_not_during_an_import_nor_a_backfill():
    instance = dg.DagsterInstance.ephemeral()
    MID_IMPORT.clear()
    MID_IMPORT["instance"] = instance
    try:
        imported = DEFS.resolve_job_def("daily_import_stub").execute_in_process(
            instance=instance, partition_key="2026-03-28"
        )
    finally:
        mid_import = MID_IMPORT.pop("tick", None)
        MID_IMPORT.clear()
    assert imported.success
    # entreprises was already written, but its run (a whole job: no asset selection) was going on.
    assert mid_import is not None and not mid_import.run_requests
    assert imported.run_id in (mid_import.skip_message or "")
    assert instance.fetch_materializations(dg.AssetKey("entreprises"), limit=1).records

    # A backfill: its remaining days wait in the queue; the days already done do not trigger.
    queued = [
        in_flight_run(instance, "daily_import_stub") for _ in range(3)
    ] + [in_flight_run(instance, "__ASSET_JOB", assets={"villes"})]
    for run in queued:
        assert not tick(instance, None).run_requests
        instance.report_run_canceled(run)
    done = tick(instance, None)
    assert len(done.run_requests) == 1


def test_runs_of_other_assets_do_not_hold_the_refresh():
    instance = dg.DagsterInstance.ephemeral()
    report(instance, "entreprises", "2026-03-28")
    in_flight_run(instance, "__ASSET_JOB", dg.DagsterRunStatus.STARTED, {"naf_nomenclature"})
    in_flight_run(instance, "cleanup", dg.DagsterRunStatus.STARTED)
    assert len(tick(instance, None).run_requests) == 1
