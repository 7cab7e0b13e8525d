"""One upload's import, from `processing/` to `archive/` or `rejected/`.

One upload is imported by one run at a time: the import holds a PostgreSQL advisory lock
keyed on the upload's stored name (its partition key) from before it looks for the file
until the file is filed away and the log row finished. A second run that finds the lock
taken (a run retry and a manual re-run at once) raises `UploadBusy` without touching the
file or the log row. The lock is a session lock on a connection of its own, so PostgreSQL
releases it when the process holding it dies.

The bytes imported are the bytes registered: the file's SHA-256 is checked against the
log row before it is read and again when it is filed away. A file that changed in between
(a writer still appending) is put back into incoming/ to be taken again once quiet; its row
ends ERROR (`file_changed`) and nothing of it is written. A file removed before it was
imported ends its row ERROR (`file_missing`).

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
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from foxreviews_pipeline.lib.db.database import transaction
from foxreviews_pipeline.lib.publish import PublicationHeld
from foxreviews_pipeline.lib.uploads import importlog
from foxreviews_pipeline.lib.uploads.files import content_sha256, safe_name, sniff
from foxreviews_pipeline.lib.uploads.folder import (
    ARCHIVE,
    INCOMING,
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


class UploadBusy(RuntimeError):
    """Another run holds the upload's lock: this run did nothing, the log row is untouched."""


class _FileChanged(Exception):
    """The file's bytes are no longer those registered."""

    def __init__(self, expected: str, actual: str):
        super().__init__(f"SHA-256 {expected[:12]}… expected, {actual[:12]}… found")
        self.expected = expected
        self.actual = actual


# Advisory-lock keys are 64-bit hashes of this prefix and the stored name; the prefix keeps
# them apart from the registration's per-content lock (keyed on the bare SHA-256).
_LOCK_PREFIX = "foxreviews upload import "


@contextmanager
def upload_lock(url: str, stored_name: str) -> Iterator[bool]:
    """Try to take the lock of the upload `stored_name` for the block: yields whether it was
    taken (False: another session holds it). Closing the connection releases it."""
    with psycopg.connect(url, application_name="foxreviews upload lock", autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_LOCK_PREFIX + stored_name,)
        ).fetchone()
        yield bool(row and row[0])


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
    url: str, paths: UploadPaths, stored_name: str, path: Path, run_id: str | None
) -> tuple[int, str, str | None]:
    """The log row this import finishes (marked PROCESSING), the file's original name and
    the SHA-256 it was registered with."""
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
    return log_id, file_name, row.content_sha256 if row else None


def _busy(url: str, stored_name: str) -> UploadBusy:
    """The loser's message, naming the row and run that hold the upload (read only)."""
    holder = ""
    with transaction(url) as conn:
        found = conn.execute(
            "SELECT id, status, run_id FROM core_importlog WHERE stored_path = ANY(%s) "
            "ORDER BY id DESC LIMIT 1",
            ([f"{folder}/{stored_name}" for folder in (PROCESSING, ARCHIVE, REJECTED)],),
        ).fetchone()
    if found is not None:
        log_id, status, run_id = found
        holder = f" (import #{log_id}, {status}" + (f", run {run_id})" if run_id else ")")
    return UploadBusy(
        f"another run is importing {stored_name}{holder}: this run stopped without touching "
        "the file or its import log"
    )


def _missing_reason(paths: UploadPaths, folder: str) -> str:
    reason = f"the file was removed from {folder}/ before it was imported"
    problem = paths.not_a_folder()
    if problem is None and not os.path.lexists(paths.root):
        problem = f"the upload folder {paths.root} was removed"
    return f"{reason} ({problem})" if problem else reason


def _close_missing(url: str, paths: UploadPaths, stored_name: str) -> None:
    """No file to import: the row still waiting for it ends ERROR, saying so."""
    with transaction(url) as conn:
        row = importlog.latest_for_stored_name(conn, stored_name)
        if row is None or row.status not in (PENDING, STATUS_PROCESSING):
            return
        folder = (row.stored_path or PROCESSING).split("/", 1)[0]
        importlog.close_unimported(
            conn,
            row.id,
            code=importlog.MISSING_CODE,
            reason=_missing_reason(paths, folder),
            stored_path=None,
            only_open=True,
        )


def close_lost_uploads(url: str, paths: UploadPaths) -> list[int]:
    """End ERROR the unfinished log rows whose file is gone (the upload folder or the file
    was removed) and that no run is importing: their run may never come. The ids closed."""
    with transaction(url) as conn:
        candidates = importlog.open_rows(conn)
    closed: list[int] = []
    for row in candidates:
        if not row.stored_path or os.path.lexists(paths.root / row.stored_path):
            continue
        stored_name = row.stored_path.rsplit("/", 1)[-1]
        with upload_lock(url, stored_name) as held:
            if not held:
                continue  # a run is at it: it finishes the row itself
            with transaction(url) as conn:
                now = importlog.get_row(conn, row.id)
                if (
                    now is None
                    or now.status not in (PENDING, STATUS_PROCESSING)
                    or not now.stored_path
                    or os.path.lexists(paths.root / now.stored_path)
                ):
                    continue
                folder = now.stored_path.split("/", 1)[0]
                if importlog.close_unimported(
                    conn,
                    row.id,
                    code=importlog.MISSING_CODE,
                    reason=_missing_reason(paths, folder),
                    stored_path=None,
                    only_open=True,
                ):
                    closed.append(row.id)
    return closed


# A file whose rows the publication audit refused (docs/data-model.md).
HELD_BACK_CODE = "held_back"


def import_upload(
    url: str, paths: UploadPaths, stored_name: str, *, run_id: str | None = None
) -> ImportOutcome:
    """Import the upload stored as `stored_name` (its partition key) and file it away.

    Raises `UploadBusy` when another run is importing it (nothing touched), and
    `UploadNotFound` when the file is gone (its unfinished log row ends ERROR)."""
    with upload_lock(url, stored_name) as held:
        if not held:
            raise _busy(url, stored_name)
        path = paths.locate(stored_name)
        if path is None:
            _close_missing(url, paths, stored_name)
            raise UploadNotFound(f"no file {stored_name} in processing/, archive/ or rejected/")
        log_id, file_name, registered = _begin(url, paths, stored_name, path, run_id)
        try:
            return _import(url, paths, path, file_name, stored_name, log_id, run_id, registered)
        except _FileChanged as changed:
            try:
                return _changed(url, paths, path, file_name, log_id, changed)
            except FileNotFoundError as gone:
                error: Exception = gone  # changed, then removed: reported as removed
        except Exception as exc:  # noqa: BLE001 - always raised again below
            error = exc
        if isinstance(error, FileNotFoundError) and not os.path.lexists(path):
            # Removed while it was being imported: nothing was written (the transaction that
            # writes rows also files the file, and rolled back).
            reason = _missing_reason(paths, path.parent.name)
            with transaction(url) as conn:
                importlog.close_unimported(
                    conn, log_id, code=importlog.MISSING_CODE, reason=reason, stored_path=None
                )
            raise UploadNotFound(f"{stored_name}: {reason}") from error
        _fail(url, paths, path, file_name, log_id, f"{type(error).__name__}: {error}")
        raise error


def _unchanged(path: Path, registered: str | None) -> str:
    """The file's SHA-256, which must be `registered` when that is known."""
    actual = content_sha256(path)
    if registered is not None and actual != registered:
        raise _FileChanged(registered, actual)
    return actual


def _changed(
    url: str,
    paths: UploadPaths,
    path: Path,
    file_name: str,
    log_id: int,
    changed: _FileChanged,
) -> ImportOutcome:
    """The file is not what was registered. From processing/ it was still being written: it
    goes back to incoming/, to be taken again (with its full content) once quiet. Anywhere
    else someone changed a filed file: it stays where it is, not imported."""
    what = (
        f"the file changed after it was taken for import (SHA-256 {changed.expected[:12]}… "
        f"when taken, {changed.actual[:12]}… now): nothing was imported"
    )
    stored: str | None = paths.relative(path)
    folder = path.parent.name
    if folder == PROCESSING:
        back = move_no_clobber(path, paths.folder(INCOMING), safe_name(file_name))
        reason = (
            f"{what}; it was still being written, so it was put back into incoming/ as "
            f"{back.name} and will be taken again once it stops changing"
        )
        stored, folder = None, INCOMING
    else:
        reason = f"{what}; it stays in {folder}/ and is not imported again"
    with transaction(url) as conn:
        importlog.close_unimported(
            conn, log_id, code=importlog.CHANGED_CODE, reason=reason, stored_path=stored
        )
    _log.warning("import log #%s: %s", log_id, reason)
    return ImportOutcome(
        status=ERROR,
        import_type=type_from_name(file_name),
        errors=[RowError(None, None, reason, importlog.CHANGED_CODE)],
        folder=folder,
        stored_path=stored or "",
        log_id=log_id,
        note=reason,
    )


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
    registered: str | None,
) -> ImportOutcome:
    outcome = ImportOutcome(status=ERROR, import_type=type_from_name(file_name), log_id=log_id)
    # A link is refused by _parse without being read; any other file must be the bytes that
    # were registered, now and when it is filed away.
    sha = None if path.is_symlink() else _unchanged(path, registered)
    try:
        parsed = _parse(path, file_name)
    except FileRejected as rejected:
        outcome.import_type = getattr(rejected, "import_type", outcome.import_type)
        outcome.total_rows = getattr(rejected, "total_rows", 0)
        outcome.errors = [rejected.as_error()]
        return _reject(url, paths, path, file_name, log_id, outcome, sha)

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
            if sha is not None:
                _unchanged(path, sha)  # what was read is what is archived, or roll back
            moved = _file_into(paths, path, ARCHIVE)
            outcome.folder, outcome.stored_path = ARCHIVE, paths.relative(moved)
            importlog.finish(conn, log_id, outcome)
    except _NothingToWrite:
        outcome.status, outcome.success_rows, outcome.written = ERROR, 0, {}
        return _reject(url, paths, path, file_name, log_id, outcome, sha)
    except PublicationHeld as held:
        # The blocking checks refused what the file would publish: nothing was written.
        outcome.status, outcome.success_rows, outcome.written = ERROR, 0, {}
        outcome.errors = [RowError(None, None, str(held), HELD_BACK_CODE)]
        return _reject(url, paths, path, file_name, log_id, outcome, sha)
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
    url: str,
    paths: UploadPaths,
    path: Path,
    file_name: str,
    log_id: int,
    outcome: ImportOutcome,
    sha: str | None,
) -> ImportOutcome:
    outcome.status = ERROR
    outcome.success_rows = 0
    outcome.note = _summary(outcome)
    if sha is not None:
        _unchanged(path, sha)  # the reasons are about the bytes that were read
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
