"""Streaming reader of INSEE's StockEtablissement file (SPEC §2.2), for backfills.

The file comes as CSV inside a zip (~1.2 GB zipped, ~9 GB plain), plain CSV, or Parquet.
Columns are read by name, so the 54-column layout (2024+) and the older 48-column one both
work; every value is read as text, so identifiers keep their leading zeros. The file is read
block by block with `pyarrow.csv.open_csv` (or Parquet row groups), so memory stays bounded
whatever the file size.

The stock has no legal-unit names. They come from StockUniteLegale, joined on siren: only
the sirens present in the establishment file are kept, as Arrow columns indexed by a sorted
int64 array (a 4-million-establishment file needs tens of MB, not a dict of Python tuples).

Rows are handed over as tuples in `mapping.FLAT_FIELDS` order, which `mapping.map_flat_rows`
maps with exactly the rules used for API records.
"""

from __future__ import annotations

import csv
import io
import random
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.mapping import (
    FLAT_FIELDS,
    UNITE_LEGALE_NAME_FIELDS,
    Rejection,
    map_flat_rows,
)

STOCK_ETABLISSEMENT_COLUMNS: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "anneeEffectifsEtablissement",
    "activitePrincipaleRegistreMetiersEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "nombrePeriodesEtablissement",
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "dernierNumeroVoieEtablissement",
    "indiceRepetitionDernierNumeroVoieEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "libelleCommuneEtrangerEtablissement",
    "distributionSpecialeEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "libellePaysEtrangerEtablissement",
    "identifiantAdresseEtablissement",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
    "complementAdresse2Etablissement",
    "numeroVoie2Etablissement",
    "indiceRepetition2Etablissement",
    "typeVoie2Etablissement",
    "libelleVoie2Etablissement",
    "codePostal2Etablissement",
    "libelleCommune2Etablissement",
    "libelleCommuneEtranger2Etablissement",
    "distributionSpeciale2Etablissement",
    "codeCommune2Etablissement",
    "codeCedex2Etablissement",
    "libelleCedex2Etablissement",
    "codePaysEtranger2Etablissement",
    "libellePaysEtranger2Etablissement",
    "dateDebut",
    "etatAdministratifEtablissement",
    "enseigne1Etablissement",
    "enseigne2Etablissement",
    "enseigne3Etablissement",
    "denominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "caractereEmployeurEtablissement",
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

STOCK_UNITE_LEGALE_COLUMNS: tuple[str, ...] = (
    "siren",
    "statutDiffusionUniteLegale",
    "unitePurgeeUniteLegale",
    "dateCreationUniteLegale",
    "sigleUniteLegale",
    "sexeUniteLegale",
    "prenom1UniteLegale",
    "prenom2UniteLegale",
    "prenom3UniteLegale",
    "prenom4UniteLegale",
    "prenomUsuelUniteLegale",
    "pseudonymeUniteLegale",
    "identifiantAssociationUniteLegale",
    "trancheEffectifsUniteLegale",
    "anneeEffectifsUniteLegale",
    "dateDernierTraitementUniteLegale",
    "nombrePeriodesUniteLegale",
    "categorieEntreprise",
    "anneeCategorieEntreprise",
    "dateDebut",
    "etatAdministratifUniteLegale",
    "nomUniteLegale",
    "nomUsageUniteLegale",
    "denominationUniteLegale",
    "denominationUsuelle1UniteLegale",
    "denominationUsuelle2UniteLegale",
    "denominationUsuelle3UniteLegale",
    "categorieJuridiqueUniteLegale",
    "activitePrincipaleUniteLegale",
    "nomenclatureActivitePrincipaleUniteLegale",
    "nicSiegeUniteLegale",
    "economieSocialeSolidaireUniteLegale",
    "societeMissionUniteLegale",
    "caractereEmployeurUniteLegale",
)

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


def _csv_member(zf: zipfile.ZipFile) -> str:
    names = [n for n in zf.namelist() if n.lower().endswith(".csv")]
    if not names:
        raise ValueError(f"{zf.filename}: no .csv member in the zip")
    return names[0]


def _open_text_source(path: Path):
    if path.suffix.lower() == ".zip":
        zf = zipfile.ZipFile(path)
        return zf, zf.open(_csv_member(zf))
    stream = pa.input_stream(str(path), compression="detect")
    return None, stream


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


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
    if _is_parquet(path):
        yield from _iter_parquet(path, wanted, block_size)
        return
    holder, stream = _open_text_source(path)
    try:
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
    finally:
        stream.close()
        if holder is not None:
            holder.close()


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
    return pc.cast(cleaned, pa.int64()).to_numpy(zero_copy_only=False)


@dataclass
class UniteLegaleIndex:
    """Legal-unit columns for a set of sirens, looked up by vectorised binary search."""

    keys: np.ndarray  # sorted int64 sirens
    table: pa.Table  # rows aligned with `keys`: siren + UNITE_LEGALE_JOIN_COLUMNS

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, sirens: pa.Array | pa.ChunkedArray, fields: Sequence[str]) -> list[list]:
        """For each siren, the values of `fields` (None when the siren is unknown)."""
        n = len(sirens)
        if not len(self.keys):
            return [[None] * n for _ in fields]
        wanted = _siren_keys(sirens)
        pos = np.searchsorted(self.keys, wanted)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        found = self.keys[pos] == wanted
        indices = pa.array(pos, mask=~found)
        return [self.table.column(f).take(indices).to_pylist() for f in fields]

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
    path: Path, unites_legales: UnitesLegales, block_size: int
) -> UniteLegaleIndex | None:
    if unites_legales is None or isinstance(unites_legales, UniteLegaleIndex):
        return unites_legales
    if isinstance(unites_legales, Mapping):
        return UniteLegaleIndex.from_mapping(unites_legales)
    return load_unites_legales(
        unites_legales, only_sirens=sirens_of(path, block_size=block_size), block_size=block_size
    )


def iter_stock_chunks(
    path: str | Path,
    *,
    unites_legales: UnitesLegales = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[list[tuple]]:
    """Stream a StockEtablissement file as lists of tuples in `mapping.FLAT_FIELDS` order.

    `unites_legales` (a StockUniteLegale path, a prepared `UniteLegaleIndex`, or a mapping
    siren → names) supplies the legal-unit names; without it they are all None.
    """
    path = Path(path)
    index = _as_index(path, unites_legales, block_size)
    for batch in iter_batches(path, ETABLISSEMENT_FIELDS, block_size=block_size):
        n = batch.num_rows
        etab = {f: batch.column(i).to_pylist() for i, f in enumerate(ETABLISSEMENT_FIELDS)}
        if index is not None:
            names = dict(
                zip(
                    UNITE_LEGALE_NAME_FIELDS,
                    index.lookup(batch.column("siren"), UNITE_LEGALE_NAME_FIELDS),
                    strict=True,
                )
            )
        else:
            names = {f: [None] * n for f in UNITE_LEGALE_NAME_FIELDS}
        columns = [etab[f] if f in etab else names[f] for f in FLAT_FIELDS]
        yield list(zip(*columns, strict=True))


def iter_mapped_stock(
    path: str | Path,
    *,
    unites_legales: UnitesLegales = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Iterator[tuple[list[tuple], list[Rejection]]]:
    """Stream a StockEtablissement file as (rows, rejections) per block.

    Rows are in `mapping.ENTREPRISE_COLUMNS` order, ready for COPY.
    """
    for chunk in iter_stock_chunks(path, unites_legales=unites_legales, block_size=block_size):
        yield map_flat_rows(chunk)


# --- A day out of the stock (the `stock` source of etablissements_raw) -----------------------

# How the API nests the stock's columns: adresseEtablissement{}, periodesEtablissement[0], the rest
# at the top level (the secondary address is not used).
_ADDRESS_COLUMNS: tuple[str, ...] = (
    "complementAdresseEtablissement",
    "numeroVoieEtablissement",
    "indiceRepetitionEtablissement",
    "typeVoieEtablissement",
    "libelleVoieEtablissement",
    "codePostalEtablissement",
    "libelleCommuneEtablissement",
    "libelleCommuneEtrangerEtablissement",
    "distributionSpecialeEtablissement",
    "codeCommuneEtablissement",
    "codeCedexEtablissement",
    "libelleCedexEtablissement",
    "codePaysEtrangerEtablissement",
    "libellePaysEtrangerEtablissement",
    "identifiantAdresseEtablissement",
    "coordonneeLambertAbscisseEtablissement",
    "coordonneeLambertOrdonneeEtablissement",
)
_PERIOD_COLUMNS: tuple[str, ...] = (
    "dateDebut",
    "etatAdministratifEtablissement",
    "enseigne1Etablissement",
    "enseigne2Etablissement",
    "enseigne3Etablissement",
    "denominationUsuelleEtablissement",
    "activitePrincipaleEtablissement",
    "nomenclatureActivitePrincipaleEtablissement",
    "caractereEmployeurEtablissement",
)
_TOP_COLUMNS: tuple[str, ...] = (
    "siren",
    "nic",
    "siret",
    "statutDiffusionEtablissement",
    "dateCreationEtablissement",
    "trancheEffectifsEtablissement",
    "anneeEffectifsEtablissement",
    "activitePrincipaleRegistreMetiersEtablissement",
    "dateDernierTraitementEtablissement",
    "etablissementSiege",
    "nombrePeriodesEtablissement",
    "activitePrincipaleNAF25Etablissement",
)


def stock_row_to_api_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """Nest one stock row (plus joined legal-unit fields) into the API's record shape."""
    record: dict[str, Any] = {c: row.get(c) for c in _TOP_COLUMNS}
    siege = record.get("etablissementSiege")
    if isinstance(siege, str):
        record["etablissementSiege"] = siege.strip().lower() == "true"
    periods = record.get("nombrePeriodesEtablissement")
    if isinstance(periods, str) and periods.isdigit():
        record["nombrePeriodesEtablissement"] = int(periods)
    record["uniteLegale"] = {c: row.get(c) for c in UNITE_LEGALE_JOIN_COLUMNS}
    record["adresseEtablissement"] = {c: row.get(c) for c in _ADDRESS_COLUMNS}
    record["periodesEtablissement"] = [
        {"dateFin": None, **{c: row.get(c) for c in _PERIOD_COLUMNS}}
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
):
    """The establishments of a stock file last processed on `day`, as API-shaped records.

    Legal-unit names come from `unites_legales`, else from a StockUniteLegale file found
    next to the stock file. One row per SIRET: the stock holds each establishment once.
    """
    from foxreviews_pipeline.lib.sirene.sources import FetchedDay

    started = time.perf_counter()
    path = Path(path)
    if unites_legales is None:
        unites_legales = find_unites_legales(path)
    prefix = day.isoformat()
    columns = [*STOCK_ETABLISSEMENT_COLUMNS]
    scanned = 0
    kept: list[pa.RecordBatch] = []
    for batch in iter_batches(path, columns, block_size=block_size):
        scanned += batch.num_rows
        treated = batch.column("dateDernierTraitementEtablissement")
        mask = pc.fill_null(pc.starts_with(treated, prefix), False)
        selected = batch.filter(mask)
        if selected.num_rows:
            kept.append(selected)
    records: list[dict[str, Any]] = []
    if kept:
        table = pa.Table.from_batches(kept)
        sirens = table.column("siren")
        index = _as_index_for(sirens, unites_legales, block_size)
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


def _as_index_for(
    sirens: pa.ChunkedArray, unites_legales: UnitesLegales, block_size: int
) -> UniteLegaleIndex | None:
    if unites_legales is None or isinstance(unites_legales, UniteLegaleIndex):
        return unites_legales
    if isinstance(unites_legales, Mapping):
        return UniteLegaleIndex.from_mapping(unites_legales)
    needed = np.unique(_siren_keys(sirens))
    return load_unites_legales(unites_legales, only_sirens=needed, block_size=block_size)


# --- Sample files, for tests and benchmarks --------------------------------------------------


def api_record_to_stock_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten an API-shaped record into one stock row (établissement + legal-unit fields).

    Lets the same real payload be written to a sample stock file and compared with what the
    API path maps.
    """
    row: dict[str, Any] = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
    row.update(record.get("adresseEtablissement") or {})
    periods = record.get("periodesEtablissement") or []
    current = next((p for p in periods if p.get("dateFin") is None), periods[0] if periods else {})
    row.update({k: v for k, v in current.items() if k != "dateFin"})
    row.update(record.get("uniteLegale") or {})
    if row.get("siret") and not row.get("nic"):
        row["nic"] = row["siret"][9:]
    return row


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


_COMMUNES = (
    # (code commune, code postal, libellé) — real COG codes, including arrondissements.
    ("75108", "75008", "PARIS 8"),
    ("75111", "75011", "PARIS 11"),
    ("75115", "75015", "PARIS 15"),
    ("69383", "69003", "LYON 3EME"),
    ("13201", "13001", "MARSEILLE 1ER"),
    ("31555", "31000", "TOULOUSE"),
    ("33063", "33000", "BORDEAUX"),
    ("44109", "44000", "NANTES"),
    ("67482", "67000", "STRASBOURG"),
    ("59350", "59000", "LILLE"),
    ("34172", "34000", "MONTPELLIER"),
    ("35238", "35000", "RENNES"),
    ("06088", "06000", "NICE"),
    ("01053", "01000", "BOURG-EN-BRESSE"),
    ("2A004", "20000", "AJACCIO"),
    ("97411", "97400", "SAINT-DENIS"),
    ("92046", "92240", "MALAKOFF"),
    ("56260", "56000", "VANNES"),
)
_NAF_REV2 = (
    ("68.20A", 12),
    ("70.22Z", 9),
    ("56.10A", 6),
    ("43.21A", 4),
    ("47.11B", 2),
    ("86.21Z", 3),
    ("96.02A", 4),
    ("62.01Z", 5),
    ("41.20A", 2),
    ("49.32Z", 2),
    ("69.10Z", 2),
    ("45.20A", 2),
    ("10.71C", 2),
    ("43.22A", 3),
    ("68.31Z", 3),
    ("85.59A", 3),
    ("90.01Z", 2),
    ("81.21Z", 2),
    ("56.30Z", 2),
    ("47.71Z", 2),
)
_NAF_OLD = (("52.4X", "NAFRev1"), ("93.0D", "NAF1993"), ("51.8L", "NAFRev1"), ("74.1J", "NAFRev1"))
_TYPES_VOIE = (
    "RUE",
    "RUE",
    "RUE",
    "AV",
    "BD",
    "PL",
    "CHE",
    "IMP",
    "ALL",
    "RTE",
    "AVENUE",
    "PLACE",
    "ALLEE",
    "QUAI",
    None,
)
_STREETS = (
    "DE LA REPUBLIQUE",
    "VICTOR HUGO",
    "JEAN JAURES",
    "DU GENERAL DE GAULLE",
    "PASTEUR",
    "DES LILAS",
    "DU MOULIN",
    "DE LA GARE",
    "NATIONALE",
    "DES ECOLES",
    "GAMBETTA",
    "DU PORT",
)
_SURNAMES = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFEBVRE",
    "MICHEL",
    "GARCIA",
    "DE LA FONTAINE",
)
_FIRST_NAMES = (
    "JEAN",
    "MARIE",
    "CAMILLE",
    "JEAN-PIERRE",
    "LEA",
    "HUGO",
    "NATHALIE",
    "LUCAS",
    "MARIE-CLAIRE",
    "THOMAS",
    "EMMA",
    "PIERRE",
)
_WORDS = (
    "ATELIER",
    "BOULANGERIE",
    "GARAGE",
    "CABINET",
    "SOCIETE",
    "AGENCE",
    "COIFFURE",
    "PLOMBERIE",
    "ELECTRICITE",
    "IMMOBILIERE",
    "RESTAURANT",
    "TRANSPORTS",
    "CONSEIL",
)
_PLACES = (
    "DU CENTRE",
    "DES ALPES",
    "ATLANTIQUE",
    "DU SUD",
    "PARISIENNE",
    "LYONNAISE",
    "DE LA GARE",
    "DU PARC",
    "MODERNE",
    "ET FILS",
)
_FORMS = ("SAS", "SARL", "SASU", "EURL", "SCI", "")
_TRANCHES = ("NN", "NN", "00", "01", "02", "03", "11", None)
_COMPLEMENTS = ("BAT A", "ZONE ARTISANALE", "RESIDENCE LES PINS")
# What a partially diffusible (P) establishment shows in the stock: the street line, postal
# code, enseigne and coordinates masked, the commune kept.
_MASKED_WHEN_PARTIAL: dict[str, str | None] = {
    "complementAdresseEtablissement": "[ND]",
    "numeroVoieEtablissement": "[ND]",
    "indiceRepetitionEtablissement": "[ND]",
    "typeVoieEtablissement": "[ND]",
    "libelleVoieEtablissement": "[ND]",
    "codePostalEtablissement": "[ND]",
    "identifiantAdresseEtablissement": None,
    "coordonneeLambertAbscisseEtablissement": "[ND]",
    "coordonneeLambertOrdonneeEtablissement": "[ND]",
    "enseigne1Etablissement": "[ND]",
}


def _sample_rows(n: int, seed: int) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(établissement row, legal-unit row or None when already written) × n, deterministic."""
    rng = random.Random(seed)
    naf_codes = [c for c, _ in _NAF_REV2]
    naf_weights = [w for _, w in _NAF_REV2]
    produced = 0
    while produced < n:
        siren = f"{rng.randrange(10**8):08d}"
        siren += luhn_check_digit(siren)
        person = rng.random() < 0.35
        diffusion = "P" if rng.random() < 0.03 else "O"
        if person:
            ul = {
                "siren": siren,
                "statutDiffusionUniteLegale": diffusion,
                "categorieJuridiqueUniteLegale": "1000",
                "nomUniteLegale": rng.choice(_SURNAMES) if diffusion == "O" else "[ND]",
                "nomUsageUniteLegale": rng.choice(_SURNAMES)
                if diffusion == "O" and rng.random() < 0.1
                else None,
                "prenom1UniteLegale": rng.choice(_FIRST_NAMES) if diffusion == "O" else "[ND]",
                "prenomUsuelUniteLegale": None,
                "sexeUniteLegale": rng.choice("MF") if diffusion == "O" else "[ND]",
                "etatAdministratifUniteLegale": "A",
            }
            if diffusion == "O" and rng.random() < 0.8:
                ul["prenomUsuelUniteLegale"] = ul["prenom1UniteLegale"]
        else:
            name = f"{rng.choice(_WORDS)} {rng.choice(_PLACES)} {rng.choice(_FORMS)}".strip()
            ul = {
                "siren": siren,
                "statutDiffusionUniteLegale": "O",
                "categorieJuridiqueUniteLegale": rng.choice(("5710", "5499", "5720", "6540")),
                "denominationUniteLegale": name,
                "sigleUniteLegale": None,
                "etatAdministratifUniteLegale": "A",
            }
        ul["dateCreationUniteLegale"] = f"{rng.randrange(1970, 2025)}-{rng.randrange(1, 13):02d}-01"
        nics = sorted(rng.sample(range(1, 999), k=rng.choice((1, 1, 1, 2, 3))))
        first = True
        for seq in nics:
            if produced >= n:
                break
            nic = f"{seq:04d}"
            nic += luhn_check_digit(siren + nic)
            commune, cp, libelle = rng.choice(_COMMUNES)
            closed = rng.random() < 0.1
            old_naf = closed and rng.random() < 0.3
            if old_naf:
                naf, nomenclature = rng.choice(_NAF_OLD)
            else:
                naf, nomenclature = rng.choices(naf_codes, naf_weights)[0], "NAFRev2"
            year, month, day = rng.randrange(1985, 2025), rng.randrange(1, 13), rng.randrange(1, 29)
            hms = (rng.randrange(24), rng.randrange(60), rng.randrange(60))
            treated = f"2024-03-{day:02d}T{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}"
            row: dict[str, Any] = {
                "siren": siren,
                "nic": nic,
                "siret": siren + nic,
                "statutDiffusionEtablissement": diffusion,
                "dateCreationEtablissement": f"{year}-{month:02d}-{day:02d}",
                "trancheEffectifsEtablissement": rng.choice(_TRANCHES),
                "dateDernierTraitementEtablissement": treated,
                "etablissementSiege": "true" if first else "false",
                "nombrePeriodesEtablissement": str(rng.randrange(1, 5)),
                "complementAdresseEtablissement": (
                    rng.choice(_COMPLEMENTS) if rng.random() < 0.1 else None
                ),
                "numeroVoieEtablissement": (
                    str(rng.randrange(1, 200)) if rng.random() < 0.85 else None
                ),
                "indiceRepetitionEtablissement": rng.choice("BTQ") if rng.random() < 0.04 else None,
                "typeVoieEtablissement": rng.choice(_TYPES_VOIE),
                "libelleVoieEtablissement": rng.choice(_STREETS),
                "codePostalEtablissement": cp,
                "libelleCommuneEtablissement": libelle,
                "codeCommuneEtablissement": commune,
                "identifiantAdresseEtablissement": f"{commune}_{rng.randrange(10000):04d}",
                "coordonneeLambertAbscisseEtablissement": f"{rng.uniform(1e5, 1.2e6):.1f}",
                "coordonneeLambertOrdonneeEtablissement": f"{rng.uniform(6e6, 7.1e6):.1f}",
                "dateDebut": f"{rng.randrange(max(year, 2008), 2025)}-{month:02d}-01",
                "etatAdministratifEtablissement": "F" if closed else "A",
                "enseigne1Etablissement": (
                    f"{rng.choice(_WORDS)} {rng.choice(_PLACES)}" if rng.random() < 0.2 else None
                ),
                "denominationUsuelleEtablissement": None,
                "activitePrincipaleEtablissement": naf,
                "nomenclatureActivitePrincipaleEtablissement": nomenclature,
                "caractereEmployeurEtablissement": rng.choice("NO"),
                "activitePrincipaleNAF25Etablissement": (
                    None if old_naf else naf[:5] + rng.choice("ABCZ")
                ),
            }
            if diffusion == "P":
                row.update(_MASKED_WHEN_PARTIAL)
            yield row, (ul if first else None)
            first = False
            produced += 1


def _open_for_writing(path: Path, member: str):
    if path.suffix.lower() == ".zip":
        zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1)
        raw = zf.open(member, "w", force_zip64=True)
        return zf, io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return None, open(path, "w", encoding="utf-8", newline="")


def write_sample_stock(
    path: str | Path,
    records_or_n: int | Iterable[Mapping[str, Any]],
    layout: int = 54,
    *,
    unites_legales_path: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Write a StockEtablissement-like CSV (zipped when `path` ends in .zip).

    `records_or_n` is either a number of rows to generate (deterministic for `seed`: valid
    SIRETs with leading zeros, Paris/Lyon/Marseille arrondissements, Corsica and overseas
    communes, natural persons and companies, closures, old NAF codes, `[ND]` records) or rows
    keyed by SIRENE field names (see `api_record_to_stock_row`). `layout` picks the 54- or
    48-column header. Legal-unit fields go to `unites_legales_path` (a StockUniteLegale-like
    CSV) when given.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    columns = LAYOUTS[layout]
    path = Path(path)
    if isinstance(records_or_n, int):
        pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = _sample_rows(
            records_or_n, seed
        )
    else:
        pairs = _pairs_from_rows(records_or_n)
    zf, out = _open_for_writing(path, "StockEtablissement_utf8.csv")
    ul_zf = ul_out = None
    if unites_legales_path is not None:
        ul_zf, ul_out = _open_for_writing(Path(unites_legales_path), "StockUniteLegale_utf8.csv")
    try:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        ul_writer = None
        if ul_out is not None:
            ul_writer = csv.writer(ul_out, lineterminator="\n")
            ul_writer.writerow(STOCK_UNITE_LEGALE_COLUMNS)
        for row, ul in pairs:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
            if ul_writer is not None and ul is not None:
                ul_writer.writerow([_csv_value(ul.get(c)) for c in STOCK_UNITE_LEGALE_COLUMNS])
    finally:
        out.close()
        if zf is not None:
            zf.close()
        if ul_out is not None:
            ul_out.close()
        if ul_zf is not None:
            ul_zf.close()
    return path


def _pairs_from_rows(
    rows: Iterable[Mapping[str, Any]],
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any] | None]]:
    seen: set[str] = set()
    for row in rows:
        siren = row.get("siren") or (row.get("siret") or "")[:9]
        ul = None
        if siren not in seen and any(row.get(c) is not None for c in UNITE_LEGALE_JOIN_COLUMNS):
            seen.add(siren)
            ul = {c: row.get(c) for c in STOCK_UNITE_LEGALE_COLUMNS}
            # A flat row's dateDebut is the establishment's period, not the legal unit's.
            ul["dateDebut"] = None
            ul["siren"] = siren
        yield row, ul
