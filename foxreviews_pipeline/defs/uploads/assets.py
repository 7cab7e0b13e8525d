"""Imports of the files staff drop into the upload folder."""

from pathlib import Path

import dagster as dg

from foxreviews_pipeline.defs.common import OWNERS
from foxreviews_pipeline.defs.resources import PostgresResource, UploadFolder
from foxreviews_pipeline.defs.uploads.partitions import upload_partitions
from foxreviews_pipeline.lib.asset_keys import UPLOADED_FILES
from foxreviews_pipeline.lib.uploads import (
    ERROR,
    SUCCESS,
    ImportOutcome,
    UploadBusy,
    UploadPaths,
    import_upload,
)

PREVIEW_ERRORS = 20

# The two questions an operator asks of an upload, as checks on its partition: red when the
# file was not imported at all (ERROR: refused, every row bad, or a duplicate), a warning
# when some rows were left out (PARTIAL). docs/uploads.md, "In the Dagster UI".
IMPORT_CHECK = "file_imported"
ROWS_CHECK = "every_row_imported"
UPLOAD_CHECKS = [
    dg.AssetCheckSpec(
        IMPORT_CHECK,
        asset=UPLOADED_FILES,
        partitions_def=upload_partitions,
        description="Fails (error) when nothing of the file was imported: status ERROR, the "
        "file is in rejected/ with its reason.",
    ),
    dg.AssetCheckSpec(
        ROWS_CHECK,
        asset=UPLOADED_FILES,
        partitions_def=upload_partitions,
        description="Fails (warning) when some rows were reported instead of imported "
        "(status PARTIAL): see the import log's errors.",
    ),
]


def check_results(outcome: ImportOutcome) -> list[dg.AssetCheckResult]:
    summary = {
        "status": dg.MetadataValue.text(outcome.status),
        "note": dg.MetadataValue.text(outcome.note),
        "import_log_id": dg.MetadataValue.int(outcome.log_id or 0),
        "stored_path": dg.MetadataValue.text(outcome.stored_path),
    }
    return [
        dg.AssetCheckResult(
            check_name=IMPORT_CHECK,
            passed=outcome.status != ERROR,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=summary,
        ),
        dg.AssetCheckResult(
            check_name=ROWS_CHECK,
            passed=outcome.status == SUCCESS,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **summary,
                "rows_total": dg.MetadataValue.int(outcome.total_rows),
                "rows_error": dg.MetadataValue.int(outcome.error_rows),
            },
        ),
    ]


def errors_markdown(outcome: ImportOutcome) -> str:
    if not outcome.errors:
        return "No errors."
    lines = ["| row | column | reason |", "|---:|---|---|"]
    for error in outcome.errors[:PREVIEW_ERRORS]:
        reason = error.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {error.row if error.row is not None else '–'} | {error.column or '–'} | {reason} |"
        )
    if len(outcome.errors) > PREVIEW_ERRORS:
        lines.append(f"\n… and {len(outcome.errors) - PREVIEW_ERRORS} more in the import log.")
    return "\n".join(lines)


@dg.asset(
    partitions_def=upload_partitions,
    group_name="uploads",
    owners=OWNERS,
    kinds={"postgres", "file"},
    code_version="1",
    check_specs=UPLOAD_CHECKS,
)
def uploaded_files(
    context: dg.AssetExecutionContext, postgres: PostgresResource, upload_folder: UploadFolder
) -> dg.MaterializeResult:
    """A file staff dropped into the upload folder, imported into the directory's tables
    (valid rows in one transaction, invalid ones reported in the import log). One partition
    per file content; `file_imported` is red for ERROR, `every_row_imported` warns for
    PARTIAL (docs/uploads.md).
    """
    try:
        outcome = import_upload(
            postgres.url,
            UploadPaths(Path(upload_folder.root)),
            context.partition_key,
            run_id=context.run.run_id,
        )
    except UploadBusy as busy:
        # The other run finishes the upload and its log row; retrying this one would only
        # meet the lock again (or import the file a second time once it is filed away).
        raise dg.Failure(description=str(busy), allow_retries=False) from busy
    if outcome.status != "SUCCESS":
        context.log.warning(f"{context.partition_key}: {outcome.status} — {outcome.note}")
    return dg.MaterializeResult(
        metadata={
            "status": dg.MetadataValue.text(outcome.status),
            "import_type": dg.MetadataValue.text(outcome.import_type or "unknown"),
            "rows_total": dg.MetadataValue.int(outcome.total_rows),
            "rows_success": dg.MetadataValue.int(outcome.success_rows),
            "rows_error": dg.MetadataValue.int(outcome.error_rows),
            "written": dg.MetadataValue.json(outcome.written),
            "import_log_id": dg.MetadataValue.int(outcome.log_id or 0),
            "stored_path": dg.MetadataValue.text(outcome.stored_path),
            "note": dg.MetadataValue.text(outcome.note),
            "errors": dg.MetadataValue.md(errors_markdown(outcome)),
        },
        check_results=check_results(outcome),
    )
