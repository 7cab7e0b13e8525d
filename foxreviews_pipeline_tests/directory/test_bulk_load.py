"""The bulk load of an empty or nearly empty directory (lib/directory/bulk_load.py) on a real
PostgreSQL: it leaves the tables a partitioned load leaves, keeps the live rows and their
ids, holds a partition its audit holds, never loses a write, and a bulk load killed midway
leaves the directory as it was, the next one succeeding."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import psycopg
import pytest

from foxreviews_pipeline.lib.directory import bulk_load
from foxreviews_pipeline.lib.directory.bulk_load import (
    SHADOW,
    BulkLoadRefused,
    bulk_load_stock,
)
from foxreviews_pipeline.lib.directory.daily import publish_day
from foxreviews_pipeline.sample.source import sample_day_source
from foxreviews_pipeline.sample.stock_files import write_sample_stock
from foxreviews_pipeline_tests.pipeline import stock_runs

# What the web app sees of the directory, ids and bookkeeping times left out.
ENTREPRISES = """
SELECT siret, siren, nom, nom_commercial, adresse, code_postal, ville_nom, code_commune, naf_code,
       naf_libelle, naf_nomenclature, is_active, statut_diffusion, date_dernier_traitement,
       sirene_lat, sirene_lng, sirene_epsg, source, last_partition, mapping_version
FROM enterprise_entreprise ORDER BY siret
"""
PAGES = """
SELECT e.siret, p.sous_categorie_id, p.ville_id, p.is_active, p.last_partition
FROM enterprise_prolocalisation p JOIN enterprise_entreprise e ON e.id = p.entreprise_id
ORDER BY 1, 2, 3
"""
# The live tables' definitions: indexes, constraints and triggers, by name.
DEFINITIONS = """
SELECT 'index', indexname, indexdef FROM pg_indexes
WHERE schemaname = 'public' AND tablename IN ('enterprise_entreprise', 'enterprise_prolocalisation', 'ville_stats')
UNION ALL
SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid IN ('enterprise_entreprise'::regclass, 'enterprise_prolocalisation'::regclass)
UNION ALL
SELECT 'trigger', tgname || ' on ' || tgrelid::regclass::text, pg_get_triggerdef(oid) FROM pg_trigger
WHERE NOT tgisinternal
ORDER BY 1, 2
"""


def _directory(url: str) -> tuple[list, list]:
    with psycopg.connect(url) as conn:
        return conn.execute(ENTREPRISES).fetchall(), conn.execute(PAGES).fetchall()


def _rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _shadow_exists(url: str) -> bool:
    return bool(_rows(url, f"SELECT 1 FROM pg_namespace WHERE nspname = '{SHADOW}'"))


@pytest.fixture
def stock(tmp_path: Path) -> tuple[Path, Path]:
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 3_000, unites_legales_path=ul, seed=5)
    return path, ul


def test_a_bulk_load_leaves_what_a_partitioned_load_leaves(reference_db, new_database, stock):
    partitioned = new_database(reference=True)
    by_partition = stock_runs.apply_file(partitioned, *stock)
    stock_runs.stage_file(reference_db, *stock)

    loaded = bulk_load_stock(reference_db, run_id="bulk", chunk_rows=700)

    # The directory was empty: its establishments went in as new rows, keys built after.
    assert loaded.all_new
    assert not loaded.held and len(loaded.partitions) > 20
    assert _directory(reference_db) == _directory(partitioned)
    # Each partition's figures are the partitioned load's.
    assert set(loaded.partitions) == set(by_partition)
    for partition, change in loaded.partitions.items():
        figures, expected = change.figures(), by_partition[partition].figures()
        for asset, values in figures.items():
            for key in ("duration_s", "changes"):
                values.pop(key), expected[asset].pop(key)
        assert figures == expected, partition
    entreprises, pages = _directory(reference_db)
    assert len(entreprises) > 2_500 and len(pages) > 1_500
    # The tables are the migrations' own, with every index, key and trigger, and no shadow.
    assert _rows(reference_db, DEFINITIONS) == _rows(partitioned, DEFINITIONS)
    assert not _shadow_exists(reference_db)
    # Swapped in with their statistics: the web app's first queries are planned on them.
    analyzed = (
        "SELECT tablename, count(*) FROM pg_stats WHERE schemaname = 'public' "
        "AND tablename IN ('enterprise_entreprise', 'enterprise_prolocalisation') GROUP BY 1 ORDER BY 1"
    )
    assert [t for t, n in _rows(reference_db, analyzed) if n >= 5] == ["enterprise_entreprise", "enterprise_prolocalisation"]
    # One snapshot marker per partition, as a partitioned first load records.
    feed = "SELECT entity, op, partition, run_id FROM directory_changes_since(0, 100000) ORDER BY partition"
    markers = _rows(reference_db, feed)
    assert [(e, o, p) for e, o, p, _ in markers] == [(e, o, p) for e, o, p, _ in _rows(partitioned, feed)]
    assert {r for *_, r in markers} == {"bulk"} and len(markers) == len(loaded.partitions)
    # The view the web app reads is over the new tables, and so are new ids.
    (active,) = _rows(reference_db, "SELECT total_entreprises_actives FROM ville_stats")[0]
    assert active == sum(1 for e in entreprises if e[11])
    # Nothing is pending any more: a partitioned load after it reads and writes nothing.
    again = stock_runs.apply_partitions(reference_db, sorted(loaded.partitions))
    assert sum(c.records for c in again.values()) == sum(c.entreprises.unchanged for c in again.values())
    assert sum(c.entreprises.changed + c.prolocalisations.created for c in again.values()) == 0


def test_the_live_rows_and_their_ids_are_kept(reference_db, stock):
    day = date(2026, 11, 20)
    with psycopg.connect(reference_db) as conn:
        publish_day(conn, sample_day_source(200)(day), partition=day.isoformat(), run_id="day")
    before = dict(_rows(reference_db, "SELECT siret, id FROM enterprise_entreprise"))
    pages_before = _rows(reference_db, "SELECT id, entreprise_id FROM enterprise_prolocalisation ORDER BY id")
    stock_runs.stage_file(reference_db, *stock)

    loaded = bulk_load_stock(reference_db, run_id="bulk")

    assert loaded.live_rows == {"enterprise_entreprise": len(before), "enterprise_prolocalisation": len(pages_before)}
    # Not empty: every batch was upserted against the live rows, keys kept while loading.
    assert not loaded.all_new
    after = dict(_rows(reference_db, "SELECT siret, id FROM enterprise_entreprise"))
    assert {s: after[s] for s in before} == before
    assert len(after) > len(before) and min(i for s, i in after.items() if s not in before) > max(before.values())
    kept = _rows(reference_db, "SELECT id, entreprise_id FROM enterprise_prolocalisation ORDER BY id")
    assert kept[: len(pages_before)] == pages_before
    # A new row still takes a fresh id.
    with psycopg.connect(reference_db) as conn:
        (new_id,) = conn.execute(
            "INSERT INTO enterprise_entreprise (siret, siren, nom) VALUES ('00000000000001', '000000000', 'X') RETURNING id"
        ).fetchone()
    assert new_id > max(after.values())


def test_one_establishment_in_two_departements_stops_the_swap(reference_db, tmp_path):
    """The keys of an empty directory's establishments are built after the load: a SIRET
    the stock lists in two départements is found then, and nothing is swapped."""
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 400, unites_legales_path=ul, seed=9)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    # The first establishment's SIRET again, on a row of another département.
    first = rows[0]
    there = next(r for r in rows if r["codeCommuneEtablissement"][:2] != first["codeCommuneEtablissement"][:2])
    moved = dict(there, **{c: first[c] for c in ("siren", "nic", "siret")})
    with path.open("a", newline="") as f:
        csv.DictWriter(f, columns or [], lineterminator="\n").writerow(moved)
    staged = stock_runs.stage_file(reference_db, path, ul)
    assert sum(staged.rows_by_partition.values()) == 401

    with pytest.raises(BulkLoadRefused, match=f"two départements .*{first['siret']}.*nothing was swapped"):
        bulk_load_stock(reference_db)

    assert _directory(reference_db) == ([], [])
    assert not _shadow_exists(reference_db)
    # The partitioned backfill loads it, the latest version of the establishment kept.
    loaded = stock_runs.apply_partitions(reference_db, sorted(staged.rows_by_partition))
    assert sum(c.entreprises.inserted for c in loaded.values()) == 400
    assert len(_directory(reference_db)[0]) == 400


def test_a_populated_directory_is_refused_and_left_alone(reference_db, stock):
    stock_runs.stage_file(reference_db, *stock)
    stock_runs.apply_partitions(reference_db, ["75"])
    before = _directory(reference_db)
    with pytest.raises(BulkLoadRefused, match="load the stock by partitions"):
        bulk_load_stock(reference_db, max_establishments=10)
    assert _directory(reference_db) == before
    assert not _shadow_exists(reference_db)


def test_a_held_partition_keeps_nothing_and_the_others_are_swapped_in(reference_db, tmp_path):
    path, ul = tmp_path / "e.csv", tmp_path / "ul.csv"
    write_sample_stock(path, 3_000, unites_legales_path=ul, seed=5)
    # The legal units of Paris's establishments name nobody: that partition's audit holds it.
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    paris = {r["siren"] for r in rows if r["codeCommuneEtablissement"].startswith("75")}
    elsewhere = {r["siren"] for r in rows if not r["codeCommuneEtablissement"].startswith("75")}
    with ul.open(encoding="utf-8", newline="") as f:
        header, *units = list(csv.reader(f))
    with ul.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(
            [header, *(u if u[0] not in paris - elsewhere else [u[0]] + [""] * (len(header) - 1) for u in units)]
        )
    stock_runs.stage_file(reference_db, path, ul)

    loaded = bulk_load_stock(reference_db)

    assert set(loaded.held) == {"75"}
    assert "records_usable" in str(loaded.held["75"])
    partitions = {p for (p,) in _rows(reference_db, "SELECT DISTINCT last_partition FROM enterprise_entreprise")}
    assert partitions == {f"stock:{p}" for p in loaded.partitions} and "stock:75" not in partitions
    # The held partition is still pending: the partitioned backfill can load it once mended.
    (pending,) = _rows(reference_db, "SELECT pending_by_partition ? '75' FROM sirene_stock.staged")[0]
    assert pending


def test_a_publish_during_the_load_waits_for_the_swap_and_is_kept(reference_db, stock):
    stock_runs.stage_file(reference_db, *stock)
    day = date(2026, 11, 20)
    records = sample_day_source(150)(day)
    waited: list[bool] = []
    published = threading.Event()

    def publish_a_day() -> None:
        with psycopg.connect(reference_db) as conn:
            publish_day(conn, records, partition=day.isoformat(), run_id="day")
        published.set()

    (pending,) = _rows(reference_db, "SELECT pending_by_partition FROM sirene_stock.staged")[0]
    order: list[str] = []

    def during_the_load(partition, outcome) -> None:
        order.append(partition)
        if waited:
            return
        threading.Thread(target=publish_a_day, daemon=True).start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not waited:
            if _rows(reference_db, "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory'"):
                waited.append(True)
            time.sleep(0.05)
        assert not published.is_set()

    bulk_load_stock(reference_db, workers=1, on_partition=during_the_load)

    assert waited == [True]
    assert published.wait(60)
    # The partitions were loaded the largest first (a large one last would idle the others).
    assert order == sorted((p for p, n in pending.items() if n), key=lambda p: (-pending[p], p))
    assert pending[order[0]] > pending[order[-1]]
    days = _rows(reference_db, "SELECT count(*) FROM enterprise_entreprise WHERE last_partition = '2026-11-20'")
    assert days[0][0] > 100


def test_a_write_outside_the_publishes_stops_the_swap(reference_db, stock):
    stock_runs.stage_file(reference_db, *stock)
    day = date(2026, 11, 20)
    with psycopg.connect(reference_db) as conn:
        publish_day(conn, sample_day_source(100)(day), partition=day.isoformat(), run_id="day")

    def edit_a_phone_number(partition, outcome) -> None:
        with psycopg.connect(reference_db) as conn:
            conn.execute("UPDATE enterprise_entreprise SET telephone = '0102030405' WHERE id = (SELECT min(id) FROM enterprise_entreprise)")

    before = _rows(reference_db, "SELECT count(*) FROM enterprise_entreprise")
    with pytest.raises(BulkLoadRefused, match="changed during the bulk load"):
        bulk_load_stock(reference_db, on_partition=edit_a_phone_number)
    assert _rows(reference_db, "SELECT count(*) FROM enterprise_entreprise") == before
    assert _rows(reference_db, "SELECT count(*) FROM enterprise_entreprise WHERE telephone IS NOT NULL") == [(1,)]
    assert not _shadow_exists(reference_db)


def test_a_swap_the_web_app_holds_up_stops_in_its_bound(reference_db, stock, monkeypatch):
    stock_runs.stage_file(reference_db, *stock)
    monkeypatch.setattr(bulk_load, "SWAP_LOCK_TIMEOUT", "1s")
    reader = psycopg.connect(reference_db)
    try:
        def a_long_read(partition, outcome) -> None:
            if reader.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                reader.execute("SELECT count(*) FROM enterprise_entreprise")  # left open

        with pytest.raises(BulkLoadRefused, match="stayed in use for more than 1s"):
            bulk_load_stock(reference_db, on_partition=a_long_read)
    finally:
        reader.close()
    assert _rows(reference_db, "SELECT count(*) FROM enterprise_entreprise") == [(0,)]
    assert not _shadow_exists(reference_db)


@pytest.mark.slow
def test_a_bulk_load_killed_midway_leaves_the_directory_and_the_next_one_succeeds(reference_db, new_database, stock):
    stock_runs.stage_file(reference_db, *stock)
    day = date(2026, 11, 20)
    with psycopg.connect(reference_db) as conn:
        publish_day(conn, sample_day_source(100)(day), partition=day.isoformat(), run_id="day")
    before = _directory(reference_db)
    code = (
        "import sys; from foxreviews_pipeline.lib.directory.bulk_load import bulk_load_stock; "
        "bulk_load_stock(sys.argv[1], chunk_rows=20, workers=1)"
    )
    loader = subprocess.Popen([sys.executable, "-c", code, reference_db], start_new_session=True)
    try:
        # Killed once some partitions are in the shadow tables, long before the swap.
        deadline = time.monotonic() + 120
        loaded = 0
        while time.monotonic() < deadline and loader.poll() is None and loaded < 300:
            if _shadow_exists(reference_db):
                loaded = _rows(
                    reference_db,
                    f"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    f"WHERE n.nspname = '{SHADOW}' AND c.relname = 'enterprise_entreprise'",
                )[0][0] and _rows(reference_db, f"SELECT count(*) FROM {SHADOW}.enterprise_entreprise")[0][0]
            time.sleep(0.05)
        assert loader.poll() is None and loaded >= 300
        os.killpg(loader.pid, signal.SIGKILL)
        loader.wait(30)
    finally:
        if loader.poll() is None:
            os.killpg(loader.pid, signal.SIGKILL)
    assert _directory(reference_db) == before

    loaded_again = bulk_load_stock(reference_db, run_id="again")

    assert not loaded_again.held
    assert not _shadow_exists(reference_db)
    partitioned = new_database(reference=True)
    with psycopg.connect(partitioned) as conn:
        publish_day(conn, sample_day_source(100)(day), partition=day.isoformat(), run_id="day")
    stock_runs.apply_file(partitioned, *stock)
    assert _directory(reference_db) == _directory(partitioned)
