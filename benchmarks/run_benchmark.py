"""The performance harness (benchmarks/README.md), every figure measured side by side in one run.

    .venv/bin/python benchmarks/run_benchmark.py [--rows 35000] [--skip-fetch] [--stock-rows N]

On one synthetic SIRENE day (the `sample` source, landed through the real client):
  (a) bare   — COPY of pre-mapped rows into a staging table + one INSERT … ON CONFLICT:
               the practical ceiling;
  (b) row    — per record: SELECT by SIRET, then INSERT or UPDATE, autocommit (the old
               system's path), on a sub-sample, reported as rows/s;
  (c) ours   — landed file → mapping → entreprises upsert → ProLocalisations, one
               transaction, first run on empty tables, then a re-run of the same day.
Then, unless skipped: the API fetch of a day through the real client against a local
server enforcing INSEE's quota (30/min), and a stock file load (`--stock-rows`).

The database is `FOXREVIEWS_BENCH_DATABASE_URL` (a server URL; a scratch database is
created and dropped) or, by default, an embedded server in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rows import table_rows  # noqa: E402
from foxreviews_pipeline.lib.db.migrations import migrate  # noqa: E402
from foxreviews_pipeline.lib.db.server import (  # noqa: E402
    start_embedded_server,
    stop_embedded_server,
    with_database,
)
from foxreviews_pipeline.lib.directory.daily import publish_day  # noqa: E402
from foxreviews_pipeline.lib.directory.entreprises import SIRENE_COLUMNS, upsert_entreprises  # noqa: E402
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, read_columns, read_partition  # noqa: E402
from foxreviews_pipeline.lib.sirene.mapping import map_table, records_table  # noqa: E402

DAY = date(2026, 11, 20)


@contextmanager
def scratch_database():
    configured = os.environ.get("FOXREVIEWS_BENCH_DATABASE_URL")
    home = None
    if configured:
        server = with_database(configured, "postgres")
    else:
        home = Path(tempfile.mkdtemp(prefix="fxbench-"))
        server = start_embedded_server(home)
    name = f"fxbench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if home is not None:
            stop_embedded_server(home)
            shutil.rmtree(home, ignore_errors=True)


def load_reference(url: str) -> None:
    from foxreviews_pipeline.lib.reference.communes import load_aliases, load_communes
    from foxreviews_pipeline.lib.reference.load import (
        load_naf_nomenclature,
        load_trade_taxonomy,
        load_villes,
    )
    from foxreviews_pipeline.lib.reference.naf import NAF_REV2, load_naf
    from foxreviews_pipeline.lib.reference.taxonomy import load_taxonomy

    with psycopg.connect(url) as conn:
        load_naf_nomenclature(conn, load_naf(), NAF_REV2)
        load_trade_taxonomy(conn, load_taxonomy())
        load_villes(conn, load_communes(), load_aliases())


def reset_directory(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE enterprise_prolocalisation, enterprise_entreprise RESTART IDENTITY")
        conn.execute("VACUUM ANALYZE enterprise_entreprise")
        conn.execute("VACUUM ANALYZE enterprise_prolocalisation")


_BARE_COLUMNS = sql.SQL(", ").join(sql.Identifier(c) for c in SIRENE_COLUMNS)


def bare_write(conn: psycopg.Connection, rows: str) -> None:
    """The bare set-based write of both tables from the pre-mapped establishments of table
    `rows`: one `INSERT … SELECT … ON CONFLICT` for them, one for their ProLocalisations."""
    updates = sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in SIRENE_COLUMNS[1:]
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO enterprise_entreprise ({cols}) SELECT {cols} FROM {rows} "
            "ON CONFLICT (siret) DO UPDATE SET {updates}"
        ).format(cols=_BARE_COLUMNS, rows=sql.Identifier(rows), updates=updates)
    )
    # What we write too: a ProLocalisation per active establishment × trade × ville.
    conn.execute(sql.SQL(BARE_PROLOCALISATIONS).format(rows=sql.Identifier(rows)))


def bare_copy_upsert(url: str, rows: list[tuple]) -> float:
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        conn.execute(
            sql.SQL("CREATE TEMP TABLE bare_stage ON COMMIT DROP AS SELECT {} FROM enterprise_entreprise WITH NO DATA").format(_BARE_COLUMNS)
        )
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY bare_stage ({}) FROM STDIN").format(_BARE_COLUMNS)) as copy:
            for row in rows:
                copy.write_row(row)
        bare_write(conn, "bare_stage")
    return time.perf_counter() - started


BARE_PROLOCALISATIONS = """
INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id, last_partition)
SELECT e.id, m.sous_categorie_id, v.id, 'bare'
FROM {rows} s
JOIN enterprise_entreprise e ON e.siret = s.siret
LEFT JOIN location_commune_alias a ON a.code_insee = s.code_commune
JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, s.code_commune) AND v.is_active
JOIN ref_naf_mapping m ON m.nomenclature = s.naf_nomenclature AND m.naf_code = s.naf_code
WHERE s.is_active AND m.sous_categorie_id IS NOT NULL
ON CONFLICT (entreprise_id, sous_categorie_id, ville_id)
DO UPDATE SET is_active = true, deactivated_at = NULL, deactivation_reason = NULL
"""


def row_by_row(url: str, rows: list[tuple]) -> float:
    placeholders = ", ".join(["%s"] * len(SIRENE_COLUMNS))
    insert = f"INSERT INTO enterprise_entreprise ({', '.join(SIRENE_COLUMNS)}) VALUES ({placeholders})"
    update = (
        "UPDATE enterprise_entreprise SET "
        + ", ".join(f"{c} = %s" for c in SIRENE_COLUMNS[1:])
        + " WHERE id = %s"
    )
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for row in rows:
            found = conn.execute("SELECT id FROM enterprise_entreprise WHERE siret = %s", (row[0],)).fetchone()
            if found:
                conn.execute(update, (*row[1:], found[0]))
            else:
                conn.execute(insert, row)
    return time.perf_counter() - started


def pipeline(url: str, landing: Path, partition: str) -> tuple[float, int]:
    started = time.perf_counter()
    # What the day's asset (`directory_day`) does, step for step.
    landed = read_columns(landing, partition).table
    with psycopg.connect(url) as conn:
        # Written, audited by every blocking check (part of the day's cost), and published.
        change = publish_day(conn, landed, partition=partition, run_id="bench").result
    return time.perf_counter() - started, change.entreprises.changed + change.prolocalisations.changed


def median_of(n: int, fn) -> float:
    return statistics.median(fn() for _ in range(n))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=35_000)
    parser.add_argument("--row-by-row-sample", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-fetch", action="store_true", help="skip the 70 s quota-paced API fetch")
    parser.add_argument("--stock-rows", type=int, default=0, help="also load a generated stock file of N rows")
    parser.add_argument("--stock-file", type=Path, help="also load this StockEtablissement file")
    parser.add_argument("--unites-legales", type=Path, help="the StockUniteLegale file for its names")
    parser.add_argument("--only-stock", action="store_true", help="skip the daily figures")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON figures")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    if args.only_stock:
        work = Path(tempfile.mkdtemp(prefix="fxbench-stock-"))
        try:
            lines, figures["stock"] = stock_benchmark(
                args.stock_rows, work, args.stock_file, args.unites_legales
            )
            print("\n".join(lines))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            print(json.dumps(figures))
        return 0

    from foxreviews_pipeline.sample.source import land_sample_day

    work = Path(tempfile.mkdtemp(prefix="fxbench-land-"))
    report: list[str] = []
    try:
        with scratch_database() as url:
            load_reference(url)
            landing = work / RAW_DATASET
            land_sample_day(DAY, landing, size=args.rows, meta={"source": "sample"})
            records = read_partition(landing, DAY.isoformat()).records
            rows = table_rows(map_table(records_table(records))[0])
            n = len(records)
            print(f"day {DAY}: {n} landed records, {len(rows)} mappable", flush=True)

            def run_bare():
                reset_directory(url)
                return bare_copy_upsert(url, rows)

            def run_write_path():
                reset_directory(url)
                started = time.perf_counter()
                with psycopg.connect(url) as conn:
                    upsert_entreprises(conn, SIRENE_COLUMNS, rows, source="sirene", partition="bench")
                return time.perf_counter() - started

            def run_ours():
                reset_directory(url)
                return pipeline(url, landing, DAY.isoformat())[0]

            # Interleaved, so that both see the same machine state.
            bare_times, write_times, ours_times = [], [], []
            for _ in range(args.repeat):
                bare_times.append(run_bare())
                write_times.append(run_write_path())
                ours_times.append(run_ours())
            bare_t, ours_t = statistics.median(bare_times), statistics.median(ours_times)
            write_t = statistics.median(write_times)
            rerun_times, rerun_changes = [], []
            for _ in range(args.repeat):
                t, changed = pipeline(url, landing, DAY.isoformat())
                rerun_times.append(t)
                rerun_changes.append(changed)
            rerun_t = statistics.median(rerun_times)

            reset_directory(url)
            sample_rows = rows[: args.row_by_row_sample]
            rbr_t = row_by_row(url, sample_rows)
            rbr_rate = len(sample_rows) / rbr_t

            bare_rate, ours_rate, rerun_rate = len(rows) / bare_t, n / ours_t, n / rerun_t
            report += [
                f"| (a) bare COPY + upsert, then ProLocalisations INSERT … SELECT | {bare_t:.2f} s | {bare_rate:,.0f} rows/s |",
                f"| (b) row by row (sample of {len(sample_rows)}) | {rbr_t:.2f} s | {rbr_rate:,.0f} rows/s |",
                f"| (c0) ours, entreprises write path only (same pre-mapped rows as a) | {write_t:.2f} s | {len(rows) / write_t:,.0f} rows/s |",
                f"| (c) ours, first run (landed → entreprises → ProLocalisations) | {ours_t:.2f} s | {ours_rate:,.0f} rows/s |",
                f"| (c) ours, re-run of the same day | {rerun_t:.2f} s | {rerun_rate:,.0f} rows/s |",
                "",
                f"- c/a (target ≥ 0.70): **{ours_rate / bare_rate:.2f}** (write path alone, c0/a: **{bare_t / write_t:.2f}**)",
                f"- c/b (target ≥ 30): **{ours_rate / rbr_rate:.1f}**",
                f"- re-run speed-up (target ≥ 2): **{ours_t / rerun_t:.2f}×**, rows changed by re-runs: **{sum(rerun_changes)}**",
            ]
            figures["daily"] = {
                "c_over_a": round(ours_rate / bare_rate, 3),
                "c_over_b": round(ours_rate / rbr_rate, 2),
                "rerun_speedup": round(ours_t / rerun_t, 2),
                "rerun_rows_changed": sum(rerun_changes),
            }

        if not args.skip_fetch:
            report += fetch_benchmark(args.rows)
        if args.stock_rows or args.stock_file:
            lines, figures["stock"] = stock_benchmark(
                args.stock_rows, work, args.stock_file, args.unites_legales
            )
            report += lines
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| path | time | throughput |\n|---|---:|---:|")
    print("\n".join(report))
    if args.json:
        print(json.dumps(figures))
    return 0


def fetch_benchmark(rows: int) -> list[str]:
    from foxreviews_pipeline.lib.sirene.client import InseeClient
    from foxreviews_pipeline.lib.sirene.sources import land_day_with_client
    from foxreviews_pipeline.sample.fake_server import FakeInseeServer
    from foxreviews_pipeline.sample.source import sample_day_source

    source = sample_day_source(rows)
    with (
        FakeInseeServer(day_source=source, api_key="bench", quota=30, quota_window_s=60) as server,
        InseeClient(server.base_url, "bench", 30) as client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        started = time.perf_counter()
        fetched = land_day_with_client(client, DAY, Path(tmp))
        elapsed = time.perf_counter() - started
    pages = fetched.stats["pages"]
    ideal = (fetched.stats["api_calls"] - 1) * 2.0  # 30/min: one call every 2 s after the first
    return [
        "",
        f"- API fetch of {fetched.received} records: {fetched.stats['api_calls']} calls ({pages} pages), "
        f"{elapsed:.1f} s against a quota floor of {ideal:.1f} s "
        f"(**{elapsed / ideal:.3f}×**, target ≤ 1.10), **{fetched.stats['http_429']}** × 429",
    ]


_STOCK_CHILD = r"""
import json, sys, time, psycopg
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from foxreviews_pipeline.lib.directory.stock_load import publish_stock_partition
from foxreviews_pipeline.lib.directory.stock_load import stage_for_directory
url, path, ul, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def load(partition):
    with psycopg.connect(url) as conn, conn.transaction():
        return publish_stock_partition(conn, partition).result

runs = []
for _ in range(2):  # the load, then a re-load of the same files
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        staged = stage_for_directory(conn, Path(path), Path(ul))
    stage_s = time.perf_counter() - started
    # What the backfill runs: every partition, `workers` at a time (the pool's limit),
    # the largest first.
    partitions = sorted(staged.rows_by_partition, key=lambda p: -staged.rows_by_partition[p])
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(load, partitions))
    runs.append({"s": time.perf_counter() - started, "stage_s": stage_s,
                 "read": sum(r.records for r in results),
                 "written": sum(r.entreprises.changed for r in results),
                 "rejected": sum(r.rejected for r in results),
                 "prolocs": sum(r.prolocalisations.created for r in results)})
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"runs": runs, "peak_rss_mb": int(hwm.split()[1]) / 1024}))
"""


def plain_copy(url: str, path: Path) -> float:
    """The reference: the file COPYed as it is into an unlogged table without indexes."""
    from foxreviews_pipeline.lib.sirene.stock_staging import open_csv, read_header

    columns = read_header(path)
    with psycopg.connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute(
            "CREATE UNLOGGED TABLE bench_copy (" + ", ".join(f'"{c}" text' for c in columns) + ")"
        )
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_copy FROM STDIN (FORMAT csv, HEADER true)") as copy,
            open_csv(path) as stream,
        ):
            while block := stream.read(1 << 20):
                copy.write(block)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return elapsed


def bare_directory_write(url: str) -> float:
    """The ceiling of any set-based write of the directory: the rows the load wrote, already
    mapped, written again into the emptied tables by the server itself — one `INSERT …
    SELECT … ON CONFLICT` for the establishments, one for their ProLocalisations, no client,
    no mapping, no audit."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE UNLOGGED TABLE bench_premapped AS SELECT {} FROM enterprise_entreprise").format(_BARE_COLUMNS)
        )
        conn.execute("VACUUM ANALYZE bench_premapped")
    reset_directory(url)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        bare_write(conn, "bench_premapped")
    return time.perf_counter() - started


def stock_benchmark(
    n: int, work: Path, path: Path | None = None, ul: Path | None = None, workers: int = 2
) -> tuple[list[str], dict]:
    """Stages and loads every partition of a stock in a child process (its own peak memory),
    and COPYs the same file plainly for the reference, in the same run."""
    import json
    import subprocess

    from foxreviews_pipeline.lib.sirene.stock_file import find_unites_legales
    from foxreviews_pipeline.sample.stock_files import write_sample_stock

    if path is None:
        path = work / "StockEtablissement_utf8.csv"
        ul = work / "StockUniteLegale_utf8.csv"
        write_sample_stock(path, n, unites_legales_path=ul)
    ul = ul or find_unites_legales(path)
    with scratch_database() as url:
        load_reference(url)
        copy_s = statistics.median(plain_copy(url, path) for _ in range(3))
        child = subprocess.run(
            [sys.executable, "-c", _STOCK_CHILD, url, str(path), str(ul or ""), str(workers)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        bare_s = bare_directory_write(url)
    out = json.loads(child.stdout)
    first, again = out["runs"]
    peak_mb = out["peak_rss_mb"]
    figures = {
        "rows": first["read"],
        "load_s": round(first["s"], 2),
        "reload_s": round(again["s"], 2),
        "copy_s": round(copy_s, 2),
        "reload_rows_written": again["written"],
        "peak_rss_mb": round(peak_mb),
        "stage_s": round(first["stage_s"], 2),
        "bare_write_s": round(bare_s, 2),
    }
    lines = [
        "",
        f"- stock file {path.name} ({first['read']:,} rows, partitions {workers} at a time): "
        f"plain COPY **{copy_s:.1f} s**; "
        f"staged and loaded in **{first['s']:.1f} s** ({copy_s / first['s']:.2f} × COPY, target ≥ 0.2; "
        f"staging {first['stage_s']:.1f} s), {first['written']:,} rows written, "
        f"{first['rejected']:,} rejected, {first['prolocs']:,} ProLocalisations created; "
        f"re-loaded in {again['s']:.1f} s ({copy_s / again['s']:.2f} × COPY, target ≥ 0.5) with "
        f"**{again['written']}** rows written; peak RSS of the loading process "
        f"**{peak_mb:,.0f} MB** (target ≤ 1,024 MB)",
        f"- the same rows, pre-mapped, written into the emptied directory by two server-side "
        f"`INSERT … SELECT … ON CONFLICT` (the bare write, no client, no mapping, no audit): "
        f"**{bare_s:.1f} s** ({copy_s / bare_s:.2f} × COPY); the load is "
        f"{bare_s / first['s']:.2f} × that bare write",
    ]
    return lines, figures


if __name__ == "__main__":
    sys.exit(main())
