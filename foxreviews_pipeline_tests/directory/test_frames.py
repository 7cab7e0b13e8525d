"""The tables as Arrow-backed pandas DataFrames (`defs/tables.py`, `lib/db/frames.py`) on a
real PostgreSQL: the reference assets and one SIRENE day are materialized once for the module,
then loaded through `Definitions.load_asset_value`, and the coverage report is built on them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from foxreviews_pipeline.defs import tables
from foxreviews_pipeline.defs.directory import definitions as directory
from foxreviews_pipeline.defs.directory.assets import directory_day
from foxreviews_pipeline.defs.directory.ville_stats import ville_stats
from foxreviews_pipeline.defs.reference import definitions as reference
from foxreviews_pipeline.defs.reference.definitions import REFERENCE_ASSETS
from foxreviews_pipeline.defs.resources import PostgresResource, build_resources
from foxreviews_pipeline.defs.sirene import definitions as sirene
from foxreviews_pipeline.defs.sirene.assets import etablissements_raw
from foxreviews_pipeline.defs.sirene.resources import SireneSource
from foxreviews_pipeline.lib.db.catalog import Column
from foxreviews_pipeline.lib.db.frames import arrow_type, read_table
from foxreviews_pipeline.lib.settings import load_settings
from foxreviews_pipeline_tests.conftest import TEST_DB_PREFIX, _create_database, drop_database

DAY = "2026-11-20"
SIZE = 1_000
VILLES = 34_969


# Loading a value reads no run history: an ephemeral instance, whatever DAGSTER_HOME says.
INSTANCE = dg.DagsterInstance.ephemeral()


@dataclass
class Loaded:
    url: str
    defs: dg.Definitions
    resources: dict

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, query: str, params: tuple = ()) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(query, params)


@pytest.fixture(scope="module")
def loaded(pg_server_url, template_database, tmp_path_factory) -> Iterator[Loaded]:
    """A database with the reference assets, one day and ville_stats materialized, and the
    Definitions a notebook would load from: the assets, the resources and the I/O manager."""
    name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server_url, name, template_database)
    home = tmp_path_factory.mktemp("frames")
    env = {
        "FOXREVIEWS_DATABASE_URL": url,
        "FOXREVIEWS_HOME": str(home / "home"),
        "FOXREVIEWS_SIRENE_SOURCE": "sample",
        "FOXREVIEWS_UPLOAD_DIR": str(home / "uploads"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for variable in list(os.environ):
            if variable.startswith("FOXREVIEWS_") and variable not in env and variable not in (
                "FOXREVIEWS_TEST_DATABASE_URL", "FOXREVIEWS_PARTITIONS_START"
            ):
                mp.delenv(variable)
        for variable, value in env.items():
            mp.setenv(variable, value)
        settings = load_settings()
        resources = build_resources(settings)
        postgres = resources["postgres"]
        assert isinstance(postgres, PostgresResource)
        run_resources = {**resources, "sirene": SireneSource(source="sample", sample_size=SIZE)}
        assert dg.materialize(REFERENCE_ASSETS, resources=run_resources).success
        assert dg.materialize(
            [etablissements_raw, directory_day], partition_key=DAY, resources=run_resources
        ).success
        assert dg.materialize([ville_stats], resources=run_resources).success
        defs = dg.Definitions.merge(
            reference.build_definitions(settings),
            sirene.build_definitions(settings),
            directory.build_definitions(settings),
            tables.build_definitions(settings, postgres),
            dg.Definitions(resources=resources),
        )
        try:
            yield Loaded(url, defs, resources)
        finally:
            drop_database(pg_server_url, name)


def _is_arrow(frame: pd.DataFrame) -> bool:
    return all(isinstance(dtype, pd.ArrowDtype) for dtype in frame.dtypes)


def test_postgres_types_map_to_arrow_types():
    assert arrow_type("text") == pa.string()
    assert arrow_type("character varying(20)") == pa.string()
    assert arrow_type("bigint") == pa.int64()
    assert arrow_type("integer") == pa.int32()
    assert arrow_type("smallint") == pa.int16()
    assert arrow_type("boolean") == pa.bool_()
    assert arrow_type("double precision") == pa.float64()
    assert arrow_type("real") == pa.float32()
    assert arrow_type("numeric(2,1)") == pa.decimal128(2, 1)
    assert arrow_type("numeric") == pa.string()
    assert arrow_type("date") == pa.date32()
    assert arrow_type("timestamp with time zone") == pa.timestamp("us", tz="UTC")
    assert arrow_type("timestamp(3) with time zone") == pa.timestamp("us", tz="UTC")
    assert arrow_type("timestamp without time zone") == pa.timestamp("us")
    assert arrow_type("jsonb") == pa.string()
    assert arrow_type("text[]") == pa.string()


def test_ville_stats_loads_as_one_row_of_arrow_columns(loaded):
    frame = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="ville_stats")
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 1
    assert _is_arrow(frame)
    assert frame["total_villes"].dtype == pd.ArrowDtype(pa.int32())
    assert frame["population_totale"].dtype == pd.ArrowDtype(pa.int64())
    assert frame["refreshed_at"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))
    [(villes, active)] = loaded.sql(
        "SELECT count(*), (SELECT count(*) FROM enterprise_entreprise WHERE is_active) "
        "FROM location_ville WHERE is_active"
    )
    assert frame.loc[0, "total_villes"] == villes
    assert frame.loc[0, "total_entreprises_actives"] == active > 0


def test_the_reference_tables_load_whole(loaded):
    villes = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="villes")
    assert len(villes) == VILLES
    assert _is_arrow(villes)
    assert villes["code_insee"].dtype == pd.ArrowDtype(pa.string())
    assert villes["lat"].dtype == pd.ArrowDtype(pa.float64())
    assert villes["is_active"].dtype == pd.ArrowDtype(pa.bool_())
    assert villes["codes_postaux"].dtype == pd.ArrowDtype(pa.string())  # jsonb, as its text
    assert villes["code_insee"].is_unique
    for asset, table in (("naf_nomenclature", "ref_naf_nomenclature"), ("trade_taxonomy", "ref_naf_mapping")):
        frame = loaded.defs.load_asset_value(instance=INSTANCE, asset_key=asset)
        [(count,)] = loaded.sql(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert len(frame) == count > 700, asset
        assert _is_arrow(frame), asset
    naf = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="naf_nomenclature")
    assert set(naf["nomenclature"]) == {"NAFRev2", "NAF2025"}


def test_a_day_of_entreprises_is_the_rows_that_day_last_wrote(loaded):
    frame = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="entreprises", partition_key=DAY)
    expected = {s for (s,) in loaded.sql(
        "SELECT siret FROM enterprise_entreprise WHERE last_partition = %s", (DAY,)
    )}
    assert len(frame) == len(expected) > SIZE * 0.8
    assert set(frame["siret"]) == expected
    assert _is_arrow(frame)
    assert frame["siret"].dtype == pd.ArrowDtype(pa.string())
    assert str(frame["siret"].dtype) == "string[pyarrow]"
    assert frame["id"].dtype == pd.ArrowDtype(pa.int64())
    assert frame["created_at"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))
    assert frame["date_dernier_traitement"].dtype == pd.ArrowDtype(pa.timestamp("us"))
    assert frame["date_creation"].dtype == pd.ArrowDtype(pa.date32())
    assert frame["is_active"].dtype == pd.ArrowDtype(pa.bool_())
    assert frame["est_siege"].dtype == pd.ArrowDtype(pa.bool_())
    assert frame["google_rating"].dtype == pd.ArrowDtype(pa.decimal128(2, 1))
    assert frame["mapping_version"].dtype == pd.ArrowDtype(pa.int16())
    # Values as stored: a timestamp is the same instant, a SIRET keeps its leading zeros.
    [(siret, created_at)] = loaded.sql(
        "SELECT siret, created_at FROM enterprise_entreprise WHERE last_partition = %s "
        "ORDER BY id LIMIT 1", (DAY,)
    )
    first = frame.iloc[0]
    assert (first["siret"], first["created_at"].to_pydatetime()) == (siret, created_at)
    # A day nothing was published for: no rows, the same typed columns.
    empty = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="entreprises", partition_key="2026-11-21")
    assert empty.empty and list(empty.columns) == list(frame.columns)
    assert (empty.dtypes == frame.dtypes).all()


def test_pro_localisations_are_bounded_to_the_partition(loaded):
    moved = [s for (s,) in loaded.sql(
        "SELECT e.siret FROM enterprise_entreprise e WHERE e.last_partition = %s AND EXISTS "
        "(SELECT 1 FROM enterprise_prolocalisation p WHERE p.entreprise_id = e.id) "
        "ORDER BY e.siret LIMIT 25", (DAY,)
    )]
    assert len(moved) == 25
    # Those establishments now belong to the stock's partition of Paris: the day no longer
    # loads them nor their ProLocalisations; the stock partition loads exactly them.
    loaded.execute(
        "UPDATE enterprise_entreprise SET last_partition = 'stock:75' WHERE siret = ANY(%s)", (moved,)
    )
    try:
        day = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="pro_localisations", partition_key=DAY)
        stock = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="stock_pro_localisations", partition_key="75")
        stock_entreprises = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="stock_entreprises", partition_key="75")
        ids = {
            partition: {i for (i,) in loaded.sql(
                "SELECT p.id FROM enterprise_prolocalisation p JOIN enterprise_entreprise e "
                "ON e.id = p.entreprise_id WHERE e.last_partition = %s", (partition,)
            )}
            for partition in (DAY, "stock:75")
        }
        [(total,)] = loaded.sql("SELECT count(*) FROM enterprise_prolocalisation")
    finally:
        loaded.execute(
            "UPDATE enterprise_entreprise SET last_partition = %s WHERE siret = ANY(%s)", (DAY, moved)
        )
    assert set(day["id"]) == ids[DAY] and len(day) == len(ids[DAY])
    assert set(stock["id"]) == ids["stock:75"] and len(stock) >= 25
    assert len(day) + len(stock) == total
    assert sorted(stock_entreprises["siret"]) == moved
    assert set(stock["entreprise_id"]) == set(stock_entreprises["id"])
    assert _is_arrow(day)
    assert day["deactivated_at"].dtype == pd.ArrowDtype(pa.timestamp("us", tz="UTC"))


def test_an_empty_string_stays_one_and_null_is_na(loaded):
    [(first, second)] = loaded.sql(
        "SELECT min(siret), max(siret) FROM enterprise_entreprise WHERE last_partition = %s", (DAY,)
    )
    loaded.execute(
        "UPDATE enterprise_entreprise SET nom_commercial = CASE WHEN siret = %s THEN '' ELSE NULL END, "
        "telephone = CASE WHEN siret = %s THEN 'NA' ELSE 'a \"quoted\", multi\nline value' END "
        "WHERE siret IN (%s, %s)", (first, first, first, second)
    )
    frame = loaded.defs.load_asset_value(instance=INSTANCE, asset_key="entreprises", partition_key=DAY).set_index("siret")
    assert frame.loc[first, "nom_commercial"] == ""
    assert frame.loc[second, "nom_commercial"] is pd.NA
    assert frame.loc[first, "telephone"] == "NA"  # a value, not a null marker
    assert frame.loc[second, "telephone"] == 'a "quoted", multi\nline value'


def test_read_table_reads_any_query_with_its_parameters(loaded):
    cols = [Column("code", "text", False, None), Column("n", "bigint", False, None),
            Column("at", "timestamp with time zone", True, None)]
    query = sql.SQL(
        "SELECT departement AS code, count(*) AS n, max(updated_at) AS at FROM location_ville "
        "WHERE departement = ANY(%s) GROUP BY 1 ORDER BY 1"
    )
    with psycopg.connect(loaded.url) as conn:
        # Neither the session's time zone nor its date style changes what is read.
        conn.execute("SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'SQL, DMY'")
        table = read_table(conn, query, (["2A", "75", "971"],), cols)
    [(at,)] = loaded.sql("SELECT max(updated_at) FROM location_ville WHERE departement = '75'")
    assert table.schema == pa.schema([
        pa.field("code", pa.string(), nullable=False), pa.field("n", pa.int64(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ])
    assert table.column("code").to_pylist() == ["2A", "75", "971"]
    assert table.column("n").to_pylist()[1] == 1  # Paris is one commune
    assert table.column("at").to_pylist()[1] == at


def test_an_asset_without_a_table_is_a_clear_error(loaded):
    with pytest.raises(Exception, match=r"etablissements_raw has no table the I/O manager can load"):
        loaded.defs.load_asset_value(instance=INSTANCE, asset_key="etablissements_raw", partition_key=DAY)
    with pytest.raises(Exception, match=r"entreprises is partitioned: load one partition"):
        loaded.defs.load_asset_value(instance=INSTANCE, asset_key="entreprises")


def test_the_io_manager_stores_nothing_and_refuses_a_value(loaded):
    @dg.asset
    def stray_frame() -> pd.DataFrame:
        return pd.DataFrame({"a": [1]})

    result = dg.materialize(
        [stray_frame], resources={"io_manager": loaded.defs.resources["io_manager"],
                                  "postgres": loaded.resources["postgres"]},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "Asset stray_frame returned a DataFrame" in message


def test_the_coverage_report_adds_up(loaded):
    # The weekly job, as its schedule runs it: villes and trade_taxonomy come from the I/O manager.
    result = loaded.defs.resolve_job_def("coverage_report").execute_in_process()
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
    mapped = """
        FROM enterprise_entreprise e
        JOIN ref_naf_mapping m
          ON m.nomenclature = CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
                                   THEN 'NAFRev2' ELSE e.naf_nomenclature END
         AND m.naf_code = CASE WHEN e.naf_rev2_code IS NOT NULL AND e.naf_nomenclature = 'NAF2025'
                               THEN e.naf_rev2_code ELSE e.naf_code END
        WHERE e.is_active AND m.sous_categorie_id IS NOT NULL
    """
    [(establishments, unmatched)] = loaded.sql(
        f"SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM enterprise_prolocalisation p "
        f"WHERE p.entreprise_id = e.id AND p.is_active)) {mapped}"
    )
    [(prolocalisations,)] = loaded.sql("SELECT count(*) FROM enterprise_prolocalisation WHERE is_active")
    assert metadata["establishments"] == establishments > SIZE * 0.3
    assert metadata["unmatched"] == unmatched
    assert metadata["prolocalisations"] == prolocalisations > 0
    assert 0 < metadata["coverage"] <= 1
    assert metadata["departements"] > 10 and metadata["trades"] > 10
    top = metadata["top_unmatched"]
    assert 0 < len(top.records) <= 20
    unmatched_top = [r.data["unmatched"] for r in top.records]
    assert unmatched_top == sorted(unmatched_top, reverse=True)
    chart = metadata["chart"]
    assert "█" in chart and chart.count("\n") > 5
    assert f"{establishments - unmatched:,} with a page, {unmatched:,} without" in chart


def test_the_report_runs_weekly_and_the_location_loads(loaded):
    dg.Definitions.validate_loadable(loaded.defs)
    repository = loaded.defs.get_repository_def()
    schedule = repository.get_schedule_def("coverage_report_weekly")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * 1", "Europe/Paris")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.owners == ["team:data"]
    job = repository.get_job("coverage_report")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey("coverage_report")}
    spec = {s.key: s for s in loaded.defs.resolve_all_asset_specs()}[dg.AssetKey("coverage_report")]
    assert (spec.group_name, set(spec.kinds), list(spec.owners)) == ("reports", {"pandas"}, ["team:data"])
