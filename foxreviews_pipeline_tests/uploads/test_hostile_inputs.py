"""Hostile and careless files: each ends in archive/ or rejected/ with a readable reason
(never stuck in processing/), the good rows of a file are still imported, and reading any
accepted file stays within a memory bound measured in a child process."""

from __future__ import annotations

import io
import random
import string
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import openpyxl

from foxreviews_pipeline_tests.uploads.conftest import SIRET_A, SIRET_B, SIRET_C, UploadEnv

MEMORY_BOUND = 200 * 1024 * 1024


def random_word(n: int, seed: int = 0) -> str:
    """Letters that do not compress: PostgreSQL compresses index entries before it measures
    them, so a repeated letter would not reach the btree limit."""
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def assert_nothing_left_behind(env: UploadEnv) -> None:
    assert env.files("incoming") == env.files("processing") == []


# --- whole-file content --------------------------------------------------------------------


def test_nul_byte_after_the_first_64_kb_rejects_the_file_with_its_place(env: UploadEnv):
    good = f"{SIRET_A},BOULANGERIE MARTIN\n"
    rows = good * (70_000 // len(good))
    content = ("siret,nom\n" + rows).encode() + f"{SIRET_B},PLOMBERIE\x00DUPONT\n".encode()
    assert content.index(b"\x00") > 64 * 1024
    env.drop("entreprises.csv", content)
    before = env.snapshot()

    registration, outcome = env.process("entreprises.csv")

    offset = content.index(b"\x00")
    line = content.count(b"\n", 0, offset) + 1
    reason = (
        f"the file holds a NUL byte at byte {offset:,} (line {line:,}): a CSV must be plain text"
    )
    assert [e.as_json() for e in outcome.errors] == [
        {"row": None, "column": None, "reason": reason, "code": "binary_content"}
    ]
    log = env.log(registration.log_id)
    assert (
        log["status"] == "ERROR" and log["stored_path"] == f"rejected/{registration.partition_key}"
    )
    stored = env.paths.root / log["stored_path"]
    assert reason in stored.with_name(stored.name + ".reason.txt").read_text()
    assert env.snapshot() == before
    assert_nothing_left_behind(env)


# --- JSON cells -----------------------------------------------------------------------------


def test_deeply_nested_json_cell_is_a_row_error_and_the_good_rows_import(env: UploadEnv):
    very_deep = "[" * 60_000 + "]" * 60_000  # longer than a cell may be
    deep = "[" * 3_000 + "]" * 3_000  # within the cell limit, deeper than Python's recursion
    env.drop(
        "villes.csv",
        "code_insee,nom,codes_postaux,population\n"
        '69123,Lyon,"[""69001"",""69002""]",522000\n'
        f"01053,Bourg-en-Bresse,{very_deep},41000\n"
        f"01053,Bourg-en-Bresse,{deep},41001\n",
    )
    _, outcome = env.process("villes.csv")

    assert outcome.status == "PARTIAL" and outcome.folder == "archive"
    assert [e.as_json() for e in outcome.errors] == [
        {
            "row": 3,
            "column": "codes_postaux",
            "reason": "the value is longer than 10,000 characters (the longest cell an upload may hold)",
            "code": "too_long",
        },
        {
            "row": 4,
            "column": "codes_postaux",
            "reason": 'codes_postaux nests JSON more than 2 levels deep: expected a flat list like ["69001","69002"]',
            "code": "invalid_value",
        },
    ]
    assert env.query("SELECT code_insee, population FROM location_ville ORDER BY code_insee") == [
        ("01053", 41000),
        ("69123", 522000),
    ]
    assert_nothing_left_behind(env)


# --- lengths against the columns' limits ------------------------------------------------------


def test_overlong_slug_and_names_are_row_errors_naming_the_limit(env: UploadEnv):
    long_slug = "-".join(random_word(9, seed) for seed in range(300))  # 2,999 characters
    long_nom = " ".join(random_word(9, seed) for seed in range(300)).title()
    env.drop(
        "categories.csv",
        f"nom,slug\nJardin,jardin\nJardinage,{long_slug}\n{long_nom},\n",
    )
    _, outcome = env.process("categories.csv")

    assert outcome.status == "PARTIAL", outcome.errors
    assert [e.as_json() for e in outcome.errors] == [
        {
            "row": 3,
            "column": "slug",
            "reason": f"slug is {len(long_slug):,} characters long; the limit for slug is 100",
            "code": "too_long",
        },
        {
            "row": 4,
            "column": "nom",
            "reason": f"nom is {len(long_nom):,} characters long; the limit for nom is 255",
            "code": "too_long",
        },
    ]
    assert env.query("SELECT slug FROM category_categorie ORDER BY slug") == [
        ("alimentation",),
        ("batiment",),
        ("jardin",),
    ]
    assert_nothing_left_behind(env)


def test_overlong_ville_and_entreprise_names_are_row_errors(env: UploadEnv):
    long_nom = " ".join(random_word(9, seed) for seed in range(300))
    env.drop(
        "villes.csv",
        f"code_insee,nom,region\n69123,Lyon,Auvergne-Rhône-Alpes\n75056,{long_nom},Île-de-France\n",
    )
    _, villes = env.process("villes.csv")
    assert villes.status == "PARTIAL"
    assert [(e.row, e.column, e.code) for e in villes.errors] == [(3, "nom", "too_long")]

    env.drop(
        "entreprises.csv",
        f"siret,nom,adresse\n{SIRET_A},BOULANGERIE MARTIN,1 rue X\n"
        f"{SIRET_B},PLOMBERIE DUPONT,{long_nom}\n",
    )
    _, entreprises = env.process("entreprises.csv")
    assert entreprises.status == "PARTIAL"
    assert [e.as_json() for e in entreprises.errors] == [
        {
            "row": 3,
            "column": "adresse",
            "reason": f"adresse is {len(long_nom):,} characters long; the limit for adresse is 500",
            "code": "too_long",
        }
    ]
    assert env.query("SELECT siret FROM enterprise_entreprise") == [(SIRET_A,)]


# --- .xlsx read in bounded memory -------------------------------------------------------------


def _xlsx_with_sheet(path: Path, sheet_xml_parts, shared_strings: bytes | None = None) -> None:
    """A real workbook (from openpyxl) whose first sheet is replaced by streamed XML."""
    workbook = openpyxl.Workbook()
    workbook.active.append(["x"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    with (
        zipfile.ZipFile(buffer) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for item in source.infolist():
            if item.filename == "xl/worksheets/sheet1.xml":
                continue
            if item.filename == "xl/sharedStrings.xml" and shared_strings is not None:
                target.writestr(item, shared_strings)
                continue
            target.writestr(item, source.read(item.filename))
        with target.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(
                b'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.'
                b'openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            )
            for part in sheet_xml_parts:
                sheet.write(part)
            sheet.write(b"</sheetData></worksheet>")


def _inline(ref: str, text: str) -> bytes:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'.encode()


def _read_in_child(path: Path) -> tuple[int, str]:
    """Peak RSS (bytes) of a fresh interpreter that reads `path`, and what it read."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from foxreviews_pipeline.lib.uploads.model import FileRejected
        from foxreviews_pipeline.lib.uploads.readers import read_table
        from foxreviews_pipeline.lib.uploads.specs import ALL_COLUMNS
        try:
            table = read_table(Path({str(path)!r}), ".xlsx", ALL_COLUMNS)
            lengths = [max(len(c or "") for c in cells) for _, cells in table.rows]
            outcome = f"{{len(table.rows)}} rows, header {{table.header}}, longest cell {{max(lengths)}}"
        except FileRejected as rejected:
            outcome = f"rejected {{rejected.code}}: {{rejected.reason}}"
        # VmHWM: this process's own peak. (ru_maxrss would carry the parent's peak over
        # the fork, i.e. that of the test session.)
        status = Path("/proc/self/status").read_text()
        print(int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM:"))) * 1024)
        print(outcome)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    peak, outcome = done.stdout.strip().split("\n", 1)
    return int(peak), outcome


def test_xlsx_with_cells_in_a_and_xfd_is_read_by_the_cells_present(env: UploadEnv, tmp_path: Path):
    rows = 3_000  # openpyxl's reader padded each row to 16,384 cells: ~400 MB for these
    path = tmp_path / "entreprises_wide.xlsx"
    parts = [_inline("A1", "siret") + _inline("XFD1", "nom")]
    parts += [
        f'<row r="{r}"><c r="A{r}"><v>{SIRET_A}</v></c>'.encode()
        + _inline(f"XFD{r}", f"NOM {r}")
        + b"</row>"
        for r in range(2, rows + 2)
    ]
    parts[0] = b'<row r="1">' + parts[0] + b"</row>"
    _xlsx_with_sheet(path, parts)
    assert path.stat().st_size < 200 * 1024

    peak, outcome = _read_in_child(path)
    assert outcome == f"{rows} rows, header ['siret', 'nom'], longest cell 14"
    assert peak < MEMORY_BOUND, f"peak RSS {peak / 1024 / 1024:.0f} MB"


def test_xlsx_cell_of_250_mb_is_cut_while_read_and_reported_as_a_row_error(
    env: UploadEnv, tmp_path: Path
):
    huge = 250 * 1024 * 1024

    def parts():
        yield b'<row r="1">' + _inline("A1", "siret") + _inline("B1", "nom") + b"</row>"
        yield b'<row r="2">' + _inline("A2", SIRET_A) + _inline("B2", "BOULANGERIE") + b"</row>"
        yield b'<row r="3">' + _inline("A3", SIRET_B) + b'<c r="B3" t="inlineStr"><is><t>'
        block = b"N" * (1024 * 1024)
        for _ in range(huge // len(block)):
            yield block
        yield b"</t></is></c></row>"
        yield b'<row r="4">' + _inline("A4", SIRET_C) + _inline("B4", "ELECTRICITE") + b"</row>"

    path = env.paths.folder("incoming") / "entreprises_huge_cell.xlsx"
    _xlsx_with_sheet(path, parts())
    assert path.stat().st_size < 512 * 1024

    peak, outcome = _read_in_child(path)
    assert outcome == "3 rows, header ['siret', 'nom'], longest cell 10001"
    assert peak < MEMORY_BOUND, f"peak RSS {peak / 1024 / 1024:.0f} MB"

    _, imported = env.process(path.name)
    assert imported.status == "PARTIAL"
    assert [e.as_json() for e in imported.errors] == [
        {
            "row": 3,
            "column": "nom",
            "reason": "the value is longer than 10,000 characters (the longest cell an upload may hold)",
            "code": "too_long",
        }
    ]
    assert env.query("SELECT siret, length(nom) FROM enterprise_entreprise ORDER BY siret") == [
        (SIRET_C, 11),
        (SIRET_A, 11),
    ]
    assert_nothing_left_behind(env)


def test_xlsx_with_a_huge_attribute_is_refused_without_buffering_it(env: UploadEnv, tmp_path: Path):
    def parts():
        yield b'<row r="1">' + _inline("A1", "siret") + _inline("B1", "nom") + b"</row>"
        yield b'<row r="2" x="'
        for _ in range(100):
            yield b">" * (1024 * 1024)
        yield b'"></row>'

    path = tmp_path / "entreprises_attribute.xlsx"
    _xlsx_with_sheet(path, parts())
    peak, outcome = _read_in_child(path)
    assert outcome == (
        "rejected unreadable_workbook: the workbook part xl/worksheets/sheet1.xml holds an XML "
        "element or comment of more than 4 MB"
    )
    assert peak < MEMORY_BOUND, f"peak RSS {peak / 1024 / 1024:.0f} MB"


def test_xlsx_with_shared_strings_and_a_formula_cached_value_imports(env: UploadEnv):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["SIRET", "Nom", "Code postal", "is_active", "Autre colonne"])
    sheet.append([SIRET_A, "BOULANGERIE MARTIN", "69001", True, "ignorée"])
    sheet.append([int(SIRET_B), "PLOMBERIE DUPONT", 1000, False, None])
    path = env.paths.folder("incoming") / "entreprises_shared.xlsx"
    workbook.save(path)
    _, outcome = env.process(path.name)
    assert outcome.status == "SUCCESS", outcome.errors
    assert "columns ignored (not entreprises columns): autre_colonne" in outcome.note
    assert env.query(
        "SELECT siret, nom, code_postal, is_active FROM enterprise_entreprise ORDER BY siret"
    ) == [
        (SIRET_B, "PLOMBERIE DUPONT", "01000", False),
        (SIRET_A, "BOULANGERIE MARTIN", "69001", True),
    ]
