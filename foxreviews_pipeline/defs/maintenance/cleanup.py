"""The weekly cleanup job and its schedule (docs/architecture.md)."""

from datetime import datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import LandingZone, PostgresResource, UploadFolder
from foxreviews_pipeline.lib.constants import PARIS, PARIS_TIMEZONE
from foxreviews_pipeline.lib.maintenance.cleanup import (
    CHANGE_RETENTION_DAYS,
    IMPORT_LOG_RETENTION_DAYS,
    UPLOAD_RETENTION_DAYS,
    RetentionPolicy,
    run_cleanup,
)
from foxreviews_pipeline.lib.settings import DEFAULT_RAW_RETENTION_DAYS


class Retention(dg.ConfigurableResource):
    """How long the platform keeps what it no longer needs, in days."""

    import_log_days: int = IMPORT_LOG_RETENTION_DAYS
    upload_days: int = UPLOAD_RETENTION_DAYS
    # FOXREVIEWS_RAW_RETENTION_DAYS
    raw_days: int = DEFAULT_RAW_RETENTION_DAYS
    # FOXREVIEWS_CHANGE_RETENTION_DAYS
    change_days: int = CHANGE_RETENTION_DAYS

    def policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            import_log_days=self.import_log_days,
            upload_days=self.upload_days,
            raw_days=self.raw_days,
            change_days=self.change_days,
        )


class CleanupConfig(dg.Config):
    # True by default: launched from the UI with its defaults, the job only counts. Deleting
    # takes an explicit `dry_run: false`, which the weekly schedule passes.
    dry_run: bool = Field(
        default=True,
        description="Plan and count every deletion without deleting anything (the default); "
        "set to false to delete.",
    )


def dry_run_name(name: str) -> str:
    """What a count is called in a dry run, which deletes nothing: `raw_partitions_deleted`
    becomes `would_delete_raw_partitions`, `bytes_freed` `would_free_bytes`."""
    for done, would in (("_deleted", "would_delete_"), ("_marked_purged", "would_mark_purged_")):
        if name.endswith(done):
            return would + name.removesuffix(done)
    return {"bytes_freed": "would_free_bytes"}.get(name, name)


@dg.op(out=dg.Out(dg.Nothing))
def cleanup_files_and_logs(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    postgres: PostgresResource,
    landing_zone: LandingZone,
    upload_folder: UploadFolder,
    retention: Retention,
) -> None:
    """Delete import-log rows, archived/rejected uploads and landed raw partitions past their
    retention; the counts are this step's output metadata."""
    policy = retention.policy()
    with postgres.connection() as conn:
        result = run_cleanup(
            conn,
            upload_root=Path(upload_folder.root),
            landing_root=Path(landing_zone.root),
            policy=policy,
            dry_run=config.dry_run,
            log=context.log.warning,
        )
    verb = "would delete" if config.dry_run else "deleted"
    context.log.info(f"cleanup {verb}: {result.counts()}")
    metadata: dict[str, dg.MetadataValue] = {
        dry_run_name(name) if config.dry_run else name: dg.MetadataValue.int(value)
        for name, value in result.counts().items()
    }
    metadata["dry_run"] = dg.MetadataValue.bool(config.dry_run)
    metadata["retention_days"] = dg.MetadataValue.json(
        {
            "import_log": policy.import_log_days,
            "uploads": policy.upload_days,
            "raw_partitions": policy.raw_days,
            "changes": policy.change_days,
        }
    )
    if result.refused:
        metadata["refused"] = dg.MetadataValue.json(result.refused[:50])
    if result.errors:
        metadata["errors_sample"] = dg.MetadataValue.json(result.errors[:50])
        # The rest was cleaned and committed; failing the run makes the leftovers noticed.
        raise dg.Failure(
            description=f"{len(result.errors)} file(s) could not be deleted", metadata=metadata
        )
    context.add_output_metadata(metadata)


@dg.job(
    name="cleanup",
    description="Delete import-log rows (> 90 days), archived and rejected uploads (> 30 days), "
    "landed raw partitions past FOXREVIEWS_RAW_RETENTION_DAYS and changes of the change feed "
    "past FOXREVIEWS_CHANGE_RETENTION_DAYS. A dry run unless launched "
    "with `dry_run: false` (the weekly schedule does).",
    owners=OWNERS,
)
def cleanup_job() -> None:
    cleanup_files_and_logs()


@dg.schedule(
    name="cleanup_weekly",
    job=cleanup_job,
    cron_schedule="0 3 * * 0",
    execution_timezone=PARIS_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    owners=OWNERS,
    description="Sunday 03:00 Europe/Paris: the weekly cleanup (running by default: "
    "without it the upload folder, landing zone and import log grow without bound).",
)
def cleanup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """The weekly cleanup, Sunday 03:00 Paris time, a quiet hour after the 02:00 refresh.

    Created RUNNING: the system this replaces had a cleanup task scheduled nowhere, so its
    folders only grew. The retentions are the documented ones (uploads 30 days, import log
    90 days, raw partitions FOXREVIEWS_RAW_RETENTION_DAYS), nothing outside the project's
    folders is ever touched, and a dry run is one launchpad click away.
    """
    tick = _tick(context)
    return dg.RunRequest(
        run_key=f"cleanup:{tick.date().isoformat()}",
        run_config=dg.RunConfig(ops={"cleanup_files_and_logs": CleanupConfig(dry_run=False)}),
        tags={"foxreviews/trigger": "weekly"},
    )


def _tick(context: dg.ScheduleEvaluationContext) -> datetime:
    when = context.scheduled_execution_time
    return when.astimezone(PARIS)
