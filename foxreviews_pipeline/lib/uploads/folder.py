"""The upload folder: `incoming/` → `processing/` → `archive/` or `rejected/`.

Files are only ever renamed within the folder (never copied, never overwritten, never
deleted); a name already taken gets a `-1`, `-2`… suffix. Every stored name is a safe name
(`files.safe_name`), so nothing a member of staff types can point outside the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from foxreviews_pipeline.lib.uploads.model import RowError

INCOMING, PROCESSING, ARCHIVE, REJECTED = "incoming", "processing", "archive", "rejected"
FOLDERS = (INCOMING, PROCESSING, ARCHIVE, REJECTED)

# A .reason.txt lists at most this many row errors; the import log has them all.
MAX_REASON_LINES = 200


@dataclass(frozen=True)
class UploadPaths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ensure(self) -> None:
        for name in FOLDERS:
            self.folder(name)

    def not_a_folder(self) -> str | None:
        """A file (or a link to one) where the upload folder or one of its four folders
        should be, named; None otherwise. Looks only: it is reported, never replaced, since
        it may be a mistake staff want to undo."""
        for path in (self.root, *(self.root / name for name in FOLDERS)):
            if os.path.lexists(path) and not path.is_dir():
                what = "a symbolic link" if path.is_symlink() else "a file"
                return f"{path} is {what}, not a folder"
        return None

    def unusable(self) -> str | None:
        """Why the upload folder cannot be used, naming the path; None when it can (its four
        folders are then created if missing)."""
        problem = self.not_a_folder()
        if problem:
            return problem
        try:
            self.ensure()
        except OSError as exc:
            where = exc.filename if exc.filename is not None else self.root
            return f"the upload folder cannot be created at {where}: {exc.strerror or exc}"
        return None

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def locate(self, stored_name: str) -> Path | None:
        """Where a stored file is now: processing/ first, then archive/, then rejected/."""
        if "/" in stored_name or stored_name in ("", ".", ".."):
            return None
        for name in (PROCESSING, ARCHIVE, REJECTED):
            candidate = self.root / name / stored_name
            if os.path.lexists(candidate):
                return candidate
        return None


def display_name(name: str) -> str:
    """A file name as text PostgreSQL and JSON accept (undecodable bytes shown as escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def move_no_clobber(source: Path, folder: Path, name: str) -> Path:
    """Rename `source` into `folder` as `name` (or `name-1`, …): never replaces a file.
    A symbolic link is moved as a link, never followed."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for attempt in range(10_000):
        candidate = name if attempt == 0 else f"{stem}-{attempt}{'.' + ext if ext else ''}"
        target = folder / candidate
        if os.path.lexists(target):
            continue
        os.rename(source, target)
        return target
    raise FileExistsError(f"no free name for {name} in {folder}")


def write_reason(
    rejected_file: Path,
    *,
    original_name: str,
    errors: list[RowError],
    log_id: int | None,
    summary: str,
    advice: str = "Nothing from this file was written. Fix it and drop it into incoming/ again.",
) -> Path:
    """`<stored name>.reason.txt` beside a rejected file, for staff to read."""
    lines = [
        f"File: {original_name}",
        f"Stored as: {rejected_file.name}",
        f"Rejected at: {datetime.now(UTC).astimezone().isoformat(timespec='seconds')}",
    ]
    if log_id is not None:
        lines.append(f"Import log: #{log_id}")
    lines += ["", summary, ""]
    if errors:
        lines.append("Reasons:")
        lines += [f"  - {error}" for error in errors[:MAX_REASON_LINES]]
        if len(errors) > MAX_REASON_LINES:
            lines.append(
                f"  … and {len(errors) - MAX_REASON_LINES} more (all are in the import log)"
            )
        lines.append("")
    lines.append(advice)
    path = rejected_file.with_name(rejected_file.name + ".reason.txt")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
