"""Where the shipped reference snapshots are, and how to read them.

They are built from their upstream packages by `scripts/regenerate_reference_data.py` and
`scripts/import_naf2025.py` (the building code: `scripts/reference_snapshots.py`).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

REFERENCE_DATA_DIR = Path(__file__).resolve().parents[2] / "reference_data"

COMMUNES_FILE = "communes.csv.gz"
ALIASES_FILE = "commune_aliases.csv.gz"
NAF_FILE = "naf_rev2.csv.gz"
# NAF 2025 and INSEE's correspondence from rév. 2: shipped as transcribed (README there);
# the regeneration script does not build them, as no package carries them.
NAF2025_FILE = "naf2025.csv.gz"
NAF2025_CORRESPONDENCE_FILE = "naf_rev2_naf2025.csv.gz"
README_FILE = "README.md"


def read_csv_gz(path: Path) -> list[dict[str, str]]:
    """The rows of a gzip'd UTF-8 CSV with a header row, as dicts."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
