"""Streaming reader of INSEE's StockEtablissement file: a day out of the stock (the `stock`
source of `etablissements_raw`). A backfill does not read the file here: it stages it in
PostgreSQL (`stock_staging.py`), whose opener this reader shares.

The file comes as CSV inside a zip (~1.2 GB zipped, ~9 GB plain), plain or gzipped CSV, or
Parquet.
Columns are read by name, so the 54-column layout (2024+) and the older 48-column one both
work; every value is read as text, so identifiers keep their leading zeros. The file is read
block by block with `pyarrow.csv.open_csv` (or Parquet row groups), so memory stays bounded
whatever the file size.

The stock has no legal-unit names. They come from StockUniteLegale, joined on siren: only
the sirens present in the establishment file are kept, as Arrow columns indexed by a sorted
int64 array (a 4-million-establishment file needs tens of MB, not a dict of Python tuples).

Blocks are handed over as Arrow batches of `mapping.FLAT_FIELDS` columns, which
`mapping.map_table` maps with exactly the rules used for API records.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from foxreviews_pipeline.lib.sirene import fields
from foxreviews_pipeline.lib.sirene.mapping import FLAT_FIELDS, UNITE_LEGALE_NAME_FIELDS
from foxreviews_pipeline.lib.sirene.stock_staging import (
    MAX_UNMATCHED_SHARE,
    StockFileError,
    check_headers,
    is_parquet,
    open_csv,
    read_header,
)

if TYPE_CHECKING:
    from foxreviews_pipeline.lib.sirene.sources import FetchedDay

# The file's header (2024+): the top-level fields with NAF25 moved to the end, both
# addresses, then the current period.
STOCK_ETABLISSEMENT_COLUMNS: tuple[str, ...] = (
    *(f for f in fields.ETABLISSEMENT if f != "activitePrincipaleNAF25Etablissement"),
    *fields.ADRESSE,
    *fields.ADRESSE2,
    *fields.CURRENT_PERIODE,
    "activitePrincipaleNAF25Etablissement",
)

# The columns files published before 2024 do not have.
COLUMNS_ADDED_IN_2024: frozenset[str] = frozenset(
    {
        "dernierNumeroVoieEtablissement",
        "indiceRepetitionDernierNumeroVoieEtablissement",
        "identifiantAdresseEtablissement",
        "coordonneeLambertAbscisseEtablissement",
        "coordonneeLambertOrdonneeEtablissement",
        "activitePrincipaleNAF25Etablissement",
    }
)
STOCK_ETABLISSEMENT_COLUMNS_48: tuple[str, ...] = tuple(
    c for c in STOCK_ETABLISSEMENT_COLUMNS if c not in COLUMNS_ADDED_IN_2024
)
LAYOUTS: dict[int, tuple[str, ...]] = {
    54: STOCK_ETABLISSEMENT_COLUMNS,
    48: STOCK_ETABLISSEMENT_COLUMNS_48,
}

STOCK_UNITE_LEGALE_COLUMNS: tuple[str, ...] = fields.STOCK_UNITE_LEGALE

# What the join brings from StockUniteLegale: the names the mapping uses, plus the sigle and
# the legal category for callers that want them.
UNITE_LEGALE_JOIN_COLUMNS: tuple[str, ...] = (
    *UNITE_LEGALE_NAME_FIELDS,
    "sigleUniteLegale",
    "categorieJuridiqueUniteLegale",
)

ETABLISSEMENT_FIELDS: tuple[str, ...] = tuple(
    f for f in FLAT_FIELDS if f not in UNITE_LEGALE_NAME_FIELDS
)

# 4 MiB of CSV per block: about 12,000 rows. Larger blocks are no faster, and pyarrow's
# parallel read-ahead plus the Python objects of a block grow with it (16 MiB → +250 MB peak).
DEFAULT_BLOCK_SIZE = 4 << 20


def iter_batches(
    path: str | Path,
    columns: Sequence[str],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[pa.RecordBatch]:
    """Stream `columns` of a SIRENE stock file (CSV, zipped CSV, or Parquet) as string batches.

    Columns the file does not have come back as all-null (e.g. NAF25 in a 48-column file).
    """
    path = Path(path)
    wanted = list(dict.fromkeys(columns))
    if is_parquet(path):
        yield from _iter_parquet(path, wanted, block_size)
        return
    with open_csv(path) as stream:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block_size, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(
                include_columns=wanted,
                include_missing_columns=True,
                column_types={c: pa.string() for c in wanted},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
        for batch in reader:
            if batch.num_rows:
                yield batch


def _iter_parquet(path: Path, wanted: list[str], block_size: int) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(path) as pf:
        present = set(pf.schema_arrow.names)
        read = [c for c in wanted if c in present]
        # Parquet batches are counted in rows; ~300 bytes a stock row.
        batch_rows = max(1024, block_size // 300)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=read):
            if not batch.num_rows:
                continue
            arrays = []
            for name in wanted:
                if name in present:
                    col = batch.column(name)
                    # INSEE's Parquet types dates, booleans and counts; the mapping reads text.
                    arrays.append(col if col.type == pa.string() else pc.cast(col, pa.string()))
                else:
                    arrays.append(pa.nulls(batch.num_rows, pa.string()))
            yield pa.RecordBatch.from_arrays(arrays, names=wanted)


def _siren_keys(sirens: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """SIRENs as int64 (leading zeros are kept by the fixed width); -1 where not 9 digits."""
    valid = pc.and_(pc.equal(pc.utf8_length(sirens), 9), pc.utf8_is_digit(sirens))
    valid = pc.fill_null(valid, False)
    cleaned = pc.if_else(valid, sirens, pa.scalar("-1", pa.string()))
    return np.asarray(pc.cast(cleaned, pa.int64()).to_numpy(zero_copy_only=False))


@dataclass
class UniteLegaleIndex:
    """Legal-unit columns for a set of sirens, looked up by vectorised binary search."""

    keys: np.ndarray  # sorted int64 sirens
    table: pa.Table  # rows aligned with `keys`: siren + UNITE_LEGALE_JOIN_COLUMNS

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self, sirens: pa.Array | pa.ChunkedArray, fields: Sequence[str]) -> list[pa.Array]:
        """For each siren, the values of `fields` as columns (NULL when the siren is unknown)."""
        n = len(sirens)
        if not len(self.keys):
            return [pa.nulls(n, pa.string()) for _ in fields]
        wanted = _siren_keys(sirens)
        pos = np.searchsorted(self.keys, wanted)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        found = self.keys[pos] == wanted
        indices = pa.array(pos, mask=~found)
        return [self.table.column(f).take(indices).combine_chunks() for f in fields]

    def found(self, sirens: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """For each siren, whether the index has its legal unit."""
        wanted = _siren_keys(sirens)
        if not len(self.keys):
            return np.zeros(len(wanted), bool)
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        found: np.ndarray = self.keys[pos] == wanted
        return found

    def lookup(self, sirens: pa.Array | pa.ChunkedArray, fields: Sequence[str]) -> list[list[Any]]:
        """For each siren, the values of `fields` (None when the siren is unknown)."""
        return [column.to_pylist() for column in self.columns(sirens, fields)]

    @classmethod
    def from_mapping(cls, names: Mapping[str, Mapping[str, Any]]) -> UniteLegaleIndex:
        """From {siren: {denominationUniteLegale: …, nomUniteLegale: …, …}}."""
        sirens = sorted(names)
        table = pa.table(
            {
                "siren": pa.array(sirens, pa.string()),
                **{
                    c: pa.array([names[s].get(c) for s in sirens], pa.string())
                    for c in UNITE_LEGALE_JOIN_COLUMNS
                },
            }
        )
        return cls._from_table(table)

    @classmethod
    def _from_table(cls, table: pa.Table) -> UniteLegaleIndex:
        keys = _siren_keys(table.column("siren"))
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        keep = keys >= 0
        order, keys = order[keep], keys[keep]
        table = table.take(pa.array(order)).select(["siren", *UNITE_LEGALE_JOIN_COLUMNS])
        return cls(keys=keys, table=table.combine_chunks())


def sirens_of(path: str | Path, *, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """The distinct sirens (int64) of a StockEtablissement file, reading only that column."""
    parts = [
        np.unique(_siren_keys(b.column(0)))
        for b in iter_batches(path, ["siren"], block_size=block_size)
    ]
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(parts))


def load_unites_legales(
    path: str | Path,
    *,
    only_sirens: np.ndarray | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> UniteLegaleIndex:
    """Read the join columns of a StockUniteLegale file, keeping only `only_sirens` if given."""
    value_set = pa.array(only_sirens, pa.int64()) if only_sirens is not None else None
    kept: list[pa.RecordBatch] = []
    for batch in iter_batches(path, ["siren", *UNITE_LEGALE_JOIN_COLUMNS], block_size=block_size):
        if value_set is not None:
            keys = pa.array(_siren_keys(batch.column(0)))
            batch = batch.filter(pc.is_in(keys, value_set=value_set))
            if not batch.num_rows:
                continue
        kept.append(batch)
    if not kept:
        empty = pa.table(
            {c: pa.array([], pa.string()) for c in ("siren", *UNITE_LEGALE_JOIN_COLUMNS)}
        )
        return UniteLegaleIndex._from_table(empty)
    return UniteLegaleIndex._from_table(pa.Table.from_batches(kept))


UnitesLegales = str | Path | UniteLegaleIndex | Mapping[str, Mapping[str, Any]] | None


def _as_index(
    unites_legales: UnitesLegales, needed: Callable[[], np.ndarray], block_size: int
) -> UniteLegaleIndex | None:
    """`unites_legales` as an index; a StockUniteLegale file is read keeping only the sirens
    `needed()` returns (called only then)."""
    if unites_legales is None or isinstance(unites_legales, UniteLegaleIndex):
        return unites_legales
    if isinstance(unites_legales, Mapping):
        return UniteLegaleIndex.from_mapping(unites_legales)
    return load_unites_legales(unites_legales, only_sirens=needed(), block_size=block_size)


def iter_stock_batches(
    path: str | Path,
    *,
    unites_legales: UnitesLegales = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[pa.RecordBatch]:
    """Stream a StockEtablissement file as batches of `mapping.FLAT_FIELDS` string columns.

    `unites_legales` (a StockUniteLegale path, a prepared `UniteLegaleIndex`, or a mapping
    siren → names) supplies the legal-unit names; without them they are all NULL.
    """
    path = Path(path)
    index = _as_index(
        unites_legales, lambda: sirens_of(path, block_size=block_size), block_size
    )
    for batch in iter_batches(path, ETABLISSEMENT_FIELDS, block_size=block_size):
        if index is not None:
            names = index.columns(batch.column("siren"), UNITE_LEGALE_NAME_FIELDS)
        else:
            names = [pa.nulls(batch.num_rows, pa.string()) for _ in UNITE_LEGALE_NAME_FIELDS]
        by_name = dict(zip(UNITE_LEGALE_NAME_FIELDS, names, strict=True))
        yield pa.RecordBatch.from_arrays(
            [by_name[f] if f in by_name else batch.column(f) for f in FLAT_FIELDS],
            names=list(FLAT_FIELDS),
        )


# --- A day out of the stock (the `stock` source of etablissements_raw) -----------------------

def stock_row_to_api_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """Nest one stock row (plus joined legal-unit fields) into the API's record shape."""
    record: dict[str, Any] = {c: row.get(c) for c in fields.ETABLISSEMENT}
    siege = record.get("etablissementSiege")
    if isinstance(siege, str):
        record["etablissementSiege"] = siege.strip().lower() == "true"
    periods = record.get("nombrePeriodesEtablissement")
    if isinstance(periods, str) and periods.isdigit():
        record["nombrePeriodesEtablissement"] = int(periods)
    record["uniteLegale"] = {c: row.get(c) for c in UNITE_LEGALE_JOIN_COLUMNS}
    record["adresseEtablissement"] = {c: row.get(c) for c in fields.ADRESSE}
    record["periodesEtablissement"] = [
        {"dateFin": None, **{c: row.get(c) for c in fields.CURRENT_PERIODE}}
    ]
    return record


def find_unites_legales(path: str | Path) -> Path | None:
    """A StockUniteLegale file next to a StockEtablissement file, if there is one."""
    folder = Path(path).parent
    for candidate in sorted(folder.iterdir()):
        name = candidate.name.lower()
        if "unitelegale" in name and candidate.suffix.lower() in (
            ".zip",
            ".csv",
            ".parquet",
            ".gz",
        ):
            return candidate
    return None


def read_stock_day(
    path: str | Path,
    day: date,
    *,
    unites_legales: UnitesLegales = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> FetchedDay:
    """The establishments of a stock file last processed on `day`, as API-shaped records.

    Legal-unit names come from `unites_legales`, else from a StockUniteLegale file found
    next to the stock file. One row per SIRET: the stock holds each establishment once.
    """
    from foxreviews_pipeline.lib.sirene.sources import FetchedDay

    started = time.perf_counter()
    path = Path(path)
    etablissement_columns = read_header(path)
    if unites_legales is None:
        unites_legales = find_unites_legales(path)
        if unites_legales is None:
            raise StockFileError(
                f"no StockUniteLegale file beside {path}: put the StockUniteLegale file of the "
                f"same extract (StockUniteLegale_utf8.zip) in {path.parent}; without it no "
                "establishment has a name"
            )
    unite_legale_file = Path(unites_legales) if isinstance(unites_legales, (str, Path)) else None
    check_headers(
        etablissement_columns,
        read_header(unite_legale_file) if unite_legale_file else ["siren", *UNITE_LEGALE_NAME_FIELDS],
        (path, unite_legale_file or path),
    )
    prefix = day.isoformat()
    columns = [*STOCK_ETABLISSEMENT_COLUMNS]
    scanned = 0
    kept: list[pa.RecordBatch] = []
    try:
        for batch in iter_batches(path, columns, block_size=block_size):
            scanned += batch.num_rows
            treated = batch.column("dateDernierTraitementEtablissement")
            mask = pc.fill_null(pc.starts_with(treated, prefix), False)
            selected = batch.filter(mask)
            if selected.num_rows:
                kept.append(selected)
    except (pa.ArrowInvalid, zipfile.BadZipFile, EOFError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StockFileError(
            f"{path}: cannot be read to its end after {scanned} rows ({first_line}): a "
            "truncated or damaged file; download it again"
        ) from exc
    records: list[dict[str, Any]] = []
    if kept:
        table = pa.Table.from_batches(kept)
        sirens = table.column("siren")
        index = _as_index(
            unites_legales, lambda: np.unique(_siren_keys(sirens)), block_size
        )
        unmatched = int((~index.found(sirens)).sum()) if index is not None else table.num_rows
        if unmatched > MAX_UNMATCHED_SHARE * table.num_rows:
            raise StockFileError(
                f"{unite_legale_file or 'the legal units given'}: {unmatched} of the "
                f"{table.num_rows} establishments of {day} have no legal unit in it: not the "
                f"StockUniteLegale file of the same extract as {path}; supply that one"
            )
        names = dict(
            zip(
                UNITE_LEGALE_JOIN_COLUMNS,
                index.lookup(sirens, UNITE_LEGALE_JOIN_COLUMNS)
                if index is not None
                else [[None] * table.num_rows for _ in UNITE_LEGALE_JOIN_COLUMNS],
                strict=True,
            )
        )
        data = {c: table.column(c).to_pylist() for c in columns}
        data.update(names)
        keys = list(data)
        for values in zip(*data.values(), strict=True):
            records.append(stock_row_to_api_record(dict(zip(keys, values, strict=True))))
    stats = {
        "source": "stock",
        "rows_scanned": scanned,
        "duration_s": round(time.perf_counter() - started, 3),
    }
    return FetchedDay(records, len(records), True, stats)
