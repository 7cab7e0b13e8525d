"""One upload's import, from `processing/` to `archive/` or `rejected/`.

The log row goes PROCESSING (committed at once, so the web app sees the import running),
then the file is checked, read and validated without touching the data; the good rows are
written and the log row finished in ONE transaction, so the log can never claim rows that
were not written. A file with no good row is rejected whole. If the import itself breaks
(database down, a bug — never a bad file, which is always a rejection with a reason), the
file still leaves `processing/` for `rejected/` with a `.reason.txt`, the log says ERROR
(`import_failed`), and the error propagates so that the run fails; re-running the partition
imports the file again from `rejected/`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from foxreviews_pipeline.lib.db.database import transaction
from foxreviews_pipeline.lib.directory.checks import PublicationHeld
from foxreviews_pipeline.lib.uploads import importlog
from foxreviews_pipeline.lib.uploads.files import sniff
from foxreviews_pipeline.lib.uploads.folder import (
    ARCHIVE,
    PROCESSING,
    REJECTED,
    UploadPaths,
    move_no_clobber,
    write_reason,
)
from foxreviews_pipeline.lib.uploads.model import (
    ERROR,
    PARTIAL,
    PENDING,
    SUCCESS,
    FileRejected,
    ImportOutcome,
    RowError,
)
from foxreviews_pipeline.lib.uploads.model import (
    PROCESSING as STATUS_PROCESSING,
)
from foxreviews_pipeline.lib.uploads.readers import normalise_header, read_table
from foxreviews_pipeline.lib.uploads.specs import (
    ALL_COLUMNS,
    ENTREPRISES,
    SPECS,
    check_columns,
    detect_type,
    type_from_name,
)
from foxreviews_pipeline.lib.uploads.validate import Validated, check_known_naf, validate
from foxreviews_pipeline.lib.uploads.write import known_naf_codes, write

_log = logging.getLogger(__name__)


class UploadNotFound(FileNotFoundError):
    pass


class _NothingToWrite(Exception):
    """Rolls back a transaction in which no row survived."""


@dataclass(frozen=True)
class _Parsed:
    import_type: str
    total_rows: int
    validated: Validated


def _parse(path: Path, file_name: str) -> _Parsed:
    if path.is_symlink():
        # A link rejected at intake and re-run on purpose: still never followed.
        raise FileRejected(
            "symlink", "symbolic links are not accepted: copy the file itself into incoming/"
        )
    ext = sniff(path, file_name)
    table = read_table(path, ext, ALL_COLUMNS)
    header = [normalise_header(h) for h in table.header]
    import_type = detect_type(file_name, header)
    try:
        check_columns(SPECS[import_type], header)
    except FileRejected as rejected:
        rejected.total_rows = len(table.rows)  # type: ignore[attr-defined]
        rejected.import_type = import_type  # type: ignore[attr-defined]
        raise
    return _Parsed(import_type, len(table.rows), validate(import_type, table, header))


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _summary(outcome: ImportOutcome) -> str:
    counts = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in outcome.written.items() if n)
    if outcome.status == SUCCESS:
        return f"imported all {_rows(outcome.success_rows)}" + (f" ({counts})" if counts else "")
    if outcome.status == PARTIAL:
        return (
            f"imported {outcome.success_rows} of {_rows(outcome.total_rows)}; "
            f"{outcome.error_rows} rejected (see errors)" + (f" ({counts})" if counts else "")
        )
    if len(outcome.errors) == 1 and outcome.errors[0].row is None:
        return outcome.errors[0].reason
    return f"no row could be imported: {outcome.error_rows} of {_rows(outcome.total_rows)} rejected (see errors)"


def _begin(
    url: str, paths: UploadPaths, stored_name: str, run_id: str | None
) -> tuple[int, str, Path]:
    path = paths.locate(stored_name)
    if path is None:
        raise UploadNotFound(f"no file {stored_name} in processing/, archive/ or rejected/")
    with transaction(url) as conn:
        row = importlog.latest_for_stored_name(conn, stored_name)
        in_processing = path.parent.name == PROCESSING
        # A file still in processing/ continues its own log row (first run or a retry); one
        # imported again from archive/ or rejected/ gets a new row: the log keeps history.
        if row is not None and (in_processing or row.status in (PENDING, STATUS_PROCESSING)):
            log_id, file_name = row.id, row.file_name
        else:
            file_name = row.file_name if row else stored_name.split("-", 1)[-1]
            log_id = importlog.create(
                conn,
                file_name=file_name,
                file_type=type_from_name(file_name),
                content_sha256=row.content_sha256 if row else None,
                stored_path=paths.relative(path),
            )
        importlog.start(conn, log_id, run_id)
    return log_id, file_name, path


# A file whose rows the publication audit refused (docs/data-model.md).
HELD_BACK_CODE = "held_back"


def import_upload(
    url: str, paths: UploadPaths, stored_name: str, *, run_id: str | None = None
) -> ImportOutcome:
    """Import the upload stored as `stored_name` (its partition key) and file it away."""
    log_id, file_name, path = _begin(url, paths, stored_name, run_id)
    try:
        return _import(url, paths, path, file_name, stored_name, log_id, run_id)
    except Exception as exc:
        _fail(url, paths, path, file_name, log_id, f"{type(exc).__name__}: {exc}")
        raise


def _fail(
    url: str, paths: UploadPaths, path: Path, file_name: str, log_id: int, reason: str
) -> None:
    """Our own failure: the file still leaves processing/ with its reason beside it; the log
    row says so when the database answers (it may be what failed)."""
    reason = reason if len(reason) <= 2_000 else reason[:2_000] + "…"
    error = RowError(None, None, f"the import failed: {reason}", importlog.FAILED_CODE)
    dest = path
    if path.exists() and path.parent.name == PROCESSING:
        dest = _file_into(paths, path, REJECTED)
    if dest.parent.name == REJECTED:
        write_reason(
            dest,
            original_name=file_name,
            errors=[error],
            log_id=log_id,
            summary="Status: ERROR — the import failed on our side, not because of the file.",
            advice="Nothing from this file was written. Once the cause is fixed, re-run its "
            "partition of uploaded_files (dropping it again would be refused as a duplicate).",
        )
    try:
        with transaction(url) as conn:
            importlog.fail(conn, log_id, reason, stored_path=paths.relative(dest))
    except Exception:  # noqa: BLE001 - the original error is the one to report
        _log.exception("import log #%s could not record the failure", log_id)


def _import(
    url: str,
    paths: UploadPaths,
    path: Path,
    file_name: str,
    partition: str,
    log_id: int,
    run_id: str | None,
) -> ImportOutcome:
    outcome = ImportOutcome(status=ERROR, import_type=type_from_name(file_name), log_id=log_id)
    try:
        parsed = _parse(path, file_name)
    except FileRejected as rejected:
        outcome.import_type = getattr(rejected, "import_type", outcome.import_type)
        outcome.total_rows = getattr(rejected, "total_rows", 0)
        outcome.errors = [rejected.as_error()]
        return _reject(url, paths, path, file_name, log_id, outcome)

    validated = parsed.validated
    outcome.import_type, outcome.total_rows = parsed.import_type, parsed.total_rows
    moved: Path | None = None
    try:
        with transaction(url) as conn:
            if parsed.import_type == ENTREPRISES:
                codes = {r.values["naf_code"] for r in validated.rows if r.values.get("naf_code")}
                check_known_naf(validated, known_naf_codes(conn, codes))
            result = write(conn, validated, partition=partition, run_id=run_id)
            outcome.errors = sorted(
                [*validated.errors, *result.errors], key=lambda e: (e.row or 0, e.column or "")
            )
            outcome.success_rows = len(result.written_rows)
            outcome.written = result.counts
            if not outcome.success_rows:
                raise _NothingToWrite
            outcome.status = SUCCESS if outcome.success_rows == outcome.total_rows else PARTIAL
            outcome.note = _note(outcome, validated)
            moved = _file_into(paths, path, ARCHIVE)
            outcome.folder, outcome.stored_path = ARCHIVE, paths.relative(moved)
            importlog.finish(conn, log_id, outcome)
    except _NothingToWrite:
        outcome.status, outcome.success_rows, outcome.written = ERROR, 0, {}
        return _reject(url, paths, path, file_name, log_id, outcome)
    except PublicationHeld as held:
        # The blocking checks refused what the file would publish: nothing was written.
        outcome.status, outcome.success_rows, outcome.written = ERROR, 0, {}
        outcome.errors = [RowError(None, None, str(held), HELD_BACK_CODE)]
        return _reject(url, paths, path, file_name, log_id, outcome)
    except BaseException:
        if moved is not None and moved != path and moved.exists():
            # The transaction did not commit: the file goes back to where a re-run finds it.
            move_no_clobber(moved, path.parent, path.name)
        raise
    return outcome


def _note(outcome: ImportOutcome, validated: Validated) -> str:
    note = _summary(outcome)
    if validated.unknown_columns:
        note += f"; columns ignored (not {outcome.import_type} columns): {', '.join(validated.unknown_columns)}"
    if "naf_libelle" in validated.ignored_columns:
        note += "; naf_libelle ignored (labels come from the NAF nomenclature)"
    return note


def _file_into(paths: UploadPaths, path: Path, folder: str) -> Path:
    if path.parent.name == folder:
        return path
    return move_no_clobber(path, paths.folder(folder), path.name)


def _reject(
    url: str, paths: UploadPaths, path: Path, file_name: str, log_id: int, outcome: ImportOutcome
) -> ImportOutcome:
    outcome.status = ERROR
    outcome.success_rows = 0
    outcome.note = _summary(outcome)
    with transaction(url) as conn:
        dest = _file_into(paths, path, REJECTED)
        outcome.folder, outcome.stored_path = REJECTED, paths.relative(dest)
        importlog.finish(conn, log_id, outcome)
    write_reason(
        dest,
        original_name=file_name,
        errors=outcome.errors,
        log_id=log_id,
        summary=f"Status: ERROR — {outcome.note}",
    )
    return outcome
