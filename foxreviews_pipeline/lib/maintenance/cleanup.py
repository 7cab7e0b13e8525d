"""Weekly cleanup: what the platform keeps, for how long, and proof of what it removed.

- `core_importlog` rows older than 90 days (by `created_at`) are deleted.
- Uploaded files in the upload folder's `archive/` and `rejected/` (with their
  `<file>.reason.txt` sidecars) are deleted 30 days after they were filed. A file's filing
  time is the newest of its modification time and the `created_at`/`completed_at` of the
  import-log rows whose `stored_path` names it: moving a file keeps the modification time
  staff's copy had, which may be years old, and an upload must never go before its
  retention. Import-log rows that are kept get `file_purged_at` and a note.
- Landed raw partitions (`<landing root>/<dataset>/<YYYY-MM-DD>.json.gz` and any
  `<YYYY-MM-DD>.*` sidecar) older than the configured retention go, by the partition date in
  the name — a backfill of an old day would otherwise be kept for a month for nothing.
- Changes of the change feed (`directory_change`, docs/change-feed.md) older than
  FOXREVIEWS_CHANGE_RETENTION_DAYS (by `created_at`) are deleted; the feed's newest change
  is always kept, so that a consumer that is up to date can resume from it.

Nothing outside the project's own folders is ever touched: folders and files are checked
with `lstat` (a symbolic link is never followed and never deleted, only reported), and
every path is checked to resolve inside the folder it belongs to before it is unlinked.
A dry run plans exactly the same deletions and reports the same counts, deleting nothing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from foxreviews_pipeline.lib.constants import PARIS
from foxreviews_pipeline.lib.directory.change_feed import purge_changes
from foxreviews_pipeline.lib.sirene.landing import RAW_DATASET, parse_landed_name, stale_spools

IMPORT_LOG_RETENTION_DAYS = 90
UPLOAD_RETENTION_DAYS = 30
UPLOAD_FOLDERS = ("archive", "rejected")
REASON_SUFFIX = ".reason.txt"
RAW_DATASETS = (RAW_DATASET,)
CHANGE_RETENTION_DAYS = 30


@dataclass(frozen=True)
class RetentionPolicy:
    import_log_days: int = IMPORT_LOG_RETENTION_DAYS
    upload_days: int = UPLOAD_RETENTION_DAYS
    raw_days: int = 30
    change_days: int = CHANGE_RETENTION_DAYS

    def __post_init__(self) -> None:
        for name in ("import_log_days", "upload_days", "raw_days", "change_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of days >= 1, got {value!r}")


@dataclass
class CleanupResult:
    """What a cleanup deleted (or, in a dry run, would delete)."""

    dry_run: bool
    now: datetime
    import_log_rows_deleted: int = 0
    import_log_rows_marked_purged: int = 0
    upload_files_deleted: int = 0
    upload_reason_files_deleted: int = 0
    raw_partitions_deleted: int = 0
    raw_sidecars_deleted: int = 0
    spool_files_deleted: int = 0  # left by a landing writer that was killed
    change_rows_deleted: int = 0  # rows of the change feed
    bytes_freed: int = 0
    deleted_paths: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def files_deleted(self) -> int:
        return (
            self.upload_files_deleted
            + self.upload_reason_files_deleted
            + self.raw_partitions_deleted
            + self.raw_sidecars_deleted
            + self.spool_files_deleted
        )

    def counts(self) -> dict[str, int]:
        return {
            "import_log_rows_deleted": self.import_log_rows_deleted,
            "import_log_rows_marked_purged": self.import_log_rows_marked_purged,
            "change_rows_deleted": self.change_rows_deleted,
            "upload_files_deleted": self.upload_files_deleted,
            "upload_reason_files_deleted": self.upload_reason_files_deleted,
            "raw_partitions_deleted": self.raw_partitions_deleted,
            "raw_sidecars_deleted": self.raw_sidecars_deleted,
            "spool_files_deleted": self.spool_files_deleted,
            "files_deleted": self.files_deleted,
            "bytes_freed": self.bytes_freed,
            "refused_paths": len(self.refused),
            "errors": len(self.errors),
        }


class _Guard:
    """Deletes regular files that really lie inside one folder, and nothing else."""

    def __init__(self, root: Path, result: CleanupResult, dry_run: bool):
        self.root = Path(os.path.realpath(root))
        self.result = result
        self.dry_run = dry_run

    def inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([real, self.root]) == str(self.root) and real != str(self.root)

    def refuse(self, path: Path, reason: str) -> None:
        self.result.refused.append(f"{path}: {reason}")

    def usable_folder(self, folder: Path) -> bool:
        """The folder exists, is a real directory (not a link) and lies inside the root."""
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            self.refuse(folder, "symbolic link, not followed")
            return False
        if not stat.S_ISDIR(mode):
            self.refuse(folder, "not a directory")
            return False
        if not self.inside(folder):
            self.refuse(folder, f"resolves outside {self.root}")
            return False
        return True

    def delete(self, path: Path) -> int | None:
        """Unlink `path` (or only plan it in a dry run); its size, or None when refused."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            self.refuse(path, "symbolic link, not followed")
            return None
        if not stat.S_ISREG(st.st_mode):
            self.refuse(path, "not a regular file")
            return None
        # The parent is resolved: a directory swapped for a link since the scan must not
        # carry the unlink elsewhere.
        if not self.inside(path):
            self.refuse(path, f"resolves outside {self.root}")
            return None
        if not self.dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return None
            except OSError as exc:
                self.result.errors.append(f"{path}: {exc.strerror or exc}")
                return None
        self.result.deleted_paths.append(path)
        self.result.bytes_freed += st.st_size
        return st.st_size


def _regular_files(folder: Path, guard: _Guard) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under `folder`, recursively, never entering a linked directory."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        guard.result.errors.append(f"{folder}: {exc.strerror or exc}")
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            guard.refuse(path, "symbolic link, not followed")
        elif entry.is_dir(follow_symlinks=False):
            yield from _regular_files(path, guard)
        elif entry.is_file(follow_symlinks=False):
            yield path, entry.stat(follow_symlinks=False)


@dataclass
class _LogRow:
    id: int
    filed_at: datetime
    expiring: bool


def _log_rows_by_file(
    conn: psycopg.Connection, upload_root: Path, log_cutoff: datetime
) -> dict[str, list[_LogRow]]:
    rows = conn.execute(
        """
        SELECT id, stored_path, greatest(created_at, completed_at), created_at < %s
        FROM core_importlog
        WHERE stored_path IS NOT NULL AND stored_path <> '' AND file_purged_at IS NULL
        """,
        (log_cutoff,),
    ).fetchall()
    by_file: dict[str, list[_LogRow]] = {}
    for row_id, stored_path, filed_at, expiring in rows:
        path = Path(stored_path)
        if not path.is_absolute():
            path = upload_root / path
        by_file.setdefault(os.path.realpath(path), []).append(_LogRow(row_id, filed_at, expiring))
    return by_file


def _clean_uploads(
    conn: psycopg.Connection,
    upload_root: Path,
    policy: RetentionPolicy,
    now: datetime,
    log_cutoff: datetime,
    result: CleanupResult,
    dry_run: bool,
) -> list[int]:
    """Delete expired uploads; the ids of the kept log rows whose file went."""
    if not upload_root.exists():
        return []
    guard = _Guard(upload_root, result, dry_run)
    cutoff = now - timedelta(days=policy.upload_days)
    rows_by_file = _log_rows_by_file(conn, upload_root, log_cutoff)
    purged_rows: list[int] = []

    for name in UPLOAD_FOLDERS:
        folder = upload_root / name
        if not guard.usable_folder(folder):
            continue
        files = dict(_regular_files(folder, guard))
        owners = {path for path in files if not path.name.endswith(REASON_SUFFIX)}
        for path in sorted(owners):
            rows = rows_by_file.get(os.path.realpath(path), [])
            filed_at = max(
                [datetime.fromtimestamp(files[path].st_mtime, UTC), *(r.filed_at for r in rows)]
            )
            if filed_at >= cutoff:
                continue
            if guard.delete(path) is None:
                continue
            result.upload_files_deleted += 1
            purged_rows += [r.id for r in rows if not r.expiring]
            sidecar = path.with_name(path.name + REASON_SUFFIX)
            if sidecar in files and guard.delete(sidecar) is not None:
                result.upload_reason_files_deleted += 1
        # A reason file whose upload is gone expires on its own date.
        for path in sorted(set(files) - owners):
            owner = path.with_name(path.name[: -len(REASON_SUFFIX)])
            if owner in owners:
                continue
            mtime = datetime.fromtimestamp(files[path].st_mtime, UTC)
            if mtime < cutoff and guard.delete(path) is not None:
                result.upload_reason_files_deleted += 1
    return purged_rows


def _clean_raw(
    landing_root: Path,
    datasets: Sequence[str],
    policy: RetentionPolicy,
    now: datetime,
    result: CleanupResult,
    dry_run: bool,
) -> None:
    if not landing_root.exists():
        return
    guard = _Guard(landing_root, result, dry_run)
    oldest_kept: date = now.astimezone(PARIS).date() - timedelta(days=policy.raw_days)
    for dataset in datasets:
        folder = landing_root / dataset
        if not guard.usable_folder(folder):
            continue
        for spool in stale_spools(folder):
            if guard.delete(spool) is not None:
                result.spool_files_deleted += 1
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = Path(entry.path)
            if entry.is_symlink():
                guard.refuse(path, "symbolic link, not followed")
                continue
            # Hidden names are in-flight atomic writes; not regular files are not ours.
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            landed = parse_landed_name(entry.name)
            if landed is None or landed.day >= oldest_kept or guard.delete(path) is None:
                continue
            if landed.is_partition:
                result.raw_partitions_deleted += 1
            else:
                result.raw_sidecars_deleted += 1


def _purged_note(now: datetime, policy: RetentionPolicy) -> str:
    return (
        f"uploaded file purged on {now.astimezone(PARIS):%Y-%m-%d} "
        f"after the {policy.upload_days}-day retention"
    )


def run_cleanup(
    conn: psycopg.Connection,
    *,
    upload_root: Path,
    landing_root: Path,
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    raw_datasets: Sequence[str] = RAW_DATASETS,
    log: Callable[[str], None] | None = None,
) -> CleanupResult:
    """Apply the retention policy. `conn` is used in the caller's transaction: files go
    first, then the log rows are marked and deleted, so a row never claims a purge that did
    not happen."""
    policy = policy or RetentionPolicy()
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    result = CleanupResult(dry_run=dry_run, now=now)
    log_cutoff = now - timedelta(days=policy.import_log_days)

    purged_rows = _clean_uploads(
        conn, Path(upload_root), policy, now, log_cutoff, result, dry_run
    )
    _clean_raw(Path(landing_root), raw_datasets, policy, now, result, dry_run)

    expired_ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM core_importlog WHERE created_at < %s ORDER BY id FOR UPDATE",
            (log_cutoff,),
        ).fetchall()
    ]
    result.import_log_rows_marked_purged = len(set(purged_rows))
    result.import_log_rows_deleted = len(expired_ids)
    if not dry_run:
        if purged_rows:
            note = _purged_note(now, policy)
            conn.execute(
                """
                UPDATE core_importlog
                SET file_purged_at = %(now)s,
                    note = CASE WHEN note = '' THEN %(note)s ELSE note || E'\\n' || %(note)s END,
                    updated_at = %(now)s
                WHERE id = ANY(%(ids)s)
                """,
                {"now": now, "note": note, "ids": sorted(set(purged_rows))},
            )
        if expired_ids:
            conn.execute("DELETE FROM core_importlog WHERE id = ANY(%s)", (expired_ids,))
    result.change_rows_deleted = purge_changes(
        conn, now - timedelta(days=policy.change_days), dry_run=dry_run
    )

    if log is not None:
        for refused in result.refused:
            log(f"refused {refused}")
        for error in result.errors:
            log(f"could not delete {error}")
    return result
