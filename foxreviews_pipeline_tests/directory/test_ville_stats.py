"""`ville_stats`: refreshed without blocking readers, figures equal to the tables', and
refreshed by its automation condition: once after an import, at 02:00 Paris time, never
while an upstream asset is being written."""

import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest
from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin

from foxreviews_pipeline.defs.directory.ville_stats import (
    VILLE_STATS_AUTOMATION,
    ville_stats,
    ville_stats_automation_sensor,
    ville_stats_refresh_job,
)
from foxreviews_pipeline.defs.resources import PostgresResource
from foxreviews_pipeline.defs.sirene.partitions import daily_partitions_def, stock_partitions
from foxreviews_pipeline.lib.db.database import one_row
from foxreviews_pipeline.lib.directory.ville_stats import (
    APPLICATION_NAME,
    FIGURES,
    read_ville_stats,
    refresh_ville_stats,
)

# What ville_stats is computed from: the directory's assets, daily and stock, and uploads.
UPSTREAM = {
    dg.AssetKey(key)
    for key in (
        "villes", "entreprises", "pro_localisations", "stock_entreprises",
        "stock_pro_localisations", "stock_bulk_load", "uploaded_files",
    )
}


def compute_ville_stats_directly(conn: psycopg.Connection) -> dict[str, Any]:
    """The same figures computed from the tables, independently of the view's definition
    (the reference the view is checked against)."""
    villes = one_row(
        conn.execute(
            """
            SELECT count(*), count(DISTINCT departement), count(DISTINCT region),
                   sum(population), avg(population)
            FROM location_ville WHERE is_active
            """
        )
    )
    entreprises = one_row(
        conn.execute("SELECT count(*) FROM enterprise_entreprise WHERE is_active")
    )
    prolocalisations = one_row(
        conn.execute("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active")
    )
    total, departements, regions, population_sum, population_avg = villes
    return {
        "total_villes": int(total),
        "total_departements": int(departements),
        "total_regions": int(regions),
        "population_totale": int(population_sum or 0),
        # PostgreSQL's round() goes half away from zero; Python's round() would go half to even.
        "population_moyenne": (
            int(Decimal(population_avg).quantize(Decimal(1), rounding=ROUND_HALF_UP))
            if population_avg is not None
            else 0
        ),
        "total_entreprises_actives": int(entreprises[0]),
        "total_prolocalisations_actives": int(prolocalisations[0]),
    }


def figures_only(stats: dict[str, Any]) -> dict[str, int]:
    """The numeric figures of a `ville_stats` row (without `refreshed_at`)."""
    return {name: int(stats[name]) for name in FIGURES}


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


# Stand-ins with the real keys and partitioning: what the automation sees of an import (from
# 2026-01-01: the days tested come before the default first partition).
daily_partitions = daily_partitions_def(date(2026, 1, 1))


@dg.asset(name="villes")
def villes_stub() -> None: ...


@dg.asset(name="entreprises", partitions_def=daily_partitions)
def entreprises_stub() -> None: ...


MID_IMPORT: dict = {}


@dg.asset(name="pro_localisations", partitions_def=daily_partitions, deps=["entreprises"])
def pro_localisations_stub() -> None:
    # Evaluates while the import is half done: entreprises is written, this step is running.
    if "instance" in MID_IMPORT:
        MID_IMPORT["result"] = MID_IMPORT["ticks"].next()


@dg.asset(name="stock_entreprises", partitions_def=stock_partitions)
def stock_entreprises_stub() -> None: ...


@dg.asset(name="naf_nomenclature")
def unrelated_stub() -> None: ...


import_stub_job = dg.define_asset_job(
    "daily_import_stub", selection=[entreprises_stub, pro_localisations_stub]
)
DEFS = dg.Definitions(
    assets=[
        villes_stub, entreprises_stub, pro_localisations_stub, stock_entreprises_stub,
        unrelated_stub, ville_stats,
    ],
    jobs=[
        ville_stats_refresh_job, import_stub_job,
        dg.define_asset_job("naf_stub", selection=[unrelated_stub]),
    ],
    sensors=[ville_stats_automation_sensor],
    # Never opened: only the automation condition is evaluated here.
    resources={"postgres": PostgresResource(home="/nonexistent")},
)
PARIS = ZoneInfo("Europe/Paris")


class Ticks:
    """Successive evaluations of the automation, as the daemon makes them: each one carries
    the cursor of the one before, `step` later (a mid-afternoon start: no 02:00 tick in sight)."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        start: datetime = datetime(2026, 6, 10, 14, 0, tzinfo=PARIS),
        step: timedelta = timedelta(minutes=1),
    ):
        # Kept in UTC: Paris wall-clock arithmetic would step into the hour DST skips.
        self.instance, self.now, self.step = instance, start.astimezone(UTC), step
        self.cursor: AssetDaemonCursor | None = None
        first = self.next()  # the first evaluation only starts remembering
        assert first.total_requested == 0

    def at(self, when: datetime) -> dg.EvaluateAutomationConditionsResult:
        self.now = when.astimezone(UTC) - self.step
        return self.next()

    def next(self) -> dg.EvaluateAutomationConditionsResult:
        self.now += self.step
        result = dg.evaluate_automation_conditions(
            defs=DEFS, instance=self.instance, cursor=self.cursor, evaluation_time=self.now,
            asset_selection=dg.AssetSelection.assets("ville_stats"),
        )
        self.cursor = result.cursor
        return result

    def requested(self) -> int:
        return self.next().get_num_requested(ville_stats.key)


def report(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


# Where a launched run says it comes from; a queued run must carry one. Never loaded here.
ORIGIN = RemoteRepositoryOrigin(
    code_location_origin=RegisteredCodeLocationOrigin("foxreviews_pipeline"),
    repository_name="__repository__",
)


def queued_run(instance: dg.DagsterInstance, job_name: str, partition: str | None = None) -> dg.DagsterRun:
    """A run as a launch leaves it in the queue: its assets planned, no worker behind it."""
    tags = {"dagster/partition": partition} if partition else None
    return instance.create_run_for_job(
        DEFS.resolve_job_def(job_name), status=dg.DagsterRunStatus.QUEUED, tags=tags,
        remote_job_origin=ORIGIN.get_job_origin(job_name),
    )


def test_the_condition_is_on_the_asset_and_a_running_sensor_evaluates_it():
    assert ville_stats.automation_conditions_by_key[ville_stats.key] == VILLE_STATS_AUTOMATION
    assert ville_stats_automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    repository = DEFS.get_repository_def()
    assert ville_stats_automation_sensor.asset_selection.resolve(repository.asset_graph) == {
        ville_stats.key
    }
    # Covered by this sensor, the asset gets no implicit (and stopped) default sensor.
    assert {s.name for s in repository.sensor_defs} == {"ville_stats_automation"}
    # The job stays for manual refreshes and `run-day`.
    assert ville_stats_refresh_job.name == "ville_stats_refresh"


def test_nothing_imported_nothing_requested():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    assert ticks.requested() == 0
    report(ticks.instance, "ville_stats")  # its own refresh is not an import
    assert ticks.requested() == 0


def test_one_refresh_after_an_import_then_none():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    report(ticks.instance, "entreprises", "2026-06-09")
    assert ticks.requested() == 1
    assert ticks.requested() == 0  # requested once: not again on the next tick
    report(ticks.instance, "ville_stats")  # the refresh ran
    assert ticks.requested() == 0

    # Any upstream asset counts, partitioned or not: the towns, a département of the stock.
    report(ticks.instance, "villes")
    assert ticks.requested() == 1
    ticks.requested()
    report(ticks.instance, "stock_entreprises", "75")
    assert ticks.requested() == 1
    assert ticks.requested() == 0


def test_a_change_seen_with_the_request_calls_for_one_more_refresh():
    """A dep written after a refresh was requested, seen by the same evaluation as that
    request, may have been missed by it: it is not taken as handled."""
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    report(ticks.instance, "villes")
    assert ticks.requested() == 1
    report(ticks.instance, "stock_entreprises", "75")
    assert ticks.requested() == 1
    assert ticks.requested() == 0


def test_many_imports_between_two_ticks_make_one_refresh():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    for day in ("2026-06-07", "2026-06-08", "2026-06-09"):
        report(ticks.instance, "entreprises", day)
        report(ticks.instance, "pro_localisations", day)
    report(ticks.instance, "villes")
    assert ticks.requested() == 1
    assert ticks.requested() == 0


def test_not_while_an_import_runs_then_once_it_has_ended():
    instance = dg.DagsterInstance.ephemeral()
    ticks = Ticks(instance)
    MID_IMPORT.clear()
    MID_IMPORT.update(instance=instance, ticks=ticks)
    try:
        imported = DEFS.resolve_job_def("daily_import_stub").execute_in_process(
            instance=instance, partition_key="2026-06-09"
        )
    finally:
        mid_import = MID_IMPORT.pop("result", None)
        MID_IMPORT.clear()
    assert imported.success
    # entreprises was already written, but pro_localisations, in the same run, was not.
    assert mid_import is not None and mid_import.get_num_requested(ville_stats.key) == 0
    # The import is remembered: one refresh once the run has ended.
    assert ticks.requested() == 1
    assert ticks.requested() == 0


def test_a_backfill_in_the_queue_holds_the_refresh_until_its_last_day():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    report(ticks.instance, "entreprises", "2026-06-06")
    queued = [queued_run(ticks.instance, "daily_import_stub", day) for day in ("2026-06-07", "2026-06-08")]
    assert ticks.requested() == 0
    for run in queued:
        assert ticks.requested() == 0
        ticks.instance.report_run_canceled(run)
    assert ticks.requested() == 1
    assert ticks.requested() == 0


def test_no_second_refresh_while_one_is_queued():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    refresh = queued_run(ticks.instance, "ville_stats_refresh")
    report(ticks.instance, "villes")
    assert ticks.requested() == 0
    ticks.instance.report_run_canceled(refresh)
    assert ticks.requested() == 1


def test_runs_of_other_assets_do_not_hold_the_refresh():
    ticks = Ticks(dg.DagsterInstance.ephemeral())
    report(ticks.instance, "pro_localisations", "2026-06-09")
    queued_run(ticks.instance, "naf_stub")
    assert ticks.requested() == 1


@pytest.mark.parametrize(
    "night, expected",
    [
        # An ordinary night, then both daylight-saving changes of 2026: on 29 March 02:00
        # does not exist (the tick comes at 03:00 CEST); on 25 October it comes once.
        (datetime(2026, 6, 11, 2, 0, tzinfo=PARIS), datetime(2026, 6, 11, 2, 0, tzinfo=PARIS)),
        (datetime(2026, 3, 29, 1, 0, tzinfo=PARIS), datetime(2026, 3, 29, 3, 0, tzinfo=PARIS)),
        (datetime(2026, 10, 25, 2, 0, tzinfo=PARIS), datetime(2026, 10, 25, 2, 0, fold=1, tzinfo=PARIS)),
    ],
    ids=["june", "spring-forward", "fall-back"],
)
def test_refreshed_once_at_0200_paris(night, expected):
    start = night.astimezone(UTC) - timedelta(hours=3)
    ticks = Ticks(dg.DagsterInstance.ephemeral(), start=start, step=timedelta(minutes=10))
    requested_at = []
    while ticks.now < start + timedelta(hours=6):
        if ticks.requested():
            requested_at.append(ticks.now)
    # The first tick at or after 02:00 (03:00 on the short night), and only that one.
    assert len(requested_at) == 1
    expected = expected.astimezone(UTC)
    assert expected <= requested_at[0] < expected + timedelta(minutes=10)


def test_the_0200_refresh_waits_for_an_import_in_progress():
    start = datetime(2026, 6, 11, 1, 50, tzinfo=PARIS)
    ticks = Ticks(dg.DagsterInstance.ephemeral(), start=start, step=timedelta(minutes=5))
    run = queued_run(ticks.instance, "daily_import_stub", "2026-06-10")
    assert ticks.at(datetime(2026, 6, 11, 2, 0, tzinfo=PARIS)).total_requested == 0
    assert ticks.requested() == 0
    ticks.instance.report_run_canceled(run)
    assert ticks.requested() == 1
    assert ticks.requested() == 0
