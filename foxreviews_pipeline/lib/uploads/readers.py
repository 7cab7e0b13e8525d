"""Readers for `.csv`, `.xlsx` and `.xls`: a header row and data rows of text cells.

Every reader stops after `max_rows` data rows (one more is read to tell that the limit was
passed), so a sheet claiming a million rows costs the time and memory of the limit, never
of the claim. Cells come out as stripped text or None; numbers typed into a spreadsheet
come out as `NumericText`, so that identifiers Excel stored as numbers can get their
leading zeros back.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

from foxreviews_pipeline.lib.uploads.model import MAX_ROWS, FileRejected

# Scanning past this many physical rows (blank ones included) stops a read even when few
# of them hold data, so that a sheet of a million formatted blank rows stays cheap.
MAX_PHYSICAL_ROWS = 4 * MAX_ROWS


class NumericText(str):
    """Text of a cell that the spreadsheet stored as a number."""


@dataclass
class Table:
    header: list[str | None]
    header_row: int
    rows: list[tuple[int, list[str | None]]]  # (row number as staff see it, cells)
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None


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


def _blank(cells: list[str | None]) -> bool:
    return all(c is None for c in cells)


def _collect(rows: Iterator[tuple[int, list[str | None]]], max_rows: int) -> Table:
    header: list[str | None] | None = None
    header_row = 0
    data: list[tuple[int, list[str | None]]] = []
    for number, cells in rows:
        if number > MAX_PHYSICAL_ROWS:
            raise FileRejected(
                "too_many_rows",
                f"the file has more than {max_rows:,} data rows (limit {max_rows:,})",
            )
        if _blank(cells):
            continue
        if header is None:
            header, header_row = cells, number
            continue
        data.append((number, cells))
        if len(data) > max_rows:
            raise FileRejected(
                "too_many_rows",
                f"the file has more than {max_rows:,} data rows (limit {max_rows:,})",
            )
    if header is None:
        raise FileRejected("no_header", "the file has no header row (it holds no data at all)")
    if not data:
        raise FileRejected("no_data_rows", "the file has a header row but no data rows")
    return Table(header=header, header_row=header_row, rows=data)


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

    def rows() -> Iterator[tuple[int, list[str | None]]]:
        try:
            for number, record in enumerate(reader, start=1):
                yield number, [_text(c) for c in record]
        except csv.Error as exc:
            raise FileRejected(
                "malformed_csv", f"the CSV cannot be parsed near line {reader.line_num}: {exc}"
            ) from None

    table = _collect(rows(), max_rows)
    table.encoding, table.delimiter = encoding, delimiter
    return table


# --- Excel ------------------------------------------------------------------------------


def read_xlsx(path: Path, max_rows: int = MAX_ROWS) -> Table:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # read_only streams the sheet XML row by row instead of building it in memory.
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError, TypeError) as exc:
        raise FileRejected(
            "unreadable_workbook", f"the workbook cannot be opened ({exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - malformed XML surfaces as many parser errors
        raise FileRejected(
            "unreadable_workbook", f"the workbook cannot be opened ({type(exc).__name__}: {exc})"
        ) from None
    try:
        if not workbook.worksheets:
            raise FileRejected("no_header", "the workbook has no worksheet")
        sheet = workbook.worksheets[0]
        # A false <dimension> would make openpyxl pad every row to the claimed width.
        sheet.reset_dimensions()

        def rows() -> Iterator[tuple[int, list[str | None]]]:
            try:
                for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    yield number, [_text(v) for v in values]
            except FileRejected:
                raise
            except Exception as exc:  # noqa: BLE001
                raise FileRejected(
                    "unreadable_workbook",
                    f"the worksheet cannot be read ({type(exc).__name__}: {exc})",
                ) from None

        table = _collect(rows(), max_rows)
        table.sheet = sheet.title
        return table
    finally:
        workbook.close()


def read_xls(path: Path, max_rows: int = MAX_ROWS) -> Table:
    import xlrd

    try:
        book = xlrd.open_workbook(path, on_demand=True)
    except Exception as exc:  # noqa: BLE001 - xlrd raises XLRDError, struct.error, …
        raise FileRejected(
            "unreadable_workbook", f"the .xls workbook cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    try:
        if book.nsheets == 0:
            raise FileRejected("no_header", "the workbook has no worksheet")
        sheet = book.sheet_by_index(0)

        def cell(c) -> str | None:
            if c.ctype == xlrd.XL_CELL_DATE:
                try:
                    return _text(xlrd.xldate.xldate_as_datetime(c.value, book.datemode))
                except (ValueError, OverflowError):
                    return _text(c.value)
            if c.ctype == xlrd.XL_CELL_BOOLEAN:
                return _text(bool(c.value))
            if c.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                return None
            return _text(c.value)

        def rows() -> Iterator[tuple[int, list[str | None]]]:
            for index in range(sheet.nrows):
                yield index + 1, [cell(c) for c in sheet.row(index)]

        table = _collect(rows(), max_rows)
        table.sheet = sheet.name
        return table
    finally:
        book.release_resources()


def read_table(path: Path, ext: str, known_columns: set[str], max_rows: int = MAX_ROWS) -> Table:
    if ext == ".csv":
        return read_csv(path, known_columns, max_rows)
    if ext == ".xlsx":
        return read_xlsx(path, max_rows)
    return read_xls(path, max_rows)
