"""Readers for `.csv`, `.xlsx` and `.xls`: a header row and data rows of text cells.

Memory is bounded by what the file really holds, never by what it claims (docs/uploads.md,
"Limits"):
- every reader stops after `max_rows` data rows (one more is read to tell that the limit was
  passed), and after reading `MAX_PHYSICAL_ROWS` rows blank ones included (rows present in
  the file: the row numbers an .xlsx gives, and the dimension it declares, are not counts);
- only the columns whose header is a known column name are kept (the others are only
  named), at most `MAX_COLUMNS` of them, so a row with a cell in column XFD costs one cell;
- a cell keeps at most `MAX_CELL_CHARS + 1` characters (validation reports it as too long);
- the text kept for the whole file is capped (`MAX_KEPT_BYTES`).

Cells come out as stripped text or None; numbers typed into a spreadsheet come out as
`NumericText`, so that identifiers Excel stored as numbers can get their leading zeros back.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
import sys
import unicodedata
import zipfile
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any
from xml.parsers import expat

from foxreviews_pipeline.lib.uploads.model import (
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    MAX_ROWS,
    FileRejected,
)

# Scanning past this many physical rows (blank ones included) stops a read even when few
# of them hold data, so that a sheet of a million formatted blank rows stays cheap.
MAX_PHYSICAL_ROWS = 4 * MAX_ROWS
# Memory held by the kept cells of a file (Python objects, as sys.getsizeof counts them).
# A full legitimate file (50,000 rows of the ~13 columns of a type) needs about half.
MAX_KEPT_BYTES = 80 * 1024 * 1024


class NumericText(str):
    """Text of a cell that the spreadsheet stored as a number."""


Cells = dict[int, str]  # column index (0-based) → non-empty cell text


@dataclass
class Table:
    header: list[str | None]
    header_row: int
    rows: list[tuple[int, list[str | None]]]  # (row number as staff see it, cells)
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    # Header names (normalised) of the columns that were not kept: no import type has them.
    extra_columns: list[str] = field(default_factory=list)


def normalise_header(value: str | None) -> str:
    """`Code postal` → `code_postal`, `Catégorie` → `categorie`, `SIRET ` → `siret`."""
    if value is None:
        return ""
    text = unicodedata.normalize("NFKD", str(value).replace("\ufeff", ""))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return NumericText(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return NumericText(int(value))
        return NumericText(repr(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time)):
        return value.isoformat()
    text = str(value).strip()
    return text or None


def _too_many_rows(max_rows: int) -> FileRejected:
    return FileRejected(
        "too_many_rows", f"the file has more than {max_rows:,} data rows (limit {max_rows:,})"
    )


def _collect(rows: Iterator[tuple[int, Cells]], max_rows: int, known_columns: set[str]) -> Table:
    header: list[str | None] | None = None
    keep: list[int] = []
    extra: list[str] = []
    header_row = 0
    kept_bytes = 0
    data: list[tuple[int, list[str | None]]] = []
    scanned = 0
    for number, cells in rows:
        # Rows the reader really met, not the row number: an .xlsx numbers its rows itself
        # (`<row r="1048576">` after row 2 is one row, not a million), and its declared
        # dimension (A1:XFD1048576 once a cell far away was formatted) is never read.
        scanned += 1
        if scanned > MAX_PHYSICAL_ROWS:
            raise FileRejected(
                "too_many_rows",
                f"the file has more than {MAX_PHYSICAL_ROWS:,} rows, blank or formatted ones "
                f"included ({len(data):,} of them with data; the limit is {max_rows:,} data "
                "rows): remove the empty rows or split it",
            )
        if not cells:
            continue
        if header is None:
            names = {i: normalise_header(v) for i, v in cells.items()}
            keep = sorted(i for i, name in names.items() if name in known_columns)
            if len(keep) > MAX_COLUMNS:
                raise FileRejected(
                    "too_many_columns",
                    f"the header row has {len(keep):,} columns named like upload columns "
                    f"(at most {MAX_COLUMNS})",
                )
            header, header_row = [cells[i] for i in keep], number
            extra = [names[i] for i in sorted(names) if i not in keep and names[i]]
            continue
        kept = [cells.get(i) for i in keep]
        kept_bytes += sum(sys.getsizeof(c) for c in kept if c is not None)
        if kept_bytes > MAX_KEPT_BYTES:
            raise FileRejected(
                "too_much_text",
                f"the file holds more text than an upload may (over "
                f"{MAX_KEPT_BYTES // 1024 // 1024} MB once read, by row {number}): split it",
            )
        data.append((number, kept))
        if len(data) > max_rows:
            raise _too_many_rows(max_rows)
    if header is None:
        raise FileRejected("no_header", "the file has no header row (it holds no data at all)")
    if not data:
        raise FileRejected("no_data_rows", "the file has a header row but no data rows")
    return Table(header=header, header_row=header_row, rows=data, extra_columns=extra[:50])


def _cells(values: Iterable[object]) -> Cells:
    cells: Cells = {}
    for i, value in enumerate(values):
        text = _text(value)
        if text is not None:
            cells[i] = text
    return cells


# --- CSV --------------------------------------------------------------------------------

ENCODINGS = ("utf-8-sig", "cp1252")


def decode(raw: bytes) -> tuple[str, str]:
    """Text and the encoding it was in: UTF-8 (with or without BOM), else Windows-1252."""
    if raw.startswith(b"\xef\xbb\xbf"):
        try:
            return raw[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            pass
    else:
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as exc:
        raise FileRejected(
            "bad_encoding",
            f"the file is neither UTF-8 nor Windows-1252 text (undecodable byte at offset {exc.start})",
        ) from None


def choose_delimiter(text: str, known_columns: set[str]) -> str:
    """`;` or `,`: the one that splits the header into more known column names; on a tie
    (or no known name) the one the csv module's sniffer finds, else the commoner one."""
    first = text.split("\n", 1)[0]

    def score(delimiter: str) -> int:
        cells = next(csv.reader([first], delimiter=delimiter), [])
        return sum(1 for c in cells if normalise_header(c) in known_columns)

    semicolon, comma = score(";"), score(",")
    if semicolon != comma:
        return ";" if semicolon > comma else ","
    try:
        return csv.Sniffer().sniff(text[:16384], delimiters=";,").delimiter
    except csv.Error:
        return ";" if first.count(";") > first.count(",") else ","


def read_csv(path: Path, known_columns: set[str], max_rows: int = MAX_ROWS) -> Table:
    text, encoding = decode(path.read_bytes())
    delimiter = choose_delimiter(text, known_columns)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    del text

    def rows() -> Iterator[tuple[int, Cells]]:
        try:
            for number, record in enumerate(reader, start=1):
                yield number, _cells(record)
        except csv.Error as exc:
            raise FileRejected(
                "malformed_csv", f"the CSV cannot be parsed near line {reader.line_num}: {exc}"
            ) from None

    table = _collect(rows(), max_rows, known_columns)
    table.encoding, table.delimiter = encoding, delimiter
    return table


# --- .xlsx --------------------------------------------------------------------------------
#
# Read with the standard library's expat, streamed from the ZIP, instead of openpyxl:
# openpyxl pads every row to the width of its widest cell (a row with cells in A and XFD
# costs 16,384 cells), loads the whole shared-string table and every text node whole. Here
# only the cells present are seen, text is cut at the cell limit while it streams, and an
# XML token that would make expat buffer more than `MAX_XML_TOKEN_BYTES` stops the read.

MAX_XML_TOKEN_BYTES = 4 * 1024 * 1024
MAX_SHARED_STRINGS = 2_000_000
MAX_SHARED_TEXT_BYTES = 32 * 1024 * 1024
_CHUNK = 64 * 1024
_MAX_COLUMN_INDEX = 16_384  # XFD
_CELL_REF = re.compile(r"([A-Za-z]{1,3})[0-9]*")
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _unreadable(reason: str) -> FileRejected:
    return FileRejected("unreadable_workbook", reason)


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _column_index(ref: str) -> int | None:
    match = _CELL_REF.fullmatch(ref)
    if not match:
        return None
    index = 0
    for letter in match.group(1).upper():
        index = index * 26 + ord(letter) - 64
    return index - 1 if index <= _MAX_COLUMN_INDEX else None


class _Capped:
    """Character data of one value, kept up to `MAX_CELL_CHARS + 1` characters."""

    __slots__ = ("length", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0

    def add(self, data: str) -> None:
        room = MAX_CELL_CHARS + 1 - self.length
        if room > 0:
            piece = data[:room]
            self.parts.append(piece)
            self.length += len(piece)

    def text(self) -> str:
        return "".join(self.parts)


class _Stream:
    """Feeds a ZIP member to an expat parser in chunks, refusing documents that declare a
    DTD (no entity tricks) or hold a token expat would have to buffer whole."""

    def __init__(self, part: str):
        self.part = part
        self.parser = expat.ParserCreate(namespace_separator="}")
        self.parser.StartDoctypeDeclHandler = self._doctype
        self.fed = 0
        self.last_event = 0

    def _doctype(self, *_args: object) -> None:
        raise _unreadable(f"the workbook part {self.part} declares a DTD, which Excel never writes")

    def mark(self) -> None:
        self.last_event = self.parser.CurrentByteIndex

    def feed(self, handle: IO[bytes]) -> Iterator[None]:
        """Parse the member; yields after each chunk so the caller can hand out rows."""
        try:
            while True:
                chunk = handle.read(_CHUNK)
                self.parser.Parse(chunk, not chunk)
                self.fed += len(chunk)
                if self.fed - self.last_event > MAX_XML_TOKEN_BYTES:
                    raise _unreadable(
                        f"the workbook part {self.part} holds an XML element or comment of more "
                        f"than {MAX_XML_TOKEN_BYTES // 1024 // 1024} MB"
                    )
                yield
                if not chunk:
                    return
        except expat.ExpatError as exc:
            raise _unreadable(
                f"the workbook part {self.part} is not valid XML ({expat.ErrorString(exc.code)} "
                f"at line {exc.lineno})"
            ) from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise _unreadable(f"the workbook part {self.part} cannot be inflated ({exc})") from None


class _SharedStrings:
    """The shared-string table as one UTF-8 buffer and offsets: a few bytes per string
    instead of a Python object each."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.offsets = array("I", [0])

    def append(self, text: str) -> None:
        self.buffer += text.encode("utf-8")
        if len(self.buffer) > MAX_SHARED_TEXT_BYTES or len(self.offsets) > MAX_SHARED_STRINGS:
            raise FileRejected(
                "too_much_text",
                f"the workbook's shared strings exceed {MAX_SHARED_STRINGS:,} strings or "
                f"{MAX_SHARED_TEXT_BYTES // 1024 // 1024} MB of text",
            )
        self.offsets.append(len(self.buffer))

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self.offsets) - 1:
            raise _unreadable(f"a cell refers to shared string #{index}, which does not exist")
        return self.buffer[self.offsets[index] : self.offsets[index + 1]].decode("utf-8")


def _read_shared_strings(archive: zipfile.ZipFile, part: str | None) -> _SharedStrings:
    table = _SharedStrings()
    if part is None:
        return table
    stream = _Stream(part)
    state = {"si": False, "rph": 0, "capture": False}
    current: list[_Capped] = []

    def start(name: str, _attrs: dict[str, str]) -> None:
        stream.mark()
        local = _local(name)
        if local == "si":
            state["si"] = True
            current[:] = [_Capped()]
        elif local == "rPh":
            state["rph"] += 1
        elif local == "t" and state["si"] and not state["rph"]:
            state["capture"] = True

    def end(name: str) -> None:
        stream.mark()
        local = _local(name)
        if local == "t":
            state["capture"] = False
        elif local == "rPh":
            state["rph"] -= 1
        elif local == "si":
            state["si"] = False
            table.append(current[0].text())

    def chars(data: str) -> None:
        stream.mark()
        if state["capture"]:
            current[0].add(data)

    stream.parser.StartElementHandler = start
    stream.parser.EndElementHandler = end
    stream.parser.CharacterDataHandler = chars
    with archive.open(part) as handle:
        for _ in stream.feed(handle):
            pass
    return table


def _cell_value(kind: str, raw: str | None, shared: _SharedStrings) -> str | None:
    if raw is None:
        return None
    if kind == "s":
        try:
            return _text(shared[int(raw)])
        except ValueError:
            raise _unreadable(f"a shared-string cell holds {raw[:20]!r}, not an index") from None
    if kind == "b":
        return _text(raw.strip() == "1")
    if kind == "e":
        return None  # #N/A, #DIV/0!…: no value
    if kind in ("inlineStr", "str", "d"):
        return _text(raw)
    number = raw.strip()
    if _INTEGER.fullmatch(number):
        return _text(int(number))
    try:
        return _text(float(number))
    except ValueError:
        return _text(raw)


def _sheet_rows(
    archive: zipfile.ZipFile, part: str, shared: _SharedStrings
) -> Iterator[tuple[int, Cells]]:
    stream = _Stream(part)
    ready: list[tuple[int, Cells]] = []
    state: dict[str, Any] = {"row": 0, "cells": None, "col": -1, "kind": "n", "is": False, "rph": 0}
    value: list[_Capped | None] = [None]

    def start(name: str, attrs: dict[str, str]) -> None:
        stream.mark()
        local = _local(name)
        if local == "row":
            ref = attrs.get("r", "")
            state["row"] = int(ref) if ref.isdigit() and len(ref) < 9 else state["row"] + 1
            state["cells"], state["col"] = {}, -1
        elif local == "c":
            cell_ref = attrs.get("r")
            col = _column_index(cell_ref) if cell_ref else state["col"] + 1
            if col is None or col >= _MAX_COLUMN_INDEX:
                raise _unreadable(f"row {state['row']} has a cell outside the sheet ({cell_ref!r})")
            state["col"], state["kind"] = col, attrs.get("t", "n")
            value[0] = None
        elif local == "v" or (local == "t" and state["is"] and not state["rph"]):
            if value[0] is None:
                value[0] = _Capped()
            state["capture"] = True
        elif local == "is":
            state["is"] = True
        elif local == "rPh":
            state["rph"] += 1

    def end(name: str) -> None:
        stream.mark()
        local = _local(name)
        if local in ("v", "t"):
            state["capture"] = False
        elif local == "is":
            state["is"] = False
        elif local == "rPh":
            state["rph"] -= 1
        elif local == "c":
            raw = value[0].text() if value[0] is not None else None
            text = _cell_value(state["kind"], raw, shared)
            if text is not None and state["cells"] is not None:
                state["cells"][state["col"]] = text
            value[0] = None
        elif local == "row":
            ready.append((state["row"], state["cells"] or {}))
            state["cells"] = None

    def chars(data: str) -> None:
        stream.mark()
        if state.get("capture") and value[0] is not None:
            value[0].add(data)

    stream.parser.StartElementHandler = start
    stream.parser.EndElementHandler = end
    stream.parser.CharacterDataHandler = chars
    with archive.open(part) as handle:
        for _ in stream.feed(handle):
            yield from ready
            ready.clear()


def _small_xml(
    archive: zipfile.ZipFile, part: str, on_start: Callable[[str, dict[str, str]], None]
) -> None:
    stream = _Stream(part)

    def start(name: str, attrs: dict[str, str]) -> None:
        stream.mark()
        on_start(_local(name), attrs)

    stream.parser.StartElementHandler = start
    stream.parser.EndElementHandler = lambda _name: stream.mark()
    stream.parser.CharacterDataHandler = lambda _data: stream.mark()
    with archive.open(part) as handle:
        for _ in stream.feed(handle):
            pass


def _workbook_parts(archive: zipfile.ZipFile) -> tuple[str, str, str | None]:
    """(first sheet's part, its name, the shared-string part or None)."""
    sheets: list[tuple[str, str]] = []

    def on_sheet(local: str, attrs: dict[str, str]) -> None:
        if local == "sheet":
            rel = next((v for k, v in attrs.items() if _local(k) == "id"), None)
            sheets.append((attrs.get("name", ""), rel or ""))

    _small_xml(archive, "xl/workbook.xml", on_sheet)
    if not sheets:
        raise FileRejected("no_header", "the workbook has no worksheet")
    targets: dict[str, str] = {}
    shared: list[str] = []

    def on_rel(local: str, attrs: dict[str, str]) -> None:
        if local == "Relationship":
            target = attrs.get("Target", "")
            path = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
            path = posixpath.normpath(path)
            targets[attrs.get("Id", "")] = path
            if attrs.get("Type", "").endswith("/sharedStrings"):
                shared.append(path)

    names = set(archive.namelist())
    if "xl/_rels/workbook.xml.rels" in names:
        _small_xml(archive, "xl/_rels/workbook.xml.rels", on_rel)
    name, rel = sheets[0]
    part = targets.get(rel) or "xl/worksheets/sheet1.xml"
    if part not in names:
        raise _unreadable(f"the first worksheet ({name or rel}) is missing from the workbook")
    shared_part = shared[0] if shared and shared[0] in names else None
    if shared_part is None and "xl/sharedStrings.xml" in names:
        shared_part = "xl/sharedStrings.xml"
    return part, name, shared_part


def read_xlsx(path: Path, known_columns: set[str], max_rows: int = MAX_ROWS) -> Table:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _unreadable(f"the workbook cannot be opened ({exc})") from None
    with archive:
        part, name, shared_part = _workbook_parts(archive)
        shared = _read_shared_strings(archive, shared_part)
        table = _collect(_sheet_rows(archive, part, shared), max_rows, known_columns)
        table.sheet = name
        return table


# --- .xls -----------------------------------------------------------------------------------


def read_xls(path: Path, known_columns: set[str], max_rows: int = MAX_ROWS) -> Table:
    import xlrd

    try:
        # ragged_rows: a row is as long as its last cell, not padded to the sheet's width.
        book = xlrd.open_workbook(str(path), on_demand=True, ragged_rows=True)
    except Exception as exc:  # noqa: BLE001 - xlrd raises XLRDError, struct.error, …
        raise FileRejected(
            "unreadable_workbook", f"the .xls workbook cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    try:
        if book.nsheets == 0:
            raise FileRejected("no_header", "the workbook has no worksheet")
        sheet = book.sheet_by_index(0)

        def cell(c: xlrd.sheet.Cell) -> object:
            # A date cell holds its serial number, a float.
            if c.ctype == xlrd.XL_CELL_DATE and isinstance(c.value, float):
                try:
                    return xlrd.xldate.xldate_as_datetime(c.value, book.datemode)
                except (ValueError, OverflowError):
                    return c.value
            if c.ctype == xlrd.XL_CELL_BOOLEAN:
                return bool(c.value)
            if c.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                return None
            if isinstance(c.value, str) and len(c.value) > MAX_CELL_CHARS + 1:
                return c.value[: MAX_CELL_CHARS + 1]
            return c.value

        def rows() -> Iterator[tuple[int, Cells]]:
            for index in range(sheet.nrows):
                yield index + 1, _cells(cell(c) for c in sheet.row(index))

        table = _collect(rows(), max_rows, known_columns)
        table.sheet = sheet.name
        return table
    finally:
        book.release_resources()


def read_table(path: Path, ext: str, known_columns: set[str], max_rows: int = MAX_ROWS) -> Table:
    if ext == ".csv":
        return read_csv(path, known_columns, max_rows)
    if ext == ".xlsx":
        return read_xlsx(path, known_columns, max_rows)
    return read_xls(path, known_columns, max_rows)
