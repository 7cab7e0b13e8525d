import psycopg
import pytest

from foxreviews_pipeline.lib.reference.communes import load_aliases, load_communes
from foxreviews_pipeline.lib.reference.load import (
    load_naf_nomenclature,
    load_trade_taxonomy,
    load_villes,
)
from foxreviews_pipeline.lib.reference.naf import NAF_REV2, load_naf
from foxreviews_pipeline.lib.reference.naf2025 import (
    NAF_2025,
    load_correspondence,
    load_correspondence_table,
    load_naf2025,
)
from foxreviews_pipeline.lib.reference.taxonomy import load_taxonomy


def load_reference(url: str, *, villes: bool = True) -> None:
    with psycopg.connect(url) as conn:
        load_naf_nomenclature(conn, load_naf(), NAF_REV2)
        load_naf_nomenclature(conn, load_naf2025(), NAF_2025)
        load_correspondence_table(conn, load_correspondence())
        load_trade_taxonomy(conn, load_taxonomy())
        if villes:
            load_villes(conn, load_communes(), load_aliases())


# `reference_db` (a database with all of `load_reference`): the root conftest.py, cloned
# from a session template.


@pytest.fixture
def dagster_storage_db(pg_server_url: str, database_url: str):
    """Dagster's own database beside the test database (created by the instance), dropped after."""
    from foxreviews_pipeline.lib.db.server import database_name
    from foxreviews_pipeline_tests.conftest import drop_database

    name = database_name(database_url) + "_dagster"
    yield name
    drop_database(pg_server_url, name)
