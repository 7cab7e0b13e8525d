"""Writes the shipped NAF 2025 snapshots from the two published tables, as CSV files.

    .venv/bin/python scripts/import_naf2025.py SOUS_CLASSES.csv CORRESPONDENCE.csv

`SOUS_CLASSES.csv`: INSEE's NAF 2025 sous-classes (`code,libelle`); `CORRESPONDENCE.csv`:
INSEE's table NAF rév. 2 → NAF 2025 (`naf_rev2,naf2025`, one row per pair). The sources
and their vintage are in `foxreviews_pipeline/reference_data/README.md`. The pairs are
checked against both code lists before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from foxreviews_pipeline.lib.reference.naf import load_naf  # noqa: E402
from foxreviews_pipeline.lib.reference.snapshots import (  # noqa: E402
    NAF2025_CORRESPONDENCE_FILE,
    NAF2025_FILE,
    REFERENCE_DATA_DIR,
)
from scripts.reference_snapshots import (  # noqa: E402
    CORRESPONDENCE_HEADER,
    NAF_HEADER,
    build_naf2025,
    write_csv_gz,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sous_classes", type=Path)
    parser.add_argument("correspondence", type=Path)
    parser.add_argument("--out", type=Path, default=REFERENCE_DATA_DIR)
    args = parser.parse_args(argv)
    with args.sous_classes.open(encoding="utf-8", newline="") as f:
        codes = build_naf2025((row["code"], row["libelle"]) for row in csv.DictReader(f))
    with args.correspondence.open(encoding="utf-8", newline="") as f:
        pairs = sorted({(row["naf_rev2"], row["naf2025"]) for row in csv.DictReader(f)})
    rev2 = {c.code for c in load_naf()}
    naf2025 = {row[0] for row in codes}
    unknown = sorted({a for a, _ in pairs} - rev2) + sorted({b for _, b in pairs} - naf2025)
    if unknown:
        print(f"import_naf2025: codes outside the nomenclatures: {', '.join(unknown)}", file=sys.stderr)
        return 1
    write_csv_gz(args.out / NAF2025_FILE, NAF_HEADER, codes)
    write_csv_gz(args.out / NAF2025_CORRESPONDENCE_FILE, CORRESPONDENCE_HEADER, pairs)
    print(f"{NAF2025_FILE}: {len(codes)} codes; {NAF2025_CORRESPONDENCE_FILE}: {len(pairs)} pairs "
          f"({len({a for a, _ in pairs})} rév. 2 codes, {len({b for _, b in pairs})} NAF 2025 codes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
