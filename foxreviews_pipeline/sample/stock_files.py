"""Sample StockEtablissement / StockUniteLegale files, for tests and benchmarks.

`write_sample_stock` writes generated rows (deterministic for a seed) or given rows in either
stock layout, zipped or plain; `api_record_to_stock_row` flattens an API record into the row
the stock would hold for it, so that one payload can go through both paths.
"""

from __future__ import annotations

import csv
import functools
import io
import random
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from foxreviews_pipeline.lib.reference.naf2025 import correspondents
from foxreviews_pipeline.lib.sirene.identifiers import luhn_check_digit
from foxreviews_pipeline.lib.sirene.stock_file import (
    LAYOUTS,
    STOCK_UNITE_LEGALE_COLUMNS,
    UNITE_LEGALE_JOIN_COLUMNS,
)
from foxreviews_pipeline.sample.day import naf25_code
from foxreviews_pipeline.sample.positions import commune_lambert


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
    # Every overseas territory with a projection of its own (lib/sirene/geography.py).
    ("97120", "97110", "POINTE-A-PITRE"),
    ("97209", "97200", "FORT-DE-FRANCE"),
    ("97302", "97300", "CAYENNE"),
    ("97611", "97600", "MAMOUDZOU"),
    ("97502", "97500", "SAINT-PIERRE"),
    ("97701", "97133", "SAINT-BARTHELEMY"),
    ("97801", "97150", "SAINT-MARTIN"),
    ("92046", "92240", "MALAKOFF"),
    ("56260", "56000", "VANNES"),
)
@functools.lru_cache(maxsize=1)
def _lambert() -> dict[str, tuple[float, float]]:
    return commune_lambert([c for c, _, _ in _COMMUNES])


def _coordinates(commune: str, dx: float, dy: float) -> tuple[str | None, str | None]:
    """SIRENE's Lambert coordinates of an address `dx`, `dy` metres from the commune's point."""
    point = _lambert().get(commune)
    if point is None:
        return None, None
    return f"{point[0] + dx:.1f}", f"{point[1] + dy:.1f}"
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
    naf25 = correspondents()
    produced = 0
    # StockUniteLegale lists each legal unit once: a siren drawn twice is drawn again.
    drawn: set[int] = set()
    while produced < n:
        draw = rng.randrange(10**8)
        if draw in drawn:
            continue
        drawn.add(draw)
        siren = f"{draw:08d}"
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
                # Metres from the commune's point, made coordinates below.
                "coordonneeLambertAbscisseEtablissement": rng.uniform(-2_000, 2_000),
                "coordonneeLambertOrdonneeEtablissement": rng.uniform(-2_000, 2_000),
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
                    None if old_naf else naf25_code(naf25, naf, siren + nic)
                ),
            }
            (
                row["coordonneeLambertAbscisseEtablissement"],
                row["coordonneeLambertOrdonneeEtablissement"],
            ) = _coordinates(
                commune,
                row["coordonneeLambertAbscisseEtablissement"],
                row["coordonneeLambertOrdonneeEtablissement"],
            )
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
