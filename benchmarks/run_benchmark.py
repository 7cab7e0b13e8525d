"""The performance harness (benchmarks/README.md), every figure measured side by side in one run.

    .venv/bin/python benchmarks/run_benchmark.py [--rows 35000] [--skip-fetch] [--stock-rows N]
        [--directory-rows N]

On one synthetic SIRENE day (the `sample` source, landed through the real client), on
empty tables or, with `--directory-rows N`, on a directory already holding N establishments
and their ProLocalisations (the day's own rows removed between repetitions):
  (a) bare   — COPY of pre-mapped rows into a staging table + one INSERT … ON CONFLICT:
               the practical ceiling;
  (b) row    — per record: SELECT by SIRET, then INSERT or UPDATE, autocommit (the old
               system's path), on a sub-sample, reported as rows/s;
  (c) ours   — landed file → mapping → entreprises upsert → ProLocalisations, one
               transaction, first run on empty tables, then a re-run of the same day.
Then, unless skipped: the API fetch of a day through the real client against a local
server enforcing INSEE's quota (30/min), and a stock file load (`--stock-rows`) beside the
bare write of the same rows and their bulk limit (loaded pg_restore's way).

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rows import table_rows  # noqa: E402
from foxreviews_pipeline.lib.db.catalog import TableKeys, table_keys  # noqa: E402
from foxreviews_pipeline.lib.db.migrations import migrate  # noqa: E402
from foxreviews_pipeline.lib.db.server import (  # noqa: E402
    start_embedded_server,
    stop_embedded_server,
    with_database,
)
from foxreviews_pipeline.lib.directory.daily import publish_day  # noqa: E402
from foxreviews_pipeline.lib.directory.entreprises import SIRENE_COLUMNS, upsert_entreprises  # noqa: E402
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, read_columns, read_partition  # noqa: E402
from foxreviews_pipeline.lib.sirene.mapping import (  # noqa: E402
    MAPPING_VERSION,
    map_table,
    records_table,
)

DAY = date(2026, 11, 20)
# The directory's two tables, referenced first.
DIRECTORY_TABLES = ("enterprise_entreprise", "enterprise_prolocalisation")


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


def reset_directory(url: str, preloaded: Preloaded | None = None) -> None:
    """Empties the directory; with a preload (`--directory-rows`), removes only what the day
    wrote — its establishments by SIRET, their ProLocalisations, the change feed's rows —
    and keeps the preloaded ones."""
    with psycopg.connect(url, autocommit=True) as conn:
        if preloaded is None:
            conn.execute("TRUNCATE enterprise_prolocalisation, enterprise_entreprise RESTART IDENTITY")
        else:
            with conn.transaction():
                ids = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM enterprise_entreprise WHERE siret = ANY(%s)",
                        (preloaded.day_sirets,),
                    )
                ]
                conn.execute("DELETE FROM enterprise_prolocalisation WHERE entreprise_id = ANY(%s)", (ids,))
                conn.execute("DELETE FROM enterprise_entreprise WHERE id = ANY(%s)", (ids,))
                conn.execute("TRUNCATE directory_change, directory_publication")
                # Whatever the day wrote came after the preload: nothing must be left above it.
                left = conn.execute(
                    "SELECT (SELECT count(*) FROM enterprise_entreprise WHERE id > %s), "
                    "(SELECT count(*) FROM enterprise_prolocalisation WHERE id > %s)",
                    (preloaded.last_entreprise_id, preloaded.last_prolocalisation_id),
                ).fetchone()
                if left != (0, 0):
                    raise RuntimeError(f"the reset left rows the day wrote (entreprises, ProLocalisations): {left}")
        conn.execute("VACUUM ANALYZE enterprise_entreprise")
        conn.execute("VACUUM ANALYZE enterprise_prolocalisation")


@contextmanager
def keys_dropped(conn: psycopg.Connection, tables: Sequence[str]) -> Iterator[TableKeys]:
    """Within the caller's transaction: the tables' keys and indexes dropped, then made
    again exactly as they were (pg_restore's way of loading)."""
    keys = table_keys(conn, tables)
    for statement in keys.drops():
        conn.execute(statement)
    yield keys
    for statement in keys.creates():
        conn.execute(statement)
    if table_keys(conn, tables) != keys:
        raise RuntimeError("the keys and indexes made again differ from the ones dropped")


@contextmanager
def user_triggers_off(conn: psycopg.Connection, tables: Sequence[str]) -> Iterator[None]:
    """Within the caller's transaction: the tables' own enabled triggers (the change feed's)
    disabled, then enabled again as they were."""
    enable = {"O": "ENABLE", "A": "ENABLE ALWAYS", "R": "ENABLE REPLICA"}
    oids = [conn.execute("SELECT %s::regclass::oid", (t,)).fetchone()[0] for t in tables]  # type: ignore[index]
    triggers = conn.execute(
        "SELECT tgrelid::regclass::text, tgname, tgenabled::text FROM pg_trigger "
        "WHERE tgrelid = ANY(%s::oid[]) AND NOT tgisinternal AND tgenabled <> 'D'",
        (oids,),
    ).fetchall()
    for table, name, _ in triggers:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.SQL(table), sql.Identifier(name)))
    yield
    for table, name, state in triggers:
        conn.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(sql.SQL(table), sql.SQL(enable[state]), sql.Identifier(name))
        )


@contextmanager
def feed_triggers_dropped(url: str) -> Iterator[None]:
    """The change feed's triggers dropped, then made again from their own definitions: what
    a publish costs without the feed (transition tables included, which a disabled trigger
    still has PostgreSQL fill)."""
    with psycopg.connect(url, autocommit=True) as conn:
        triggers = conn.execute(
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgname LIKE 'directory\\_change\\_%' AND NOT tgisinternal"
        ).fetchall()
        if not triggers:
            raise RuntimeError("the change feed has no triggers to drop")
        with conn.transaction():
            for table, name, _ in triggers:
                conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), sql.SQL(table)))
        try:
            yield
        finally:
            with conn.transaction():
                for *_, definition in triggers:
                    conn.execute(definition)


@dataclass(frozen=True)
class Preloaded:
    """The directory the day is measured on (`--directory-rows`): rows 1…last of both tables
    are the preload's, and the day's SIRETs are none of them."""

    rows: int
    prolocalisations: int
    last_entreprise_id: int
    last_prolocalisation_id: int
    seconds: float
    day_sirets: list[str]


# The preload's SIRETs: SIREN i (i ≥ 1, zero-padded) and this NIC. A sample day's NICs are
# 0001x–0040x (`sample/day.py`, `_nic_for`), except La Poste's (SIREN 356000000, which the
# preload stops short of): no preloaded SIRET is ever one of a day's.
_PRELOAD_NIC = "90001"
_PRELOAD_MAX_ROWS = 355_999_999
# As in the sample stock (`sample/stock_files.py`): one establishment in ten is closed.
_PRELOAD_CLOSED_SHARE = 0.10

# A uniform draw in [0, 1) for row i, one per seed.
_UNIFORM = "((hashint8extended(g.i, {seed}) & 9223372036854775807)::float8 / 9223372036854775808.0)"

_PRELOAD_NAF = """
CREATE TEMP TABLE preload_naf ON COMMIT DROP AS
WITH ranked AS (
    SELECT n.code, n.libelle,
           row_number() OVER (ORDER BY coalesce(array_position(%(common)s::text[], n.code), 1000000),
                                       md5(n.code)) AS rank
    FROM ref_naf_nomenclature n WHERE n.nomenclature = 'NAFRev2'
)
SELECT rank::int AS k, code, libelle,
       -- Zipf-like, the most common trades first, as a sample day draws them.
       sum(1.0 / (rank + 2) ^ 0.85) OVER (ORDER BY rank) - 1.0 / (rank + 2) ^ 0.85 AS lower_bound,
       1.0 / (rank + 2) ^ 0.85 AS weight
FROM ranked
"""

_PRELOAD_ENTREPRISES = """
INSERT INTO enterprise_entreprise (
    siret, siren, nom, adresse, code_postal, ville_nom, code_commune, naf_code, naf_libelle,
    naf_nomenclature, is_active, date_creation, date_fermeture, est_siege, tranche_effectifs,
    statut_diffusion, date_dernier_traitement, sirene_lat, sirene_lng, sirene_epsg, source,
    last_partition, mapping_version)
SELECT s.siren || %(nic)s, s.siren, 'ETABLISSEMENT ' || s.i, (1 + s.i %% 199) || ' RUE DE LA REPUBLIQUE',
       v.code_postal, v.nom, v.code_insee, n.code, n.libelle, 'NAFRev2', NOT s.closed,
       s.created, CASE WHEN s.closed THEN s.created + 1000 END, true,
       (ARRAY['NN', 'NN', '00', '01', '02', '03', '11', NULL])[1 + s.i %% 8], 'O',
       timestamp '2024-03-01' + s.u_jitter * interval '28 days',
       v.lat + (s.u_jitter - 0.5) * 0.01, v.lng + (s.u_jitter - 0.5) * 0.01, v.epsg,
       'sirene', 'preload', %(version)s
FROM (
    SELECT g.i, lpad(g.i::text, 9, '0') AS siren,
           width_bucket({u1} * vb.total, vb.bounds) AS kv,
           width_bucket({u2} * nb.total, nb.bounds) AS kn,
           {u3} < %(closed)s AS closed,
           date '1985-01-01' + ({u4} * 14000)::int AS created,
           {u5} AS u_jitter
    FROM generate_series(1, %(n)s::bigint) AS g (i),
         (SELECT array_agg(lower_bound ORDER BY k) AS bounds, sum(weight) AS total FROM preload_ville) vb,
         (SELECT array_agg(lower_bound::float8 ORDER BY k) AS bounds, sum(weight)::float8 AS total FROM preload_naf) nb
) s
JOIN preload_ville v ON v.k = s.kv
JOIN preload_naf n ON n.k = s.kn
""".format(**{f"u{k}": _UNIFORM.format(seed=k) for k in range(1, 6)})

_PRELOAD_PROLOCALISATIONS = """
INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id, last_partition)
SELECT e.id, m.sous_categorie_id, v.id, 'preload'
FROM enterprise_entreprise e
JOIN location_ville v ON v.code_insee = e.code_commune AND v.is_active
JOIN ref_naf_mapping m ON m.nomenclature = e.naf_nomenclature AND m.naf_code = e.naf_code
WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
"""


def preload_directory(url: str, n: int, day_sirets: list[str]) -> Preloaded:
    """N establishments and their ProLocalisations written into the empty directory, made
    by the server from the reference data: real communes (drawn by population, with the
    sample's point for each, `sample/positions.py`) and NAF rév. 2 codes (the sample day's
    most common first), one in ten closed. Written as pg_restore would (keys and indexes
    made after the rows; the change feed's triggers, which would only capture the rows to
    record nothing, off), then VACUUM ANALYZE: the state of a directory in production."""
    from foxreviews_pipeline.lib.sirene.geography import departement_of, epsg_of_departement
    from foxreviews_pipeline.sample.day import COMMON_NAF_CODES
    from foxreviews_pipeline.sample.positions import commune_point

    if not 0 < n <= _PRELOAD_MAX_ROWS:
        raise ValueError(f"--directory-rows must be between 1 and {_PRELOAD_MAX_ROWS:,}")
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT EXISTS (SELECT FROM enterprise_entreprise)").fetchone() == (True,):
            raise RuntimeError("the directory must be empty before its preload")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        villes = conn.execute(
            "SELECT code_insee, nom, code_postal_principal, coalesce(population, 0) FROM location_ville "
            "WHERE is_active ORDER BY code_insee"
        ).fetchall()
        conn.execute(
            "CREATE TEMP TABLE preload_ville (k int, code_insee text, nom text, code_postal text, "
            "lat float8, lng float8, epsg int, lower_bound float8, weight float8) ON COMMIT DROP"
        )
        lower = 0.0
        with conn.cursor() as cur, cur.copy("COPY preload_ville FROM STDIN") as copy:
            for k, (code, nom, code_postal, population) in enumerate(villes, 1):
                point = commune_point(code)
                epsg = epsg_of_departement(departement_of(code)) if point else None
                weight = float(population) + 100.0  # every commune has a few establishments
                copy.write_row((k, code, nom, code_postal, *(point or (None, None)), epsg, lower, weight))
                lower += weight
        conn.execute(_PRELOAD_NAF, {"common": list(COMMON_NAF_CODES)})
        conn.execute("ANALYZE preload_ville")
        conn.execute("ANALYZE preload_naf")
        with user_triggers_off(conn, DIRECTORY_TABLES), keys_dropped(conn, DIRECTORY_TABLES):
            conn.execute(
                _PRELOAD_ENTREPRISES,
                {"n": n, "nic": _PRELOAD_NIC, "closed": _PRELOAD_CLOSED_SHARE, "version": MAPPING_VERSION},
            )
            conn.execute(_PRELOAD_PROLOCALISATIONS)
        conn.commit()
        rows, pages, last_e, last_p = conn.execute(
            "SELECT (SELECT count(*) FROM enterprise_entreprise), "
            "(SELECT count(*) FROM enterprise_prolocalisation), "
            "(SELECT coalesce(max(id), 0) FROM enterprise_entreprise), "
            "(SELECT coalesce(max(id), 0) FROM enterprise_prolocalisation)"
        ).fetchone()  # type: ignore[misc]
        clashes = conn.execute(
            "SELECT count(*) FROM enterprise_entreprise WHERE siret = ANY(%s)", (day_sirets,)
        ).fetchone()
        conn.commit()
    if (rows, last_e, last_p) != (n, n, pages) or clashes != (0,):
        raise RuntimeError(f"preload: {rows} rows (ids to {last_e}), {pages} pages (to {last_p}), {clashes} day SIRETs")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE enterprise_entreprise")
        conn.execute("VACUUM ANALYZE enterprise_prolocalisation")
    return Preloaded(rows, pages, last_e, last_p, time.perf_counter() - started, day_sirets)


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


# A ProLocalisation per active establishment of `rows` × trade × ville; the bulk limit
# inserts them as is, the bare write on conflict.
PROLOCALISATIONS = """
INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id, last_partition)
SELECT e.id, m.sous_categorie_id, v.id, 'bare'
FROM {rows} s
JOIN enterprise_entreprise e ON e.siret = s.siret
LEFT JOIN location_commune_alias a ON a.code_insee = s.code_commune
JOIN location_ville v ON v.code_insee = coalesce(a.ville_code_insee, s.code_commune) AND v.is_active
JOIN ref_naf_mapping m ON m.nomenclature = s.naf_nomenclature AND m.naf_code = s.naf_code
WHERE s.is_active AND m.sous_categorie_id IS NOT NULL
"""
BARE_PROLOCALISATIONS = PROLOCALISATIONS + """\
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


def positions_cost(records: pa.Table, repeat: int) -> tuple[float, float]:
    """The position conversion alone (`geography.positions`, as `map_table` calls it): its
    time on the day's records, and per million rows (the day's columns repeated)."""
    from foxreviews_pipeline.lib.sirene import geography

    def convert(table: pa.Table) -> float:
        started = time.perf_counter()
        geography.positions(
            table.column("coordonneeLambertAbscisseEtablissement"),
            table.column("coordonneeLambertOrdonneeEtablissement"),
            table.column("codeCommuneEtablissement"),
            np.zeros(table.num_rows, bool),
        )
        return time.perf_counter() - started

    million = pa.concat_tables([records] * -(-1_000_000 // records.num_rows)).slice(0, 1_000_000)
    return median_of(repeat, lambda: convert(records)), median_of(repeat, lambda: convert(million))


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
    parser.add_argument(
        "--stock-repeat", type=int, default=1, metavar="K",
        help="run the stock's figures K times, each in a fresh database, and report the run of "
        "the median limit / load",
    )
    parser.add_argument(
        "--directory-rows", type=int, default=0, metavar="N",
        help="measure the day on a directory already holding N establishments (and their "
        "ProLocalisations), as in production (~40M); 0: on empty tables",
    )
    parser.add_argument(
        "--stock-feed-rows", type=int, default=0, metavar="N",
        help="only measure the change feed's cost on the first load by partitions of a "
        "generated stock of N rows (with its triggers, then without)",
    )
    parser.add_argument("--json", action="store_true", help="end with one line of JSON figures")
    args = parser.parse_args()
    figures: dict[str, dict] = {}
    if args.stock_feed_rows:
        line, figures["stock_feed"] = stock_feed_benchmark(args.stock_feed_rows, args.repeat)
        print(line)
        if args.json:
            print(json.dumps(figures))
        return 0
    if args.only_stock:
        work = Path(tempfile.mkdtemp(prefix="fxbench-stock-"))
        try:
            lines, figures["stock"] = stock_benchmark(
                args.stock_rows, work, args.stock_file, args.unites_legales, repeat=args.stock_repeat
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
            preloaded = None
            if args.directory_rows:
                day_sirets = list(dict.fromkeys(r["siret"] for r in records if r.get("siret")))
                preloaded = preload_directory(url, args.directory_rows, day_sirets)
                print(
                    f"directory: {preloaded.rows:,} establishments and {preloaded.prolocalisations:,} "
                    f"ProLocalisations preloaded in {preloaded.seconds:.1f} s",
                    flush=True,
                )

            def reset() -> None:
                reset_directory(url, preloaded)

            def run_bare():
                reset()
                return bare_copy_upsert(url, rows)

            def run_write_path():
                reset()
                started = time.perf_counter()
                with psycopg.connect(url) as conn:
                    upsert_entreprises(conn, SIRENE_COLUMNS, rows, source="sirene", partition="bench")
                return time.perf_counter() - started

            def run_ours():
                reset()
                return pipeline(url, landing, DAY.isoformat())[0]

            def run_ours_without_feed():
                with feed_triggers_dropped(url):
                    return run_ours()

            # Interleaved, so that all see the same machine state.
            bare_times, write_times, ours_times, unfed_times = [], [], [], []
            for _ in range(args.repeat):
                bare_times.append(run_bare())
                write_times.append(run_write_path())
                ours_times.append(run_ours())
                unfed_times.append(run_ours_without_feed())
            bare_t, ours_t = statistics.median(bare_times), statistics.median(ours_times)
            unfed_t = statistics.median(unfed_times)
            write_t = statistics.median(write_times)
            rerun_times, rerun_changes = [], []
            for _ in range(args.repeat):
                t, changed = pipeline(url, landing, DAY.isoformat())
                rerun_times.append(t)
                rerun_changes.append(changed)
            rerun_t = statistics.median(rerun_times)

            reset()
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
                f"- the change feed (target ≤ 10 %): (c) **{ours_t / unfed_t - 1:+.1%}** over the same day "
                f"with the feed's triggers dropped ({unfed_t:.2f} s)",
                f"- re-run speed-up (target ≥ 2): **{ours_t / rerun_t:.2f}×**, rows changed by re-runs: **{sum(rerun_changes)}**",
                f"- directory before the day: **{preloaded.rows if preloaded else 0:,}** establishments"
                + (
                    f" and {preloaded.prolocalisations:,} ProLocalisations (preloaded in {preloaded.seconds:.1f} s)"
                    if preloaded else " (empty tables)"
                )
                + f"; a day takes (a) **{bare_t:.2f} s**, (c) **{ours_t:.2f} s**",
            ]
            day_positions_s, million_positions_s = positions_cost(records_table(records), args.repeat)
            report += [
                f"- positions (geography.positions alone): **{day_positions_s * 1000:.0f} ms** for the "
                f"day ({day_positions_s / ours_t:.1%} of (c), target ≤ 5 %), "
                f"**{million_positions_s:.2f} s** per million rows (target ≤ 2 s)",
            ]
            figures["daily"] = {
                "positions_share": round(day_positions_s / ours_t, 4),
                "positions_s_per_million": round(million_positions_s, 3),
                "c_over_a": round(ours_rate / bare_rate, 3),
                "c_over_b": round(ours_rate / rbr_rate, 2),
                "feed_overhead": round(ours_t / unfed_t - 1, 3),
                "rerun_speedup": round(ours_t / rerun_t, 2),
                "rerun_rows_changed": sum(rerun_changes),
                "directory_rows": args.directory_rows,
                "a_s": round(bare_t, 3),
                "c_s": round(ours_t, 3),
            }

        if not args.skip_fetch:
            report += fetch_benchmark(args.rows)
        if args.stock_rows or args.stock_file:
            lines, figures["stock"] = stock_benchmark(
                args.stock_rows, work, args.stock_file, args.unites_legales, repeat=args.stock_repeat
            )
            report += lines
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| path | time | throughput |\n|---|---:|---:|")
    print("\n".join(report))
    if args.json:
        print(json.dumps(figures))
    return 0


def stock_feed_benchmark(n: int, repeat: int) -> tuple[str, dict]:
    """A stock's first load by partitions, one after the other (each one's first load: one
    snapshot marker), timed with the change feed's triggers and with them dropped,
    interleaved `repeat` times."""
    from foxreviews_pipeline.lib.directory.stock_load import (
        publish_stock_partition,
        stage_for_directory,
    )
    from foxreviews_pipeline.sample.stock_files import write_sample_stock

    work = Path(tempfile.mkdtemp(prefix="fxbench-feed-"))
    path, ul = work / "StockEtablissement_utf8.csv", work / "StockUniteLegale_utf8.csv"
    try:
        write_sample_stock(path, n, unites_legales_path=ul)
        with scratch_database() as url:
            load_reference(url)

            def first_load() -> float:
                reset_directory(url)
                with psycopg.connect(url) as conn:
                    partitions = sorted(stage_for_directory(conn, path, ul).rows_by_partition)
                    started = time.perf_counter()
                    for partition in partitions:
                        with conn.transaction():
                            publish_stock_partition(conn, partition)
                    return time.perf_counter() - started

            fed, unfed = [], []
            for _ in range(repeat):
                fed.append(first_load())
                with feed_triggers_dropped(url):
                    unfed.append(first_load())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fed_t, unfed_t = statistics.median(fed), statistics.median(unfed)
    overhead = fed_t / unfed_t - 1
    line = (
        f"- the change feed on a stock's first load ({n:,} rows by partitions): "
        f"**{overhead:+.1%}** ({fed_t:.2f} s with it, {unfed_t:.2f} s with its triggers dropped; "
        "target ≤ 10 %)"
    )
    return line, {"rows": n, "feed_overhead": round(overhead, 3), "s": round(fed_t, 2), "without_feed_s": round(unfed_t, 2)}


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
from foxreviews_pipeline.lib.directory.bulk_load import bulk_load_stock
url, path, ul, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def load(partition):
    with psycopg.connect(url) as conn, conn.transaction():
        return publish_stock_partition(conn, partition).result

runs = []
for first in (True, False):  # the load, then a re-load of the same files
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        staged = stage_for_directory(conn, Path(path), Path(ul))
    stage_s = time.perf_counter() - started
    phases = {}
    if first:
        # The first load of the empty directory: the bulk load (job sirene_stock_bulk_load),
        # its partitions `workers` at a time.
        loaded = bulk_load_stock(url, workers=workers)
        results = list(loaded.partitions.values())
        phases = {"shadow_s": loaded.load_s, "build_s": loaded.build_s, "swap_s": loaded.swap_s}
    else:
        # A re-load of the populated directory: what the backfill runs, every partition,
        # `workers` at a time (the pool's limit), the largest first.
        partitions = sorted(staged.rows_by_partition, key=lambda p: -staged.rows_by_partition[p])
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(load, partitions))
    runs.append({"s": time.perf_counter() - started, "stage_s": stage_s, **phases,
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


def directory_counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM enterprise_entreprise), (SELECT count(*) FROM enterprise_prolocalisation)"
        ).fetchone()
    assert counts is not None
    return counts[0], counts[1]


def bulk_limit_write(url: str, work: Path) -> float:
    """The ceiling of any load of the directory, pg_restore's way: the bare write's pre-mapped
    rows (`bench_premapped`) loaded into the emptied tables in one logged transaction — every
    key, unique constraint, foreign key and index dropped (NOT NULL and CHECK kept), the
    establishments COPYed in as pg_restore sends them, their ProLocalisations derived by one
    `INSERT … SELECT`, then every key and index made again as the catalog defined it. Timed
    from the transaction's start to its commit. The change feed's triggers stay: unmarked,
    they record nothing (but their transition tables still capture every row)."""
    dump = work / "bench_premapped.copy"
    columns = _BARE_COLUMNS
    try:
        # What pg_restore reads: the rows in COPY's text format, in a file.
        with (
            psycopg.connect(url) as conn,
            conn.cursor() as cur,
            cur.copy(sql.SQL("COPY bench_premapped ({}) TO STDOUT").format(columns)) as copy,
            dump.open("wb") as out,
        ):
            for block in copy:
                out.write(block)
        # Empty, identities restarted: the ids the rows get are the ones the bare write gave.
        reset_directory(url)
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            with conn.transaction(), keys_dropped(conn, DIRECTORY_TABLES):
                with (
                    conn.cursor() as cur,
                    cur.copy(sql.SQL("COPY enterprise_entreprise ({}) FROM STDIN").format(columns)) as copy,
                    dump.open("rb") as stream,
                ):
                    while block := stream.read(1 << 20):
                        copy.write(block)
                conn.execute(sql.SQL(PROLOCALISATIONS).format(rows=sql.Identifier("bench_premapped")))
            return time.perf_counter() - started
    finally:
        dump.unlink(missing_ok=True)


# The national files (SPEC: ~40M establishments): the load's projection for them is its rate
# per row on the measured file times this.
NATIONAL_ROWS = 40_000_000
# The plain COPY of a 1M-row stock file on this machine when the national target (≤ 15 min)
# was set (2026-12-05): the machine's speed varies by more than two between days, so the
# projection is also given at that speed, scaled by the same run's plain COPY.
REFERENCE_COPY_S_PER_MILLION = 1.82


def national_projection(load_s: float, copy_s: float, rows: int) -> tuple[float, float]:
    """The first load of the national files in minutes, at the measured file's rate per row:
    on this machine as it ran, and at the speed of the day the target was set (the load's
    time scaled by the reference COPY over this run's)."""
    minutes = load_s / rows * NATIONAL_ROWS / 60
    return minutes, minutes * REFERENCE_COPY_S_PER_MILLION / (copy_s / rows * 1_000_000)


def stock_benchmark(
    n: int, work: Path, path: Path | None = None, ul: Path | None = None, workers: int = 2,
    repeat: int = 1,
) -> tuple[list[str], dict]:
    """The stock's figures (`stock_run`), `repeat` times, each in a database of its own: those
    of the run whose limit / load is the median, with every run's ratio beside them. On a
    shared machine one run's ratio moves by a tenth either way."""
    from foxreviews_pipeline.lib.sirene.stock_file import find_unites_legales
    from foxreviews_pipeline.sample.stock_files import write_sample_stock

    if path is None:
        path = work / "StockEtablissement_utf8.csv"
        ul = work / "StockUniteLegale_utf8.csv"
        write_sample_stock(path, n, unites_legales_path=ul)
    ul = ul or find_unites_legales(path)
    runs = [stock_run(work, path, ul, workers) for _ in range(max(1, repeat))]
    ratios = [figures["limit_over_load"] for _, figures in runs]
    lines, figures = sorted(runs, key=lambda run: run[1]["limit_over_load"])[(len(runs) - 1) // 2]
    if len(runs) > 1:
        figures["limit_over_load_runs"] = ratios
        lines.append(
            f"- limit / load in each of {len(runs)} runs: {', '.join(f'{r:.2f}' for r in ratios)} "
            "(the figures above: the run of the median)"
        )
    return lines, figures


def stock_run(work: Path, path: Path, ul: Path | None, workers: int) -> tuple[list[str], dict]:
    """Stages and loads every partition of a stock in a child process (its own peak memory),
    and COPYs the same file plainly for the reference, in the same run."""
    import json
    import subprocess

    with scratch_database() as url:
        load_reference(url)
        copy_s = statistics.median(plain_copy(url, path) for _ in range(3))
        child = subprocess.run(
            [sys.executable, "-c", _STOCK_CHILD, url, str(path), str(ul or ""), str(workers)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        bare_s = bare_directory_write(url)
        written = directory_counts(url)
        bulk_s = bulk_limit_write(url, work)
        if directory_counts(url) != written:
            raise RuntimeError(f"the bulk limit wrote {directory_counts(url)} rows, the bare write {written}")
    out = json.loads(child.stdout)
    first, again = out["runs"]
    peak_mb = out["peak_rss_mb"]
    national_min, national_reference_min = national_projection(first["s"], copy_s, first["read"])
    figures = {
        "rows": first["read"],
        "load_s": round(first["s"], 2),
        "reload_s": round(again["s"], 2),
        "copy_s": round(copy_s, 2),
        "reload_rows_written": again["written"],
        "peak_rss_mb": round(peak_mb),
        "stage_s": round(first["stage_s"], 2),
        "bare_write_s": round(bare_s, 2),
        "bulk_limit_s": round(bulk_s, 2),
        "limit_over_load": round(bulk_s / first["s"], 3),
        # Staging and load of the national files at this file's rate: on the machine as it
        # ran, and at the COPY speed of the day the target (≤ 15 min) was set.
        "national_min": round(national_min, 1),
        "national_at_reference_min": round(national_reference_min, 1),
        # The first load's phases (the bulk load): the shadow tables written, built, swapped.
        "bulk_phases_s": {k: round(first[k], 2) for k in ("shadow_s", "build_s", "swap_s")},
    }
    lines = [
        "",
        f"- stock file {path.name} ({first['read']:,} rows, partitions {workers} at a time): "
        f"plain COPY **{copy_s:.1f} s**; "
        f"staged and bulk loaded into the empty directory in **{first['s']:.1f} s** "
        f"({copy_s / first['s']:.2f} × COPY, target ≥ 0.2; staging {first['stage_s']:.1f} s, "
        f"shadow tables {first['shadow_s']:.1f} s, built {first['build_s']:.1f} s, swapped "
        f"{first['swap_s']:.2f} s), {first['written']:,} rows written, "
        f"{first['rejected']:,} rejected, {first['prolocs']:,} ProLocalisations created; "
        f"re-loaded by partitions in {again['s']:.1f} s ({copy_s / again['s']:.2f} × COPY, target ≥ 0.5) with "
        f"**{again['written']}** rows written; peak RSS of the loading process "
        f"**{peak_mb:,.0f} MB** (target ≤ 1,024 MB)",
        f"- the same rows, pre-mapped, written into the emptied directory by two server-side "
        f"`INSERT … SELECT … ON CONFLICT` (the bare write, no client, no mapping, no audit): "
        f"**{bare_s:.1f} s** ({copy_s / bare_s:.2f} × COPY); the load is "
        f"{bare_s / first['s']:.2f} × that bare write",
        f"- the same rows loaded pg_restore's way (the bulk limit: one transaction, keys and "
        f"indexes dropped, COPY, ProLocalisations by one `INSERT … SELECT`, keys and indexes "
        f"made again): **{bulk_s:.1f} s** ({copy_s / bulk_s:.2f} × COPY, "
        f"{bare_s / bulk_s:.2f} × faster than the bare write); "
        f"bulk_limit_s / load_s: **{bulk_s / first['s']:.2f}** (target ≥ 0.5)",
        f"- national projection ({NATIONAL_ROWS / 1e6:.0f}M rows at this file's rate): "
        f"**{national_min:.1f} min** on this machine as it ran (plain COPY "
        f"{copy_s / first['read'] * 1e6:.2f} s per million rows), "
        f"**{national_reference_min:.1f} min** at the reference speed "
        f"({REFERENCE_COPY_S_PER_MILLION} s per million; target ≤ 15 min)",
    ]
    return lines, figures


if __name__ == "__main__":
    sys.exit(main())
