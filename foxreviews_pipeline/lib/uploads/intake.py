"""What the upload sensor does with `incoming/`: wait until a file has stopped changing,
then queue it (one partition per file content) or reject it.

A file is taken once it has been seen unchanged for `quiet_seconds` (default 60 s) by the
sensor's own clock, across ticks: the sensor's cursor keeps, for each file, its signature
(size, modification time, inode and a hash of its first and last 64 KB) and when that
signature was first seen. The file's own modification time is never trusted on its own: a
writer that pauses keeps an old mtime, and a network share may stamp files with another
machine's clock. Hidden files and Office lock files (`.~lock…`, `~$…`) are what editors and
copy tools write while working: they are left alone.

Queuing a file renames it into `processing/` and hashes it there: the recorded SHA-256 is
that of the bytes the import will read (the import checks it again before reading and when
it files the file away). The PENDING log row is written in the same transaction. The same
content seen again is moved to `rejected/` as a duplicate. A file that another tick took, or
that was removed, between the listing and the rename is skipped without a log row.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foxreviews_pipeline.lib.db.database import transaction
from foxreviews_pipeline.lib.settings import DEFAULT_UPLOAD_QUIET_SECONDS
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

# How long a file must stay unchanged before it is taken. Long enough for a copy over a slow
# share or a writer that pauses between batches (a 40 s pause was seen); every upload waits
# this long after it is first seen.
DEFAULT_QUIET_SECONDS = DEFAULT_UPLOAD_QUIET_SECONDS

# The part of a file's start and end hashed into its signature: catches a rewrite that keeps
# size and mtime (a tool that restores the mtime), at the cost of two small reads per tick.
_EDGE_BYTES = 64 * 1024

QUEUED, DUPLICATE, REJECTED_NOW = "queued", "duplicate", "rejected"

SYMLINK_REASON = "symbolic links are not accepted: copy the file itself into incoming/"

# [size, mtime_ns, inode, hash of head and tail]
Signature = list[Any]


@dataclass
class Scan:
    # Raw names of the files to take now (unchanged for the quiet period, or special files
    # that are rejected at once), with the signature each was taken at.
    stable: list[str] = field(default_factory=list)
    taken_at: dict[str, Signature] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    # name → {"signature": Signature, "since": first time seen with it} of every regular
    # file still waiting in incoming/: the sensor's cursor.
    watched: dict[str, dict[str, Any]] = field(default_factory=dict)


class _NotRegular(Exception):
    """The entry turned into something other than a regular file between two looks."""


def _open_regular(path: Path) -> int:
    """A descriptor on `path` if it is a regular file, without following a symbolic link and
    without blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _NotRegular(str(path))
    return fd


def signature(path: Path, st: os.stat_result) -> Signature:
    """What must stay the same for a file to count as unchanged (`st` from its lstat)."""
    try:
        fd = _open_regular(path)
    except FileNotFoundError:
        raise
    except (OSError, _NotRegular):
        # Replaced by a link or unreadable: the next look sees what it is; register says why.
        return [st.st_size, st.st_mtime_ns, st.st_ino, ""]
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        digest = hashlib.sha256(handle.read(_EDGE_BYTES))
        if st.st_size > _EDGE_BYTES:
            handle.seek(max(_EDGE_BYTES, st.st_size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))
    return [st.st_size, st.st_mtime_ns, st.st_ino, digest.hexdigest()[:32]]


def _seen(entry: object) -> tuple[Signature, float] | None:
    """A cursor entry, if it is one (an older cursor format counts as never seen)."""
    if not isinstance(entry, dict):
        return None
    sig, since = entry.get("signature"), entry.get("since")
    if isinstance(sig, list) and len(sig) == 4 and isinstance(since, (int, float)):
        return sig, float(since)
    return None


def scan_incoming(
    paths: UploadPaths,
    previous: Mapping[str, object],
    now: float,
    quiet_seconds: float = DEFAULT_QUIET_SECONDS,
) -> Scan:
    """Which files of `incoming/` to take now. `previous` is the `watched` of the previous
    scan; `now` the sensor's clock. With `quiet_seconds <= 0` a file is taken when first
    seen."""
    scan = Scan()
    incoming = paths.folder(INCOMING)
    with os.scandir(incoming) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            key = display_name(name)
            if name.startswith((".", "~$")):
                scan.ignored.append(key)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    scan.ignored.append(key)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise _NotRegular(name)
                sig = signature(incoming / name, st)
            except FileNotFoundError:
                continue  # taken by another tick or removed since the listing
            except _NotRegular:
                # Symbolic links and special files are rejected at once: never followed.
                scan.stable.append(name)
                continue
            seen = _seen(previous.get(key))
            since = now
            if seen is not None and seen[0] == sig:
                # min(): a clock set back must not make a file wait longer.
                since = min(seen[1], now)
            if now - since >= quiet_seconds:
                scan.stable.append(name)
                scan.taken_at[name] = sig
            else:
                scan.waiting.append(key)
                scan.watched[key] = {"signature": sig, "since": since}
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
    try:
        fd = _open_regular(path)
    except _NotRegular:
        raise FileRejected("not_a_file", "not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symbolic link since it was listed
            raise FileRejected("symlink", SYMLINK_REASON) from None
        raise
    with os.fdopen(fd, "rb") as handle:
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _move_unchanged(source: Path, folder: Path, name: str, sha: str | None) -> Path | None:
    """Rename `source` into `folder`; None when it is gone (another tick took it). With
    `sha`, the file is hashed again once moved: if its bytes are no longer those, it is put
    back into incoming/ (still being written; taken again once quiet) and None returned."""
    try:
        dest = move_no_clobber(source, folder, name)
    except FileNotFoundError:
        return None
    if sha is None:
        return dest
    try:
        unchanged = _hash_regular_file(dest) == sha
    except (FileNotFoundError, FileRejected):
        unchanged = False
    if not unchanged:
        with contextlib.suppress(FileNotFoundError):
            move_no_clobber(dest, source.parent, source.name)
        return None
    return dest


def _reject_now(
    url: str, paths: UploadPaths, path: Path, error: RowError, content_sha256: str | None = None
) -> Registration | None:
    name = display_name(path.name)
    # Named like a queued file when its content is known, so that its name is a partition key
    # the sensor can show (and re-run on purpose) like any other upload.
    stored_name = (
        partition_key_for(content_sha256, path.name) if content_sha256 else safe_name(path.name)
    )
    with transaction(url) as conn:
        dest = _move_unchanged(path, paths.folder(REJECTED), stored_name, content_sha256)
        if dest is None:
            return None
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


def register(
    url: str, paths: UploadPaths, name: str, taken_at: Sequence[Any] | None = None
) -> Registration | None:
    """Queue (or reject) the file `incoming/<name>`.

    None, and nothing written, when the file is no longer there (another tick took it, or
    it was removed), or when it changed since `taken_at` (its signature when the scan found
    it quiet) or while it was being taken: it is left in incoming/ to be looked at again."""
    path = paths.folder(INCOMING) / name
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if taken_at is not None and [st.st_size, st.st_mtime_ns, st.st_ino] != list(taken_at[:3]):
        return None
    if stat.S_ISLNK(st.st_mode):
        return _reject_now(
            url,
            paths,
            path,
            RowError(
                None,
                None,
                SYMLINK_REASON,
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
    except FileNotFoundError:
        return None
    except FileRejected as rejected:
        return _reject_now(url, paths, path, rejected.as_error())

    shown = display_name(name)
    with transaction(url) as conn:
        # Serialises registrations of the same content across concurrent sensor ticks.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (sha,))
        original = importlog.original_import(conn, sha)
        if original is None:
            key = partition_key_for(sha, name)
            dest = _move_unchanged(path, paths.folder(PROCESSING), key, sha)
            if dest is None:
                return None
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


def content_hash(paths: UploadPaths, stored_name: str) -> str | None:
    """SHA-256 of a file of processing/; None when it is no longer there."""
    try:
        return _hash_regular_file(paths.folder(PROCESSING) / stored_name)
    except (FileNotFoundError, FileRejected):
        return None
