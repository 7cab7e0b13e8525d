"""The upload sensor: notices quiet files in `incoming/` and starts one run per content."""

import json
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource, UploadFolder
from foxreviews_pipeline.defs.uploads.assets import IMPORT_CHECK, uploaded_files
from foxreviews_pipeline.defs.uploads.partitions import upload_partitions
from foxreviews_pipeline.lib.uploads import (
    DEFAULT_QUIET_SECONDS,
    UploadPaths,
    close_lost_uploads,
    content_hash,
    pending_in_processing,
    register,
    scan_incoming,
)
from foxreviews_pipeline.lib.uploads.intake import QUEUED, Registration

# The sensor's clock (a module attribute so that tests can move time on).
clock = time.time


class UploadIntake(dg.ConfigurableResource):
    """How the upload sensor takes files from incoming/ (docs/uploads.md, "The folder")."""

    quiet_seconds: float = Field(
        default=DEFAULT_QUIET_SECONDS,
        ge=0,
        description="A file is taken once the sensor has seen it unchanged (size, modification "
        "time, inode, first and last 64 KB) for this many seconds, across ticks. 0 takes a "
        "file at first sight.",
    )


def rejection_events(
    r: Registration,
) -> list[dg.AssetObservation | dg.AssetCheckEvaluation]:
    """What the UI shows of a file refused before any run (a duplicate, a link, too big): an
    observation of its partition saying why, and its `file_imported` check failed (red)."""
    metadata = {
        "status": dg.MetadataValue.text("ERROR"),
        "file_name": dg.MetadataValue.text(r.file_name),
        "error_code": dg.MetadataValue.text(r.code or ""),
        "reason": dg.MetadataValue.text(r.reason or ""),
        "import_log_id": dg.MetadataValue.int(r.log_id),
        "stored_path": dg.MetadataValue.text(r.stored_path),
    }
    key = uploaded_files.key
    return [
        dg.AssetObservation(asset_key=key, partition=r.partition_key, metadata=metadata),
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=IMPORT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            partition=r.partition_key,
            metadata=metadata,
        ),
    ]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# The sensor's runs land in this named job, so its page lists every import.
upload_import_job = dg.define_asset_job(
    name="upload_import",
    selection=dg.AssetSelection.assets(uploaded_files),
    description="Import one file dropped into the upload folder (one partition per file content).",
    owners=OWNERS,
)


@dg.sensor(
    name="upload_sensor",
    job=upload_import_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    owners=OWNERS,
    description="Every 15 s: take the files of the upload folder's incoming/ that have stopped "
    "changing and start one `upload_import` run per file content (running by default).",
)
def upload_sensor(
    context: dg.SensorEvaluationContext,
    postgres: PostgresResource,
    upload_folder: UploadFolder,
    upload_intake: UploadIntake,
) -> dg.SensorResult:
    """Watches `incoming/` of the upload folder. A file is taken once this sensor has seen it
    unchanged for `upload_intake.quiet_seconds` (60 s by default; the first time each
    signature was seen is kept in the cursor): it moves to `processing/`, is hashed there,
    gets an import-log row (PENDING), becomes a partition of `uploaded_files`, and one run is
    requested with its content hash as run key. The same content dropped again goes to
    `rejected/` as a duplicate. Files waiting in `processing/` (e.g. after a failed run) are
    requested again; the run key makes that harmless. A file refused here (duplicate, link,
    too big) still becomes a partition, observed with its reason and its `file_imported`
    check failed, so that it shows red in the UI without reading tick logs. Log rows left
    unfinished by a file that was removed are closed ERROR. An upload folder that is not a
    folder (a file in its place) skips the tick with a reason naming it."""
    state = json.loads(context.cursor) if context.cursor else {}
    paths = UploadPaths(Path(upload_folder.root))
    problem = paths.unusable()
    if problem:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"{problem}: no file is taken until the upload folder is usable again"
            ),
            cursor=context.cursor,
        )
    closed = close_lost_uploads(postgres.url, paths)
    previous = state.get("files")
    scan = scan_incoming(
        paths, previous if isinstance(previous, dict) else {}, clock(), upload_intake.quiet_seconds
    )

    registrations: list[Registration] = []
    slipped: list[str] = []
    for name in scan.stable:
        registration = register(postgres.url, paths, name, scan.taken_at.get(name))
        if registration is None:
            slipped.append(name)
        else:
            registrations.append(registration)
    queued = [r for r in registrations if r.outcome == QUEUED]
    rejected = [r for r in registrations if r.outcome != QUEUED]
    for r in rejected:
        context.log.warning(f"{r.file_name} → {r.stored_path}: {r.reason}")

    waiting_in_processing = pending_in_processing(paths)
    requested: dict[str, str] = {
        key: sha for key, sha in state.get("requested", {}).items() if key in waiting_in_processing
    }
    run_requests = []
    new_keys: list[str] = []
    for r in queued:
        assert r.partition_key is not None and r.content_sha256 is not None  # set when queued
        requested[r.partition_key] = r.content_sha256
        new_keys.append(r.partition_key)
    # A file in processing/ that no tick of this cursor has requested: its tick died after
    # moving it, or the cursor was reset. Asking again is safe: the run key is the content's.
    for key in waiting_in_processing:
        if key not in requested:
            sha = content_hash(paths, key)
            if sha is None:
                continue  # imported and filed away since the listing
            requested[key] = sha
            new_keys.append(key)
    for key in new_keys:
        run_requests.append(
            dg.RunRequest(
                run_key=requested[key], partition_key=key, tags={"foxreviews/upload": key}
            )
        )

    cursor = json.dumps({"files": scan.watched, "requested": requested}, sort_keys=True)
    shown_rejected = [r for r in rejected if r.partition_key]
    asset_events = [event for r in shown_rejected for event in rejection_events(r)]
    partition_keys = new_keys + [r.partition_key for r in shown_rejected if r.partition_key]
    partitions = [upload_partitions.build_add_request(partition_keys)] if partition_keys else []
    if closed:
        context.log.warning(
            f"import log row(s) {', '.join(f'#{i}' for i in closed)} closed as ERROR: "
            "their file was removed before it was imported"
        )
    if run_requests:
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=partitions,
            asset_events=asset_events,
            cursor=cursor,
        )
    reasons = []
    if scan.waiting:
        reasons.append(
            f"{len(scan.waiting)} file(s) waiting until unchanged for "
            f"{upload_intake.quiet_seconds:g} s: {_listing(scan.waiting)}"
        )
    if slipped:
        reasons.append(
            f"{len(slipped)} file(s) changed or taken by another tick while being registered, "
            f"looked at again next tick: {_listing(slipped)}"
        )
    if rejected:
        reasons.append(
            f"{len(rejected)} file(s) rejected: "
            + _listing([f"{r.file_name} ({r.reason})" for r in rejected])
        )
    if closed:
        reasons.append(
            f"{len(closed)} import log row(s) closed as ERROR, their file removed: "
            + _listing([f"#{i}" for i in closed])
        )
    if not reasons:
        reasons.append("no new file in incoming/")
        if scan.ignored:
            reasons[-1] += f" ({len(scan.ignored)} hidden, temporary or folder entries ignored)"
    return dg.SensorResult(
        skip_reason=dg.SkipReason("; ".join(reasons)),
        dynamic_partitions_requests=partitions,
        asset_events=asset_events,
        cursor=cursor,
    )
