"""Typed resources for every outside system: PostgreSQL, the landing zone, the upload folder.

Values come from `foxreviews_pipeline.lib.settings` (the one place that reads the
environment) or from `dg.EnvVar`, so that secrets show in the UI by name only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources every domain shares, from the validated settings."""
    return {
        # The URL goes in by variable name so that a password never shows in the UI.
        "postgres": PostgresResource(
            database_url=dg.EnvVar("FOXREVIEWS_DATABASE_URL") if settings.database_url else None,
            home=str(settings.home),
        ),
        "landing_zone": LandingZone(root=str(settings.home / "landing")),
        "upload_folder": UploadFolder(root=str(settings.upload_dir)),
    }
