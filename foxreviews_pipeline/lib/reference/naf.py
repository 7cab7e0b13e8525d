"""The NAF rév. 2 nomenclature (732 sous-classes) as shipped in `naf_rev2.csv.gz`."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from foxreviews_pipeline.lib.reference.snapshots import NAF_FILE, REFERENCE_DATA_DIR, read_csv_gz

NAF_REV2 = "NAFRev2"


@dataclass(frozen=True)
class NafCode:
    code: str
    libelle: str
    section: str
    division: str
    groupe: str
    classe: str


def load_naf(path: Path | None = None) -> list[NafCode]:
    """The sous-classes, sorted by code."""
    if path is None:
        return list(_shipped())
    return [NafCode(**row) for row in read_csv_gz(path)]


@functools.cache
def _shipped() -> tuple[NafCode, ...]:
    return tuple(load_naf(REFERENCE_DATA_DIR / NAF_FILE))

