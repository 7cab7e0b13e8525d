"""File-level checks of an upload: safe names, content hash, size, and content vs extension.

The extension says what staff meant; the magic bytes say what the file is. Both must agree
before any parser sees the content, so that a binary renamed `.csv` or a Word document
renamed `.xlsx` is rejected with a plain reason rather than half-parsed.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zipfile
from pathlib import Path

import puremagic

from foxreviews_pipeline.lib.uploads.model import MAX_BYTES, FileRejected

EXTENSIONS = (".csv", ".xlsx", ".xls")

OLE2_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
ZIP_MAGIC = b"PK\x03\x04"

# openpyxl reads workbook parts other than the sheet (shared strings, styles) whole; the
# sheet itself is streamed. Limits on the declared (uncompressed) sizes keep a zip bomb from
# being inflated at all.
MAX_XLSX_PART_BYTES = 64 * 1024 * 1024
MAX_XLSX_SHEET_BYTES = 256 * 1024 * 1024
MAX_XLSX_TOTAL_BYTES = 320 * 1024 * 1024

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


def safe_name(name: str) -> str:
    """A name that is safe anywhere: ASCII letters, digits, `.`, `_`, `-`; no `..`, no
    leading dot, no path separator; the extension kept (lower-cased)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    stem, dot, ext = folded.rpartition(".")
    if not dot:
        stem, ext = folded, ""
    stem = _SAFE_CHARS.sub("_", stem)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"_{2,}", "_", stem).strip("._-") or "upload"
    ext = _SAFE_CHARS.sub("", ext).lower()[:10]
    stem = stem[: _MAX_NAME - len(ext) - 1]
    return f"{stem}.{ext}" if ext else stem


def extension(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix


def content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def check_size(size: int) -> None:
    if size == 0:
        raise FileRejected("empty_file", "the file is empty")
    if size > MAX_BYTES:
        raise FileRejected(
            "file_too_large",
            f"the file is {size / 1024 / 1024:.1f} MB; the limit is {MAX_BYTES // 1024 // 1024} MB",
        )


def _magic_name(head: bytes) -> str | None:
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    best = max(matches, key=lambda m: m.confidence, default=None)
    if best is None or best.confidence < 0.5:
        return None
    return best.name or best.extension or None


# C0 control characters other than tab, line feed, form feed and carriage return: never
# in a text file, and PostgreSQL refuses NUL in text outright.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f]")


def _looks_like_text(head: bytes) -> bool:
    return _CONTROL.search(head) is None


_UTF8_BOM = b"\xef\xbb\xbf"


def text_format(head: bytes) -> str | None:
    """What a text file holds when it is plainly not a table: JSON, XML, HTML or RTF, told by
    its first character (after a BOM and blank space). JSON has no magic bytes, so the magic
    sniffing cannot say it; a CSV of ours starts with a column name, never `{`, `[` or `<`."""
    start = head[len(_UTF8_BOM) :] if head.startswith(_UTF8_BOM) else head
    start = start.lstrip(b" \t\r\n\x0c")
    if start.startswith(b"{\\rtf"):
        return "an RTF document"
    if start.startswith((b"{", b"[")):
        return "JSON"
    if start.startswith(b"<"):
        opening = start[:512].lower()
        if b"<html" in opening or opening.startswith(b"<!doctype html"):
            return "an HTML page"
        return "XML"
    return None


def check_text_content(path: Path) -> None:
    """The whole of a CSV is text: a NUL or another control byte anywhere (not only in the
    first 64 KB that the type check reads) rejects the file, naming where it is."""
    data = path.read_bytes()
    found = _CONTROL.search(data)
    if found is None:
        return
    offset = found.start()
    line = data.count(b"\n", 0, offset) + 1
    what = "a NUL byte" if data[offset] == 0 else f"the control character 0x{data[offset]:02X}"
    raise FileRejected(
        "binary_content",
        f"the file holds {what} at byte {offset:,} (line {line:,}): a CSV must be plain text",
    )


def sniff(path: Path, name: str) -> str:
    """Check that the content is what the extension of `name` says; return the extension.

    Raises `FileRejected` with a reason staff can act on.
    """
    ext = extension(name)
    if ext not in EXTENSIONS:
        shown = ext or "no extension"
        raise FileRejected(
            "unsupported_extension",
            f"unsupported file type ({shown}); accepted: .csv, .xlsx, .xls",
        )
    check_size(path.stat().st_size)
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)

    if ext == ".csv":
        if not _looks_like_text(head) or head.startswith((ZIP_MAGIC, OLE2_MAGIC)):
            detected = _magic_name(head)
            what = f" (it looks like: {detected})" if detected else ""
            raise FileRejected(
                "content_mismatch", f"the file is named .csv but its content is not text{what}"
            )
        other = text_format(head)
        if other is not None:
            raise FileRejected(
                "content_mismatch",
                f"the file is named .csv but its content is {other}, not CSV (a CSV starts with "
                "its header row, e.g. siret;nom): export the data as CSV or Excel",
            )
        check_text_content(path)
        return ext

    if ext == ".xlsx":
        if not head.startswith(ZIP_MAGIC):
            detected = text_format(head) or _magic_name(head)
            what = f" (it looks like: {detected})" if detected else ""
            raise FileRejected(
                "content_mismatch",
                f"the file is named .xlsx but its content is not an Excel 2007+ workbook (not a ZIP archive){what}",
            )
        check_xlsx_archive(path)
        return ext

    # .xls: the legacy BIFF format lives inside an OLE2 compound document.
    if not head.startswith(OLE2_MAGIC):
        hint = ""
        if head.startswith(ZIP_MAGIC):
            hint = " (it is a ZIP archive: an .xlsx saved with the wrong extension?)"
        elif _looks_like_text(head) and (other := text_format(head)) is not None:
            hint = f" (it is {other})"
        elif _looks_like_text(head):
            hint = " (it is text: a CSV saved with the wrong extension?)"
        raise FileRejected(
            "content_mismatch",
            f"the file is named .xls but its content is not an Excel 97-2003 workbook{hint}",
        )
    return ext


def check_xlsx_archive(path: Path) -> None:
    """The ZIP must hold a spreadsheet (`xl/workbook.xml`) and declare sizes that are safe to
    inflate: checked from the central directory, before anything is decompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FileRejected(
            "content_mismatch", f"the file is named .xlsx but is not a readable ZIP archive ({exc})"
        ) from None
    names = {info.filename for info in infos}
    if "xl/workbook.xml" not in names or "[Content_Types].xml" not in names:
        detected = "a Word document" if "word/document.xml" in names else "another ZIP archive"
        raise FileRejected(
            "content_mismatch",
            f"the file is named .xlsx but is {detected}, not an Excel workbook (no xl/workbook.xml)",
        )
    total = 0
    for info in infos:
        total += info.file_size
        is_sheet = info.filename.startswith("xl/worksheets/")
        limit = MAX_XLSX_SHEET_BYTES if is_sheet else MAX_XLSX_PART_BYTES
        if info.file_size > limit:
            raise FileRejected(
                "archive_too_large",
                f"the workbook part {info.filename} would inflate to {info.file_size // 1024 // 1024} MB "
                f"(limit {limit // 1024 // 1024} MB)",
            )
    if total > MAX_XLSX_TOTAL_BYTES:
        raise FileRejected(
            "archive_too_large",
            f"the workbook would inflate to {total // 1024 // 1024} MB "
            f"(limit {MAX_XLSX_TOTAL_BYTES // 1024 // 1024} MB)",
        )
