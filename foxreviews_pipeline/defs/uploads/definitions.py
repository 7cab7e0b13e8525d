"""Uploads domain: the `uploaded_files` asset (one dynamic partition per file) and its sensor."""

import dagster as dg

from foxreviews_pipeline.defs.uploads.assets import uploaded_files
from foxreviews_pipeline.defs.uploads.sensors import (
    UploadIntake,
    upload_import_job,
    upload_sensor,
)
from foxreviews_pipeline.lib.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    # The shared resources (postgres, upload_folder) come from defs/resources.py; the
    # sensor's own one here (FOXREVIEWS_UPLOAD_QUIET_SECONDS: a value, not a `dg.EnvVar`, which
    # Dagster resolves to text or a whole number only, and this one may have a fraction).
    return dg.Definitions(
        assets=[uploaded_files],
        jobs=[upload_import_job],
        sensors=[upload_sensor],
        resources={"upload_intake": UploadIntake(quiet_seconds=settings.upload_quiet_seconds)},
    )
