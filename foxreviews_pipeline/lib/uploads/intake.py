"""What the upload sensor does with `incoming/`: wait until a file is stable, then queue it
(one partition per file content) or reject it.

A file is stable when its size, modification time and inode are the same as at the previous
look, or when it was last modified more than `settle_seconds` ago. Hidden files and Office
lock files (`.~lock…`, `~$…`) are what editors and copy tools write while working: they are
left alone. Queuing a file writes its PENDING log row and renames it into `processing/` in
one step; the same content seen again is moved to `rejected/` as a duplicate.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from foxreviews_pipeline.lib.db.database import transaction
from foxreviews_pipeline.lib.uploads import importlog
from foxreviews_pipeline.lib.uploads.files import check_size, safe_name
from foxreviews_pipeline.lib.uploads.folder import (
    INCOMING,
    PROCESSING,
    REJECTED,
    UploadPaths,
    display_name,
    move_no_clobber,
    write_reason,
)
from foxreviews_pipeline.lib.uploads.model import ERROR, MAX_BYTES, FileRejected, RowError
from foxreviews_pipeline.lib.uploads.specs import type_from_name

DEFAULT_SETTLE_SECONDS = 60.0

QUEUED, DUPLICATE, REJECTED_NOW = "queued", "duplicate", "rejected"


@dataclass
class Scan:
    stable: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # name → [size, mtime_ns, inode] of every regular file still in incoming/
    signatures: dict[str, list[int]] = field(default_factory=dict)


def scan_incoming(
    paths: UploadPaths,
    previous: dict[str, list[int]],
    now: float,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
) -> Scan:
    scan = Scan()
    with os.scandir(paths.folder(INCOMING)) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            key = display_name(name)
            if name.startswith((".", "~$")):
                scan.ignored.append(key)
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                scan.ignored.append(key)
                continue
            if not stat.S_ISREG(st.st_mode):
                # Symbolic links and special files are rejected at once: never followed.
                scan.stable.append(name)
                continue
            signature = [st.st_size, st.st_mtime_ns, st.st_ino]
            scan.signatures[key] = signature
            if previous.get(key) == signature or now - st.st_mtime >= settle_seconds:
                scan.stable.append(name)
            else:
                scan.waiting.append(key)
    return scan


@dataclass(frozen=True)
class Registration:
    file_name: str
    outcome: str  # queued | duplicate | rejected
    log_id: int
    stored_path: str
    partition_key: str | None = None
    content_sha256: str | None = None
    reason: str | None = None
    code: str | None = None


def partition_key_for(content_sha256: str, name: str) -> str:
    return f"{content_sha256[:12]}-{safe_name(name)}"


def _hash_regular_file(path: Path) -> str:
    """SHA-256 of a regular file opened without following a symbolic link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise FileRejected("not_a_file", "not a regular file")
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _reject_now(
    url: str, paths: UploadPaths, path: Path, error: RowError, content_sha256: str | None = None
) -> Registration:
    name = display_name(path.name)
    # Named like a queued file when its content is known, so that its name is a partition key
    # the sensor can show (and re-run on purpose) like any other upload.
    stored_name = (
        partition_key_for(content_sha256, path.name) if content_sha256 else safe_name(path.name)
    )
    with transaction(url) as conn:
        dest = move_no_clobber(path, paths.folder(REJECTED), stored_name)
        stored = paths.relative(dest)
        log_id = importlog.create(
            conn,
            file_name=name,
            file_type=type_from_name(name),
            content_sha256=content_sha256,
            stored_path=stored,
            status=ERROR,
            errors=[error],
            note=error.reason,
        )
        write_reason(
            dest,
            original_name=name,
            errors=[error],
            log_id=log_id,
            summary="Status: ERROR — the file was not imported.",
        )
    return Registration(
        name,
        REJECTED_NOW if error.code != importlog.DUPLICATE_CODE else DUPLICATE,
        log_id,
        stored,
        partition_key=dest.name,
        content_sha256=content_sha256,
        reason=error.reason,
        code=error.code,
    )


def register(url: str, paths: UploadPaths, name: str) -> Registration:
    """Queue (or reject) the stable file `incoming/<name>`."""
    path = paths.folder(INCOMING) / name
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return _reject_now(
            url,
            paths,
            path,
            RowError(
                None,
                None,
                "symbolic links are not accepted: copy the file itself into incoming/",
                "symlink",
            ),
        )
    if not stat.S_ISREG(st.st_mode):
        return _reject_now(
            url, paths, path, RowError(None, None, "not a regular file", "not_a_file")
        )
    if st.st_size > MAX_BYTES:
        try:
            check_size(st.st_size)
        except FileRejected as rejected:
            return _reject_now(url, paths, path, rejected.as_error())
    try:
        sha = _hash_regular_file(path)
    except FileRejected as rejected:
        return _reject_now(url, paths, path, rejected.as_error())

    shown = display_name(name)
    with transaction(url) as conn:
        # Serialises registrations of the same content across concurrent sensor ticks.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (sha,))
        original = importlog.original_import(conn, sha)
        if original is None:
            key = partition_key_for(sha, name)
            dest = move_no_clobber(path, paths.folder(PROCESSING), key)
            stored = paths.relative(dest)
            log_id = importlog.create(
                conn,
                file_name=shown,
                file_type=type_from_name(shown),
                content_sha256=sha,
                stored_path=stored,
                note="waiting for its import run",
            )
            return Registration(
                shown, QUEUED, log_id, stored, partition_key=dest.name, content_sha256=sha
            )

    when = original.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    reason = (
        f"same content as {original.file_name}, received {when} (import #{original.id}, "
        f"{original.status}): a file is imported once"
    )
    return _reject_now(
        url, paths, path, RowError(None, None, reason, importlog.DUPLICATE_CODE), sha
    )


def pending_in_processing(paths: UploadPaths) -> list[str]:
    """Stored names of the files waiting in processing/ (a run failed, or is to come)."""
    folder = paths.folder(PROCESSING)
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".")
    )


def content_hash(paths: UploadPaths, stored_name: str) -> str:
    return _hash_regular_file(paths.folder(PROCESSING) / stored_name)
