"""The stock in the asset graph: staged in PostgreSQL, loaded one département per partition,
audited per partition; bad file pairs stop before the directory is touched."""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import datetime

import dagster as dg
import psycopg
import pytest

from foxreviews_pipeline.defs.directory.stock_backfill import stock_bulk_load
from foxreviews_pipeline.lib.directory.stock_load import stage_for_directory
from foxreviews_pipeline.lib.sirene.stock_staging import (
    STOCK_PARTITION_KEYS,
    StockFileError,
)
from foxreviews_pipeline.sample.stock_files import write_sample_stock
from foxreviews_pipeline_tests.pipeline import stock_runs

# The NAF codes, the taxonomy and the communes: the share checks need the real ones.
pytestmark = pytest.mark.usefixtures("reference_db")


def _directory(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM enterprise_entreprise), "
            "(SELECT count(*) FROM enterprise_prolocalisation)"
        ).fetchone()


@pytest.mark.parametrize(
    ("code", "partition"),
    [
        ("75115", "75"), ("01001", "01"), ("95127", "95"), ("2A004", "2A"), ("2B033", "2B"),
        ("97411", "974"), ("97801", "978"), ("98735", "987"), (None, "autres"),
        ("20004", "autres"), ("96001", "autres"), ("99999", "autres"), ("7511", "autres"),
        ("97911", "autres"), ("[ND]", "autres"),
    ],
)
def test_the_partition_of_a_commune_code(database_url, code, partition):
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT sirene_departement(%s)", (code,)).fetchone() == (partition,)
    assert partition in STOCK_PARTITION_KEYS


def _partition_by_pattern(code: str | None) -> str:
    """The partition of a commune code as INSEE's code patterns say (the function's first
    definition, in regular expressions)."""
    if code is None:
        return "autres"
    if re.fullmatch(r"(97[1-8]|98[4-9])[0-9]{2}", code):
        return code[:3]
    if re.fullmatch(r"2[AB][0-9]{3}", code):
        return code[:2]
    if re.fullmatch(r"(0[1-9]|1[0-9]|[2-8][0-9]|9[0-5])[0-9]{3}", code) and code[:2] != "20":
        return code[:2]
    return "autres"


def test_the_partition_function_agrees_with_the_code_patterns(database_url):
    """Every code of a large mix of well-formed, near-miss and garbage codes falls where the
    patterns put it (the function tests strings without regular expressions)."""
    rng = random.Random(7)
    alphabet = "0123456789AB a\uff12"  # and a full-width digit
    codes: list[str | None] = [None, "", "2A0O4", "2a004", "75\uff1115", "7511 ", " 7511", "2A04", "971"]
    codes += [f"{n:05d}" for n in range(0, 100_000, 7)]
    codes += [f"{p}{n:03d}" for p in ("2A", "2B", "2C") for n in range(0, 1000, 3)]
    codes += ["".join(rng.choice(alphabet) for _ in range(rng.choice((4, 5, 5, 6)))) for _ in range(20_000)]
    with psycopg.connect(database_url) as conn:
        got = conn.execute(
            "SELECT array_agg(sirene_departement(c) ORDER BY i) FROM unnest(%s::text[]) WITH ORDINALITY u(c, i)",
            (codes,),
        ).fetchone()[0]
    wrong = [(c, g) for c, g in zip(codes, got, strict=True) if g != _partition_by_pattern(c)]
    assert not wrong, wrong[:10]
    assert len(set(got)) == len(STOCK_PARTITION_KEYS)


@pytest.mark.parametrize(
    ("stored", "text", "pending"),
    [
        (datetime(2024, 3, 17, 4, 21, 27), "2024-03-17T04:21:27", False),
        (datetime(2024, 3, 17, 4, 21, 27), "2024-03-17T04:21:28", True),
        (datetime(2024, 3, 17, 4, 21, 27), "2024-03-18T04:21:27", True),
        (datetime(2024, 2, 29, 23, 59, 59, 123000), "2024-02-29T23:59:59.123", False),
        (datetime(2024, 2, 29, 23, 59, 59, 123000), "2024-02-29T23:59:59", True),
        # The same instant written otherwise: applied again, to no change.
        (datetime(2024, 3, 17, 4, 21, 27), "2024-03-17T04:21:27.000", True),
        (datetime(2024, 3, 17, 4, 21, 27), "2024-03-17 04:21:27", True),
        (datetime(2024, 3, 17, 4, 21, 27), "garbage", True),
        (datetime(2024, 3, 17, 4, 21, 27), "", True),
        (datetime(2024, 3, 17, 4, 21, 27), None, True),
        (None, "2024-03-17T04:21:27", True),
    ],
)
def test_a_stock_row_is_still_to_apply_unless_its_version_is_the_stored_one(database_url, stored, text, pending):
    """`STILL_TO_APPLY` compares the file's version text with the stored version, in
    staging's DateStyle: never an error, whatever the text."""
    from foxreviews_pipeline.lib.directory.stock_load import STILL_TO_APPLY
    from foxreviews_pipeline.lib.sirene.mapping import MAPPING_VERSION
    from foxreviews_pipeline.lib.sirene.stock_staging import STAGING_DATESTYLE

    siret = "73282932000074"
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT set_config('datestyle', %s, true)", (STAGING_DATESTYLE,))
        conn.execute(
            "INSERT INTO enterprise_entreprise (siret, siren, nom, source, mapping_version, "
            "date_dernier_traitement) VALUES (%s, %s, 'X', 'sirene', %s, %s)",
            (siret, siret[:9], MAPPING_VERSION, stored),
        )
        (still,) = conn.execute(
            psycopg.sql.SQL(
                "SELECT {} FROM (SELECT %s::text AS siret, %s::text AS \"dateDernierTraitementEtablissement\") e"
            ).format(STILL_TO_APPLY),
            (siret, text),
        ).fetchone()
        # Another SIRET is still to apply, whatever its version.
        (other,) = conn.execute(
            psycopg.sql.SQL(
                "SELECT {} FROM (SELECT '30613890003092'::text AS siret, %s::text AS \"dateDernierTraitementEtablissement\") e"
            ).format(STILL_TO_APPLY),
            (text,),
        ).fetchone()
        conn.rollback()
    assert (still, other) == (pending, True)


def test_every_ville_falls_in_a_departement_partition(database_url):
    """The partition keys are exactly the function's values for real communes."""
    with psycopg.connect(database_url) as conn:
        values = {
            r[0] for r in conn.execute(
                "SELECT DISTINCT sirene_departement(code_insee) FROM location_ville"
            )
        }
    assert values and values <= set(STOCK_PARTITION_KEYS) - {"autres"}


def test_staging_counts_every_row_in_one_partition(database_url, tmp_path):
    path, ul = tmp_path / "StockEtablissement_utf8.zip", tmp_path / "StockUniteLegale_utf8.zip"
    write_sample_stock(path, 3000, unites_legales_path=ul, seed=4)
    with psycopg.connect(database_url) as conn:
        staged = stage_for_directory(conn, path, ul)
    assert staged.etablissements == 3000 == sum(staged.rows_by_partition.values())
    assert set(staged.rows_by_partition) <= set(STOCK_PARTITION_KEYS)
    assert {"75", "2A", "974"} <= set(staged.rows_by_partition)
    assert staged.unmatched_sirens == 0
    assert _directory(database_url) == (0, 0)  # staging writes nothing to the directory


def test_staging_deals_whole_rows_to_its_connections(database_url, tmp_path, monkeypatch):
    """Read in blocks far smaller than the file, its rows dealt out to two connections: every
    row is staged once and whole, a quoted value holding a newline, a comma and a quote
    included."""
    from foxreviews_pipeline.lib.sirene import stock_staging

    monkeypatch.setattr(stock_staging, "_COPY_BLOCK", 4096)
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 1500, unites_legales_path=ul, seed=11)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    at, column = 700, header.index("libelleVoieEtablissement")
    row = next(csv.reader([lines[at]]))
    row[column] = 'DE LA PAIX\n"BIS", ENTREE B'
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    lines[at] = buffer.getvalue()
    path.write_text("".join(lines), encoding="utf-8")
    with psycopg.connect(database_url) as conn:
        staged = stage_for_directory(conn, path, ul)
        assert staged.etablissements == 1500
        stored = conn.execute(
            'SELECT count(*), count(DISTINCT siret), max("libelleVoieEtablissement") FILTER (WHERE siret = %s) '
            "FROM sirene_stock.etablissement",
            (row[header.index("siret")],),
        ).fetchone()
    assert stored == (1500, 1500, 'DE LA PAIX\n"BIS", ENTREE B')


def test_a_row_the_csv_reader_rejects_is_named_by_its_line_and_keeps_the_staging(
    database_url, tmp_path, monkeypatch
):
    from foxreviews_pipeline.lib.sirene import stock_staging

    monkeypatch.setattr(stock_staging, "_COPY_BLOCK", 4096)
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 1200, unites_legales_path=ul, seed=12)
    with psycopg.connect(database_url) as conn:
        before = stage_for_directory(conn, path, ul)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1000] = lines[1000].rstrip("\n") + ",an extra field\n"  # the file's line 1001
    broken = tmp_path / "broken" / "StockEtablissement_utf8.csv"
    broken.parent.mkdir()
    broken.write_text("".join(lines), encoding="utf-8")
    with psycopg.connect(database_url) as conn:
        with pytest.raises(StockFileError, match=r"StockEtablissement_utf8.csv: rejected by .*line 1001\b"):
            stage_for_directory(conn, broken, ul)
        assert conn.execute("SELECT count(*) FROM sirene_stock.etablissement").fetchone() == (1200,)
        assert conn.execute("SELECT fingerprint FROM sirene_stock.staged").fetchone() == (before.fingerprint,)
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'sirene_stock' AND tablename LIKE '%%loading'"
        ).fetchone()
    assert leftovers == (0,)


@pytest.mark.slow
def test_partitions_load_what_the_file_holds_and_reload_writes_nothing(database_url, tmp_path):
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 2000, unites_legales_path=ul, seed=5)
    home = tmp_path / "home"
    assert stock_runs.stage(database_url, home, path, ul).success
    first = stock_runs.load_all(database_url, home)
    assert len(first) >= 10
    expected, rejected = stock_runs.expected(path, ul)
    with psycopg.connect(database_url) as conn:
        assert stock_runs.directory(conn) == expected
        partitions = dict(conn.execute(
            "SELECT last_partition, count(*) FROM enterprise_entreprise GROUP BY 1"
        ).fetchall())
    assert set(partitions) == {f"stock:{p}" for p in first if partitions.get(f"stock:{p}")}
    written = sum(stock_runs.materialization(r, "stock_entreprises")["inserted"] for r in first.values())
    read = sum(stock_runs.materialization(r, "stock_entreprises")["records"] for r in first.values())
    assert written == len(expected) and read == 2000
    assert sum(rejected.values()) + len(expected) == 2000
    for partition, result in first.items():
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 8 and all(c.passed for c in checks)
        # Partitioned like their assets: each check result names its département.
        assert {c.partition for c in checks} == {partition}
        assert stock_runs.materialization(result, "stock_entreprises")["dagster/row_count"] == partitions.get(
            f"stock:{partition}", 0
        )
    again = stock_runs.load_all(database_url, home)
    assert all(
        stock_runs.materialization(r, "stock_entreprises")["inserted"]
        + stock_runs.materialization(r, "stock_entreprises")["updated"] == 0
        for r in again.values()
    )


def test_the_bulk_load_asset_loads_every_partition_and_shows_them(database_url, tmp_path):
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 2000, unites_legales_path=ul, seed=5)
    home = tmp_path / "home"
    instance = dg.DagsterInstance.ephemeral()
    assert stock_runs.stage(database_url, home, path, ul, instance=instance).success
    result = dg.materialize(
        [stock_bulk_load], resources=stock_runs.resources(database_url, home), instance=instance
    )
    assert result.success
    expected, _ = stock_runs.expected(path, ul)
    with psycopg.connect(database_url) as conn:
        assert stock_runs.directory(conn) == expected
        partitions = {p for (p,) in conn.execute("SELECT DISTINCT last_partition FROM enterprise_entreprise")}
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "every_partition_published" and check.passed
    summary = stock_runs.materialization(result, "stock_bulk_load")
    assert summary["records"] == 2000 and summary["partitions"] >= 10
    with psycopg.connect(database_url) as conn:
        assert summary["table_rows"] == {
            "entreprises": conn.execute("SELECT count(*) FROM enterprise_entreprise").fetchone()[0],
            "pro_localisations": conn.execute("SELECT count(*) FROM enterprise_prolocalisation").fetchone()[0],
        }
    # The stock's partitioned assets show each département loaded, as a backfill would.
    shown = instance.get_materialized_partitions(dg.AssetKey("stock_entreprises"))
    assert {f"stock:{p}" for p in shown} == partitions
    # Run again, it finds nothing pending and leaves the tables as they are.
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT 'enterprise_entreprise'::regclass::oid, count(*) FROM enterprise_entreprise").fetchone()
    again = dg.materialize(
        [stock_bulk_load], resources=stock_runs.resources(database_url, home), instance=instance
    )
    assert stock_runs.materialization(again, "stock_bulk_load")["partitions"] == 0
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 'enterprise_entreprise'::regclass::oid, count(*) FROM enterprise_entreprise").fetchone() == before


@pytest.mark.slow
def test_restaging_the_same_files_leaves_nothing_to_apply(database_url, tmp_path):
    """A re-load of a stock already in the directory reads its rows once, at staging."""
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 1500, unites_legales_path=ul, seed=12)
    home = tmp_path / "home"
    assert stock_runs.stage(database_url, home, path, ul).success
    stock_runs.load_all(database_url, home)
    with psycopg.connect(database_url) as conn:
        before = stock_runs.directory(conn)
        # A day changes one establishment after the stock: the stock's version is older.
        (changed,) = conn.execute(
            "UPDATE enterprise_entreprise SET date_dernier_traitement = now() WHERE siret = "
            "(SELECT min(siret) FROM enterprise_entreprise) RETURNING siret"
        ).fetchone()
    restaged = stock_runs.stage(database_url, home, path, ul)
    metadata = {
        k: v.value for k, v in restaged.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    assert metadata["already_staged"] is True
    assert metadata["pending"] == 1 + sum(
        1 for r in stock_runs.expected(path, ul)[1].elements()
    )  # the changed row, and the rows the mapping rejects (never stored)
    again = stock_runs.load_all(database_url, home)
    written = sum(stock_runs.materialization(r, "stock_entreprises")["inserted"]
                  + stock_runs.materialization(r, "stock_entreprises")["updated"] for r in again.values())
    read = sum(stock_runs.materialization(r, "stock_entreprises")["records"] for r in again.values())
    unchanged = sum(stock_runs.materialization(r, "stock_entreprises")["unchanged"] for r in again.values())
    assert written == 0 and read == 1500 and unchanged >= len(before) - 1
    with psycopg.connect(database_url) as conn:
        after = stock_runs.directory(conn)
    assert {k: v for k, v in after.items() if k != changed} == {
        k: v for k, v in before.items() if k != changed
    }
    forced = stock_runs.stage(database_url, home, path, ul, force=True)
    assert forced.success


def test_without_a_stock_unite_legale_nothing_is_staged_or_written(database_url, tmp_path):
    path = tmp_path / "data" / "StockEtablissement_utf8.csv"
    path.parent.mkdir()
    write_sample_stock(path, 300, seed=6)
    result = stock_runs.stage(database_url, tmp_path / "home", path, None, raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node("sirene_stock").error)
    assert "no StockUniteLegale file" in message and path.name in message
    assert stock_runs.staged_partitions(database_url) == []
    assert _directory(database_url) == (0, 0)


def test_a_stock_unite_legale_of_another_extract_is_refused(database_url, tmp_path):
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 500, unites_legales_path=tmp_path / "mine.csv", seed=7)
    write_sample_stock(tmp_path / "other.csv", 500, unites_legales_path=ul, seed=8)
    home = tmp_path / "home"
    # A good pair first: a refused pair must leave it staged.
    assert stock_runs.stage(database_url, home, path, tmp_path / "mine.csv").success
    before = stock_runs.staged_partitions(database_url)
    result = stock_runs.stage(database_url, home, path, ul, raise_on_error=False)
    assert not result.success
    message = str(result.failure_data_for_node("sirene_stock").error)
    assert "does not match" in message and "same INSEE extract" in message
    # Named with a few of the sirens that have no legal unit, and how many they are.
    assert re.search(r"\b500 of 500 establishments .* \(e\.g\. siren \d{9}, \d{9}", message), message
    assert stock_runs.staged_partitions(database_url) == before
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT unite_legale_file FROM sirene_stock.staged").fetchone() == ("mine.csv",)
    assert _directory(database_url) == (0, 0)


def test_an_establishment_file_given_as_the_legal_units_is_named(database_url, tmp_path):
    path = tmp_path / "StockEtablissement_utf8.csv"
    write_sample_stock(path, 100, seed=9)
    with psycopg.connect(database_url) as conn, pytest.raises(StockFileError, match="is a StockEtablissement file"):
        stage_for_directory(conn, path, path)


def test_a_file_that_is_not_a_stock_is_named(database_url, tmp_path):
    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 100, unites_legales_path=ul, seed=9)
    bogus = tmp_path / "notes.csv"
    bogus.write_text("hello world; not a header\n1,2\n")
    with psycopg.connect(database_url) as conn:
        with pytest.raises(StockFileError, match="not a SIRENE stock file"):
            stage_for_directory(conn, bogus, ul)
        with pytest.raises(StockFileError, match="stock file not found"):
            stage_for_directory(conn, tmp_path / "missing.csv", ul)


def test_loading_before_staging_names_the_missing_step(database_url, tmp_path):
    result = stock_runs.load(database_url, tmp_path / "home", "75", raise_on_error=False)
    assert not result.success
    assert "materialize the sirene_stock asset first" in str(
        result.failure_data_for_node("directory_stock").error
    )


@pytest.mark.slow
def test_a_partition_read_in_small_batches_loads_what_the_file_holds(database_url, tmp_path):
    """Batches of 7 rows: the COPY stream is cut across Arrow's blocks, every batch is mapped,
    written and checked on its own, and together they leave what the file holds."""
    from math import ceil

    from foxreviews_pipeline.lib.directory.stock_load import publish_stock_partition

    path, ul = tmp_path / "StockEtablissement_utf8.csv", tmp_path / "StockUniteLegale_utf8.csv"
    write_sample_stock(path, 600, unites_legales_path=ul, seed=9)
    with psycopg.connect(database_url) as conn:
        staged = stage_for_directory(conn, path, ul)
    read = 0
    for partition, rows in staged.rows_by_partition.items():
        with psycopg.connect(database_url) as conn, conn.transaction():
            published = publish_stock_partition(conn, partition, chunk_rows=7)
        result = published.result
        assert result.batches == ceil(rows / 7) and result.records == rows
        assert all(o.passed for o in published.outcomes)
        read += result.records
    expected, rejected = stock_runs.expected(path, ul)
    with psycopg.connect(database_url) as conn:
        assert stock_runs.directory(conn) == expected
    assert read == 600 == len(expected) + sum(rejected.values())


def test_one_row_per_siret_is_the_latest_and_on_a_tie_the_later_row():
    """A row with no date is the oldest; the rows come back sorted by SIRET, whole."""
    import pyarrow as pa

    from foxreviews_pipeline.lib.directory.stock_load import latest_per_siret
    from foxreviews_pipeline.lib.sirene.mapping import ENTREPRISE_COLUMNS

    def row(siret, treated, nom):
        values = dict.fromkeys(ENTREPRISE_COLUMNS)
        values.update(siret=siret, date_dernier_traitement=treated, nom=nom)
        return tuple(values[c] for c in ENTREPRISE_COLUMNS)

    old, new = datetime(2024, 1, 1), datetime(2025, 6, 1)
    rows = [
        row("73282932000074", None, "D seul"),
        row("30613890003092", new, "B récent"), row("30613890003092", old, "B ancien"),
        row("44306184100047", None, "A sans date"), row("44306184100047", old, "A daté"),
        row("55203253400646", old, "C premier"), row("55203253400646", old, "C second"),
        row("55203253400646", None, "C sans date"),
    ]
    table = pa.Table.from_pylist([dict(zip(ENTREPRISE_COLUMNS, r, strict=True)) for r in rows])
    kept = [tuple(r.values()) for r in latest_per_siret(table).to_pylist()]
    assert kept == [rows[1], rows[4], rows[6], rows[0]]
    assert [r[ENTREPRISE_COLUMNS.index("nom")] for r in kept] == [
        "B récent", "A daté", "C second", "D seul"
    ]
