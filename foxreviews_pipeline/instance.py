"""Dagster instance storage resolved from the platform's own settings.

`dagster.yaml` names these classes instead of a fixed `postgres_url`, so that Dagster's
runs, events and schedules live in the same PostgreSQL server as the data (the embedded one
by default, or the server of `FOXREVIEWS_DATABASE_URL`), in a separate database, with
nothing for an operator to set.
"""

from __future__ import annotations

from dagster import _check as check  # noqa: F401  (keeps Dagster's import order for plugins)
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage

from foxreviews_pipeline.lib.db.server import dagster_storage_url
from foxreviews_pipeline.lib.settings import load_dotenv_file, load_settings


def _settings():
    load_dotenv_file()
    return load_settings()


class FoxReviewsStorage(DagsterPostgresStorage):
    """dagster-postgres storage in the `<data database>_dagster` database."""

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value):
        return cls(postgres_url=dagster_storage_url(_settings()), inst_data=inst_data)


class FoxReviewsArtifactStorage(LocalArtifactStorage):
    """Run artifacts under `$FOXREVIEWS_HOME/dagster` rather than a throw-away folder."""

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(str(_settings().home / "dagster" / "storage"), inst_data=inst_data)


class FoxReviewsComputeLogManager(LocalComputeLogManager):
    """Step logs (stdout/stderr shown in the UI) under `$FOXREVIEWS_HOME/dagster/logs`."""

    @classmethod
    def config_type(cls):
        return {}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(str(_settings().home / "dagster" / "logs"), inst_data=inst_data)
