"""The matrix of bad inputs: each file ends in rejected/ with a readable reason beside it,
an ERROR import-log row carrying the exact error, and no table touched."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest

from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, UploadEnv

HEADER = "siret,nom,code_postal,ville_nom,naf_code,is_active\n"
GOOD_ROW = f"{SIRET_A},BOULANGERIE MARTIN,69001,Lyon,10.71C,oui\n"


def xlsx_bytes(rows: list[list]) -> bytes:
    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def big_csv(size: int) -> bytes:
    line = GOOD_ROW.encode()
    return HEADER.encode() + line * (size // len(line) + 1)


@dataclass
class Case:
    id: str
    name: str
    content: bytes | str | Callable[[UploadEnv], None]
    code: str
    reason: str
    row: int | None = None
    column: str | None = None
    total_rows: int = 0
    file_type: str | None = "entreprises"
    # Errors beyond the first, for files whose every row is bad.
    more: tuple[tuple[int | None, str | None, str, str], ...] = ()


def _symlink(env: UploadEnv) -> None:
    target = env.paths.root.parent / "outside.csv"
    target.write_text(HEADER + GOOD_ROW)
    os.symlink(target, env.paths.folder("incoming") / "entreprises_link.csv")


OVER_10MB = big_csv(10 * 1024 * 1024 + 512 * 1024)

CASES = [
    Case(
        "wrong_extension",
        "entreprises.txt",
        HEADER + GOOD_ROW,
        "unsupported_extension",
        "unsupported file type (.txt); accepted: .csv, .xlsx, .xls",
    ),
    Case(
        "no_extension",
        "entreprises",
        HEADER + GOOD_ROW,
        "unsupported_extension",
        "unsupported file type (no extension); accepted: .csv, .xlsx, .xls",
    ),
    Case(
        "binary_renamed_csv",
        "entreprises.csv",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "content_mismatch",
        "the file is named .csv but its content is not text (it looks like: Portable Network Graphics file)",
    ),
    Case(
        "xlsx_not_a_zip",
        "entreprises.xlsx",
        HEADER + GOOD_ROW,
        "content_mismatch",
        "the file is named .xlsx but its content is not an Excel 2007+ workbook (not a ZIP archive)",
    ),
    Case(
        "xlsx_is_a_word_document",
        "entreprises.xlsx",
        zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"}),
        "content_mismatch",
        "the file is named .xlsx but is a Word document, not an Excel workbook (no xl/workbook.xml)",
    ),
    Case(
        "xls_that_is_an_xlsx",
        "entreprises.xls",
        xlsx_bytes([["siret", "nom"], [SIRET_A, "X"]]),
        "content_mismatch",
        "the file is named .xls but its content is not an Excel 97-2003 workbook "
        "(it is a ZIP archive: an .xlsx saved with the wrong extension?)",
    ),
    Case("empty_file", "entreprises.csv", b"", "empty_file", "the file is empty"),
    Case(
        "blank_lines_only",
        "entreprises.csv",
        "\n\n;;\n",
        "no_header",
        "the file has no header row (it holds no data at all)",
    ),
    Case(
        "header_only",
        "entreprises.csv",
        HEADER,
        "no_data_rows",
        "the file has a header row but no data rows",
    ),
    Case(
        "over_10_mb",
        "entreprises.csv",
        OVER_10MB,
        "file_too_large",
        f"the file is {len(OVER_10MB) / 1024 / 1024:.1f} MB; the limit is 10 MB",
    ),
    Case(
        "over_50000_rows",
        "entreprises.csv",
        HEADER + GOOD_ROW * 50_001,
        "too_many_rows",
        "the file has more than 50,000 data rows (limit 50,000)",
    ),
    Case(
        "unknown_import_type",
        "export_2026.csv",
        "reference,libelle\n1,abc\n",
        "unknown_import_type",
        "cannot tell what the file holds: start its name with entreprises, villes, categories or "
        "sous_categories, or use the column names of one of these types",
        file_type=None,
    ),
    Case(
        "missing_required_column",
        "entreprises.csv",
        f"siret,adresse\n{SIRET_A},1 rue X\n",
        "missing_column",
        "required column missing: nom (entreprises files need siret, nom)",
        column="nom",
        total_rows=1,
    ),
    Case(
        "duplicate_column",
        "entreprises.csv",
        f"siret,nom,siret\n{SIRET_A},X,{SIRET_A}\n",
        "duplicate_column",
        "the column siret appears twice in the header",
        column="siret",
        total_rows=1,
    ),
    Case(
        "duplicate_keys",
        "entreprises.csv",
        HEADER + GOOD_ROW + GOOD_ROW.replace("MARTIN", "DURAND"),
        "duplicate_key",
        f"siret {SIRET_A} appears on rows 2, 3: none of them is imported",
        row=2,
        column="siret",
        total_rows=2,
        more=(
            (
                3,
                "siret",
                f"siret {SIRET_A} appears on rows 2, 3: none of them is imported",
                "duplicate_key",
            ),
        ),
    ),
    Case(
        "invalid_siret_luhn",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace(SIRET_A, "73282932000075"),
        "invalid_value",
        "SIRET 73282932000075 fails its check digit (Luhn)",
        row=2,
        column="siret",
        total_rows=1,
    ),
    Case(
        "siret_too_short",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace(SIRET_A, SIRET_A[:-1]),
        "invalid_value",
        f"SIRET must be 14 digits, got '{SIRET_A[:-1]}'",
        row=2,
        column="siret",
        total_rows=1,
    ),
    Case(
        "siren_disagrees",
        "entreprises.csv",
        f"siret,siren,nom\n{SIRET_A},{SIRET_B[:9]},X\n",
        "invalid_value",
        f"SIREN {SIRET_B[:9]} does not match the SIRET (which starts with {SIRET_A[:9]})",
        row=2,
        column="siren",
        total_rows=1,
    ),
    Case(
        "invalid_postal_code",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace("69001", "6900"),
        "invalid_value",
        "postal code must be 5 digits, got '6900'",
        row=2,
        column="code_postal",
        total_rows=1,
    ),
    Case(
        "unknown_naf_code",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace("10.71C", "99.99Z"),
        "unknown_naf_code",
        "unknown NAF code 99.99Z (neither a NAF rév. 2 nor a NAF 2025 code)",
        row=2,
        column="naf_code",
        total_rows=1,
    ),
    Case(
        "malformed_naf_code",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace("10.71C", "boulangerie"),
        "invalid_value",
        "NAF code must look like 62.01Z, got 'boulangerie'",
        row=2,
        column="naf_code",
        total_rows=1,
    ),
    Case(
        "bad_is_active",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace("oui", "peut-être"),
        "invalid_value",
        "expected true/false, 1/0 or oui/non, got 'peut-être'",
        row=2,
        column="is_active",
        total_rows=1,
    ),
    Case(
        "empty_required_value",
        "entreprises.csv",
        HEADER + GOOD_ROW.replace("BOULANGERIE MARTIN", ""),
        "missing_value",
        "nom is required",
        row=2,
        column="nom",
        total_rows=1,
    ),
    Case(
        "undecodable_text",
        "entreprises.csv",
        HEADER.encode() + b"\x81\x8d\n",
        "bad_encoding",
        f"the file is neither UTF-8 nor Windows-1252 text (undecodable byte at offset {len(HEADER)})",
    ),
    Case(
        "unterminated_quote",
        "entreprises.csv",
        f'siret,nom\n{SIRET_A},"BOULANGERIE\n',
        "malformed_csv",
        "the CSV cannot be parsed near line 2: unexpected end of data",
    ),
    Case(
        "ville_bad_departement",
        "villes.csv",
        "nom,code_insee,departement,region\nAjaccio,2A004,20,Corse\n",
        "invalid_value",
        "département must be 01–95, 2A, 2B or 971–976, got '20'",
        row=2,
        column="departement",
        total_rows=1,
        file_type="villes",
    ),
    Case(
        "ville_unknown_without_code",
        "villes.csv",
        "nom,code_postal_principal,population\nAtlantis,99999,12\n",
        "ville_not_found",
        "no ville named Atlantis with postal code 99999: add its code_insee",
        row=2,
        column="nom",
        total_rows=1,
        file_type="villes",
    ),
    Case(
        "sous_categorie_unknown_parent",
        "sous_categories.csv",
        "nom,categorie\nCouvreur,Toiture\n",
        "unknown_categorie",
        "unknown categorie Toiture (no category with slug toiture)",
        row=2,
        column="categorie",
        total_rows=1,
        file_type="sous_categories",
    ),
    Case(
        "category_bad_slug",
        "categories.csv",
        "nom,slug\nJardin,Jardin Potager\n",
        "invalid_value",
        "a slug is lower-case letters, digits and single hyphens, got 'Jardin Potager'",
        row=2,
        column="slug",
        total_rows=1,
        file_type="categories",
    ),
    Case(
        "symlink_in_incoming",
        "entreprises_link.csv",
        _symlink,
        "symlink",
        "symbolic links are not accepted: copy the file itself into incoming/",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_rejected_whole(env: UploadEnv, case: Case):
    before = env.snapshot()
    if callable(case.content):
        case.content(env)
    else:
        env.drop(case.name, case.content)

    registration, outcome = env.process(case.name)

    log = env.log(registration.log_id)
    expected = [
        {"row": case.row, "column": case.column, "reason": case.reason, "code": case.code},
        *({"row": r, "column": c, "reason": why, "code": code} for r, c, why, code in case.more),
    ]
    assert log["errors"] == expected
    assert log["status"] == "ERROR"
    assert log["file_name"] == case.name
    assert log["file_type"] == case.file_type
    assert (log["total_rows"], log["success_rows"], log["error_rows"]) == (
        case.total_rows,
        0,
        case.total_rows,
    )
    assert log["completed_at"] is not None
    assert log["note"] == (
        case.reason
        if case.row is None
        else f"no row could be imported: {case.total_rows} of {case.total_rows} "
        f"row{'s' if case.total_rows > 1 else ''} rejected (see errors)"
    )

    # The file (or the link itself) is in rejected/, with its reason beside it; nothing else moved.
    stored = Path(env.paths.root / log["stored_path"])
    assert stored.parent == env.paths.folder("rejected")
    assert os.path.lexists(stored)
    assert env.files("incoming") == env.files("processing") == env.files("archive") == []
    reason_text = stored.with_name(stored.name + ".reason.txt").read_text(encoding="utf-8")
    assert case.reason in reason_text
    assert f"File: {case.name}" in reason_text
    if case.id == "symlink_in_incoming":
        assert stored.is_symlink()
        assert (env.paths.root.parent / "outside.csv").read_text() == HEADER + GOOD_ROW
    else:
        content = case.content.encode() if isinstance(case.content, str) else case.content
        assert stored.read_bytes() == content

    assert env.snapshot() == before
    if outcome is not None:
        assert outcome.status == "ERROR" and outcome.folder == "rejected"


def test_the_matrix_covers_at_least_twenty_bad_inputs():
    assert len(CASES) >= 20
