"""Typed resources for every outside system: PostgreSQL, the landing zone, the upload folder.

The settings are read and validated in `foxreviews_pipeline.lib.settings` (the one place
that reads the environment). A value the environment states as is goes in by variable name
(`dg.EnvVar`): Dagster resolves it and the UI shows where it comes from; the secrets always
go in by name, so that they show in the UI by name only. Defaults and values the settings
complete (a relative folder made absolute) go in as values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, overload

import dagster as dg
import psycopg
from pydantic import Field, PrivateAttr

from foxreviews_pipeline.lib.db.database import prepare, transaction
from foxreviews_pipeline.lib.db.server import resolve_data_url
from foxreviews_pipeline.lib.settings import Settings


class PostgresResource(dg.ConfigurableResource):
    """The data database. Unset `database_url` means the embedded server."""

    # repr=False: once Dagster has resolved the EnvVar this is the URL with its password.
    database_url: str | None = Field(default=None, repr=False)
    home: str

    _url: str | None = PrivateAttr(default=None)

    @property
    def url(self) -> str:
        """The migrated data database (embedded server started on first use)."""
        if self._url is None:
            url = resolve_data_url(self.database_url or None, Path(self.home))
            prepare(url)
            self._url = url
        return self._url

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with transaction(self.url) as conn:
            yield conn


class LandingZone(dg.ConfigurableResource):
    """Where raw extracts are landed, one file per partition, written atomically."""

    root: str

    def path(self, dataset: str) -> Path:
        path = Path(self.root) / dataset
        path.mkdir(parents=True, exist_ok=True)
        return path


class UploadFolder(dg.ConfigurableResource):
    """The folder staff drop files into: incoming/ → processing/ → archive/ or rejected/."""

    root: str

    def folder(self, name: str) -> Path:
        path = Path(self.root) / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@overload
def configured(settings: Settings, variable: str, value: str) -> str: ...


@overload
def configured(settings: Settings, variable: str, value: int) -> int: ...


def configured(settings: Settings, variable: str, value: Any) -> Any:
    """The setting `value` of `variable` as a resource field takes it: `dg.EnvVar(variable)`
    when the environment states exactly this value (`Settings.verbatim`), else the value."""
    if variable not in settings.verbatim:
        return value
    return dg.EnvVar.int(variable) if isinstance(value, int) else dg.EnvVar(variable)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources every domain shares, from the validated settings."""
    return {
        # The URL goes in by variable name so that a password never shows in the UI.
        "postgres": PostgresResource(
            database_url=dg.EnvVar("FOXREVIEWS_DATABASE_URL") if settings.database_url else None,
            home=configured(settings, "FOXREVIEWS_HOME", str(settings.home)),
        ),
        "landing_zone": LandingZone(root=str(settings.home / "landing")),
        "upload_folder": UploadFolder(
            root=configured(settings, "FOXREVIEWS_UPLOAD_DIR", str(settings.upload_dir))
        ),
    }
