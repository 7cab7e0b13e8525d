"""Establishments' positions: SIRENE's Lambert coordinates as WGS84 latitude and longitude.

SIRENE gives each establishment's position (`coordonneeLambertAbscisseEtablissement`,
`coordonneeLambertOrdonneeEtablissement`) as text, in metres, in the legal projection of
the establishment's territory (`EPSG_BY_TERRITORY`), chosen here from its commune code:

| territory | EPSG |
|---|---|
| metropolitan France and Corsica (RGF93 / Lambert-93) | 2154 |
| Guadeloupe, Martinique, Saint-Martin, Saint-Barthélemy (RGAF09 / UTM 20N) | 5490 |
| Guyane (RGFG95 / UTM 22N) | 2972 |
| La Réunion (RGR92 / UTM 40S) | 2975 |
| Mayotte (RGM04 / UTM 38S) | 4471 |
| Saint-Pierre-et-Miquelon (RGSPM06 / UTM 21N) | 4467 |

The conversion is vectorised: one cached pyproj `Transformer` per EPSG, applied to the
numpy arrays of the rows of that projection.

A position is NULL, for one counted reason (`POSITION_NULL_REASONS`), when the coordinates
are absent, masked (`[ND]`), withheld (the establishment is not fully diffusible: the
position is personal data, like the street), when the commune has no territory of the
table (communities of the Pacific, abroad, no commune code), or when the converted point
falls outside the bounding box of its département or territory (`DEPARTEMENT_EXTENTS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyproj import Transformer

WGS84 = 4326
LAMBERT_93 = 2154
# Overseas territories by the first three characters of their commune codes; every other
# département (01–95, 2A, 2B) is metropolitan France, in Lambert-93.
EPSG_BY_TERRITORY: dict[str, int] = {
    "971": 5490,  # Guadeloupe
    "972": 5490,  # Martinique
    "977": 5490,  # Saint-Barthélemy
    "978": 5490,  # Saint-Martin
    "973": 2972,  # Guyane
    "974": 2975,  # La Réunion
    "976": 4471,  # Mayotte
    "975": 4467,  # Saint-Pierre-et-Miquelon
}

# Extent of each département and territory, (west, south, east, north) in degrees (WGS84),
# islands included, rounded outwards to the hundredth of a degree. Hand-made approximations
# of the départements' outlines, checked against known towns (prefectures, islands and the
# country's extreme communes: sirene/test_geography.py); the check allows
# `EXTENT_MARGIN_DEG` more on every side, so that an approximation never puts a real
# address outside.
DEPARTEMENT_EXTENTS: dict[str, tuple[float, float, float, float]] = {
    "01": (4.72, 45.61, 6.17, 46.52),
    "02": (2.95, 48.83, 4.26, 50.07),
    "03": (2.27, 45.93, 4.01, 46.81),
    "04": (5.49, 43.66, 6.97, 44.66),
    "05": (5.41, 44.18, 7.08, 45.13),
    "06": (6.63, 43.47, 7.72, 44.37),
    "07": (3.86, 44.26, 4.89, 45.37),
    "08": (4.02, 49.22, 5.40, 50.17),
    "09": (0.82, 42.57, 2.18, 43.32),
    "10": (3.38, 47.92, 4.87, 48.72),
    "11": (1.68, 42.64, 3.25, 43.46),
    "12": (1.84, 43.69, 3.46, 44.95),
    "13": (4.23, 43.15, 5.82, 43.93),
    "14": (-1.16, 48.75, 0.45, 49.44),
    "15": (2.06, 44.61, 3.37, 45.49),
    "16": (-0.47, 45.19, 0.95, 46.15),
    "17": (-1.57, 45.08, 0.01, 46.38),
    "18": (1.77, 46.42, 3.08, 47.63),
    "19": (1.22, 44.92, 2.53, 45.77),
    "21": (4.06, 46.90, 5.52, 48.04),
    "22": (-3.67, 48.03, -1.90, 48.90),
    "23": (1.37, 45.66, 2.61, 46.46),
    "24": (-0.05, 44.57, 1.45, 45.72),
    "25": (5.69, 46.55, 7.07, 47.58),
    "26": (4.64, 44.11, 5.83, 45.35),
    "27": (0.29, 48.66, 1.81, 49.49),
    "28": (0.75, 47.95, 1.99, 48.94),
    "29": (-5.15, 47.70, -3.38, 48.76),
    "2A": (8.53, 41.33, 9.41, 42.39),
    "2B": (8.53, 41.83, 9.57, 43.03),
    "30": (3.26, 43.45, 4.85, 44.46),
    "31": (0.44, 42.68, 2.05, 43.93),
    "32": (-0.29, 43.31, 1.21, 44.08),
    "33": (-1.27, 44.19, 0.32, 45.58),
    "34": (2.53, 43.21, 4.20, 43.98),
    "35": (-2.29, 47.63, -1.01, 48.71),
    "36": (0.86, 46.34, 2.21, 47.28),
    "37": (0.05, 46.73, 1.37, 47.71),
    "38": (4.74, 44.69, 6.36, 45.89),
    "39": (5.25, 46.26, 6.21, 47.31),
    "40": (-1.53, 43.49, 0.14, 44.53),
    "41": (0.58, 47.19, 2.25, 48.13),
    "42": (3.69, 45.23, 4.76, 46.28),
    "43": (3.08, 44.74, 4.49, 45.43),
    "44": (-2.56, 46.86, -0.92, 47.84),
    "45": (1.51, 47.48, 3.13, 48.35),
    "46": (0.98, 44.20, 2.21, 45.05),
    "47": (-0.14, 43.97, 1.08, 44.77),
    "48": (2.98, 44.11, 4.00, 44.98),
    "49": (-1.36, 46.97, 0.24, 47.81),
    "50": (-1.95, 48.45, -0.73, 49.73),
    "51": (3.39, 48.51, 5.04, 49.41),
    "52": (4.62, 47.57, 5.90, 48.69),
    "53": (-1.24, 47.73, -0.05, 48.57),
    "54": (5.42, 48.35, 7.12, 49.57),
    "55": (4.88, 48.41, 5.86, 49.62),
    "56": (-3.73, 47.28, -2.03, 48.21),
    "57": (5.89, 48.52, 7.64, 49.52),
    "58": (2.84, 46.65, 4.24, 47.59),
    "59": (2.06, 49.96, 4.24, 51.09),
    "60": (1.68, 49.06, 3.17, 49.76),
    "61": (-0.86, 48.18, 0.98, 48.97),
    "62": (1.55, 50.02, 3.19, 51.01),
    "63": (2.38, 45.28, 3.99, 46.26),
    "64": (-1.79, 42.77, 0.03, 43.60),
    "65": (-0.33, 42.67, 0.65, 43.61),
    "66": (1.72, 42.33, 3.18, 42.92),
    "67": (6.94, 48.12, 8.24, 49.08),
    "68": (6.84, 47.42, 7.63, 48.31),
    "69": (4.24, 45.45, 5.16, 46.31),
    "70": (5.37, 47.25, 6.83, 48.03),
    "71": (3.62, 46.15, 5.47, 47.16),
    "72": (-0.45, 47.57, 0.92, 48.49),
    "73": (5.62, 45.05, 7.19, 45.94),
    "74": (5.80, 45.68, 7.05, 46.41),
    "75": (2.22, 48.81, 2.47, 48.91),
    "76": (0.06, 49.25, 1.80, 50.07),
    "77": (2.39, 48.12, 3.56, 49.12),
    "78": (1.44, 48.44, 2.23, 49.09),
    "79": (-0.90, 45.96, 0.22, 47.11),
    "80": (1.37, 49.57, 3.21, 50.37),
    "81": (1.53, 43.38, 2.94, 44.20),
    "82": (0.73, 43.77, 2.00, 44.40),
    "83": (5.65, 42.98, 6.94, 43.81),
    "84": (4.64, 43.65, 5.76, 44.43),
    "85": (-2.40, 46.26, -0.53, 47.09),
    "86": (-0.11, 46.04, 1.22, 47.18),
    "87": (0.62, 45.43, 1.91, 46.41),
    "88": (5.39, 47.81, 7.20, 48.52),
    "89": (2.84, 47.31, 4.34, 48.40),
    "90": (6.75, 47.43, 7.14, 47.83),
    "91": (1.91, 48.28, 2.59, 48.78),
    "92": (2.14, 48.72, 2.34, 48.95),
    "93": (2.28, 48.80, 2.61, 49.01),
    "94": (2.30, 48.68, 2.62, 48.87),
    "95": (1.60, 48.90, 2.59, 49.24),
    "971": (-61.81, 15.83, -60.99, 16.52),
    "972": (-61.23, 14.39, -60.81, 14.88),
    "973": (-54.61, 2.11, -51.61, 5.78),
    "974": (55.21, -21.39, 55.84, -20.87),
    "975": (-56.42, 46.75, -56.12, 47.15),
    "976": (44.95, -13.01, 45.31, -12.63),
    "977": (-62.88, 17.87, -62.78, 17.97),
    "978": (-63.16, 18.04, -62.97, 18.13),
}
# About 20 km: generous around every extent above, still far closer than a point converted
# in another territory's projection (hundreds or thousands of kilometres away).
EXTENT_MARGIN_DEG = 0.2

# Why a position is NULL; the code of each reason in `Positions.reason`.
POSITIONED = "positioned"
NO_COORDINATES = "no_coordinates"
MASKED = "masked"
NOT_DIFFUSIBLE = "not_diffusible"
NO_TERRITORY = "no_territory"
OUTSIDE_TERRITORY = "outside_territory"
POSITION_NULL_REASONS: dict[str, str] = {
    NO_COORDINATES: "no Lambert coordinates given, or not numbers",
    MASKED: "coordinates masked by INSEE ([ND])",
    NOT_DIFFUSIBLE: "the establishment is not fully diffusible (N or P): its position is "
    "personal data, like its street",
    NO_TERRITORY: "no commune code of a territory with a known projection (the Pacific "
    "communities, abroad, no commune code)",
    OUTSIDE_TERRITORY: "the converted point falls outside its département's or territory's "
    "bounding box",
}
REASON_CODES: tuple[str, ...] = (POSITIONED, *POSITION_NULL_REASONS)
_CODE = {name: np.int8(i) for i, name in enumerate(REASON_CODES)}

_ND = "[ND]"
_NUMBER = r"^-?[0-9]+(\.[0-9]*)?$"


def departement_of(code_commune: str | None) -> str | None:
    """The département (or overseas territory) of a commune code: `97x`/`98x` on three
    characters, the rest on two."""
    if not code_commune or code_commune == _ND or len(code_commune) < 2:
        return None
    return code_commune[:3] if code_commune.startswith(("97", "98")) else code_commune[:2]


def epsg_of_departement(departement: str | None) -> int | None:
    """The projection SIRENE's coordinates are given in for this département; None where no
    projection is known (no extent in `DEPARTEMENT_EXTENTS`)."""
    if departement is None or departement not in DEPARTEMENT_EXTENTS:
        return None
    return EPSG_BY_TERRITORY.get(departement, LAMBERT_93)


def epsg_of_commune(code_commune: str | None) -> int | None:
    return epsg_of_departement(departement_of(code_commune))


@cache
def transformer(epsg: int) -> Transformer:
    """From `epsg` to WGS84, longitude first (x, y → lng, lat); built once per EPSG."""
    return Transformer.from_crs(epsg, WGS84, always_xy=True)


@cache
def _projector(epsg: int) -> Transformer:
    return Transformer.from_crs(WGS84, epsg, always_xy=True)


def to_wgs84(epsg: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lng) of projected points (metres in `epsg`)."""
    lng, lat = transformer(epsg).transform(x, y)
    return np.asarray(lat, np.float64), np.asarray(lng, np.float64)


def to_projected(epsg: int, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in `epsg` of WGS84 points: how the sample data makes SIRENE-like coordinates."""
    x, y = _projector(epsg).transform(lng, lat)
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def in_extent(departement: str, lat: float, lng: float, margin: float = EXTENT_MARGIN_DEG) -> bool:
    west, south, east, north = DEPARTEMENT_EXTENTS[departement]
    return west - margin <= lng <= east + margin and south - margin <= lat <= north + margin


class Positions:
    """The WGS84 positions of a column of establishments, and why each NULL one is NULL."""

    def __init__(
        self, lat: np.ndarray, lng: np.ndarray, epsg: np.ndarray, reason: np.ndarray,
        departement: pa.Array,
    ) -> None:
        self.lat, self.lng, self.epsg, self.reason = lat, lng, epsg, reason
        self.departement = departement

    def columns(self) -> tuple[pa.Array, pa.Array, pa.Array]:
        """sirene_lat, sirene_lng (float64) and sirene_epsg (int32), NULL where unpositioned."""
        missing = self.reason != _CODE[POSITIONED]
        return (
            pa.array(self.lat, pa.float64(), mask=missing),
            pa.array(self.lng, pa.float64(), mask=missing),
            pa.array(self.epsg, pa.int32(), mask=missing),
        )

    def counts(self, keep: np.ndarray | None = None) -> dict[str, Any]:
        """The rows `keep` (all by default) by reason, and per département the rows and the
        positioned ones: `{"positioned": n, <reason>: n, …, "by_departement": {dep:
        [rows, positioned]}}`."""
        reason = self.reason if keep is None else self.reason[keep]
        departement = self.departement if keep is None else self.departement.filter(pa.array(keep))
        tally = np.bincount(reason.astype(np.int64), minlength=len(REASON_CODES))
        counts: dict[str, Any] = {name: int(n) for name, n in zip(REASON_CODES, tally, strict=True)}
        by_departement: dict[str, list[int]] = {}
        if len(reason):
            encoded = pc.dictionary_encode(departement.fill_null(""))
            names = encoded.dictionary.to_pylist()
            index = np.asarray(encoded.indices, np.int64)
            rows = np.bincount(index, minlength=len(names))
            positioned = np.bincount(
                index, weights=(reason == _CODE[POSITIONED]), minlength=len(names)
            )
            for name, n, p in zip(names, rows.tolist(), positioned.tolist(), strict=True):
                by_departement[name or "none"] = [int(n), int(p)]
        counts["by_departement"] = dict(sorted(by_departement.items()))
        return counts


def _text_column(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == pa.string() else values.cast(pa.string())


def _departements(code_commune: pa.Array) -> pa.Array:
    code = pc.if_else(pc.equal(code_commune, _ND), pa.scalar(None, pa.string()), code_commune)
    overseas = pc.starts_with(code, "97")
    overseas = pc.or_(overseas, pc.starts_with(code, "98"))
    three = pc.utf8_slice_codeunits(code, 0, 3)
    two = pc.utf8_slice_codeunits(code, 0, 2)
    departement = pc.if_else(overseas, three, two)
    # Fewer than two characters is no commune code.
    short = pc.less(pc.utf8_length(code), 2)
    return pc.if_else(pc.fill_null(short, True), pa.scalar(None, pa.string()), departement)


def _numbers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The values as float64 and whether each is a number (spaces around allowed, a decimal
    comma read as a point)."""
    text = pc.replace_substring(pc.utf8_trim_whitespace(values), ",", ".")
    ok = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False)
    ok_np = np.asarray(ok, bool)
    cleaned = pc.if_else(ok, text, pa.scalar("0", pa.string()))
    numbers = np.asarray(pc.fill_null(cleaned, "0").cast(pa.float64()), np.float64)
    ok_np &= np.isfinite(numbers)
    return numbers, ok_np


def positions(
    x: pa.Array | pa.ChunkedArray,
    y: pa.Array | pa.ChunkedArray,
    code_commune: pa.Array | pa.ChunkedArray,
    withheld: np.ndarray,
) -> Positions:
    """The positions of establishments given SIRENE's Lambert abscissa `x` and ordinate `y`
    (text), their commune codes, and which are `withheld` (not fully diffusible)."""
    x, y, code_commune = _text_column(x), _text_column(y), _text_column(code_commune)
    n = len(x)
    x_value, x_ok = _numbers(x)
    y_value, y_ok = _numbers(y)
    masked = np.asarray(pc.fill_null(pc.or_(pc.equal(x, _ND), pc.equal(y, _ND)), False), bool)
    departement = _departements(code_commune)

    reason = np.full(n, _CODE[POSITIONED], np.int8)
    epsg = np.zeros(n, np.int32)
    lat = np.zeros(n, np.float64)
    lng = np.zeros(n, np.float64)
    reason[~(x_ok & y_ok)] = _CODE[NO_COORDINATES]
    reason[masked] = _CODE[MASKED]
    reason[(reason == _CODE[POSITIONED]) & withheld] = _CODE[NOT_DIFFUSIBLE]

    encoded = pc.dictionary_encode(departement)
    index = np.asarray(encoded.indices.fill_null(-1), np.int64)
    names = encoded.dictionary.to_pylist()
    territory_epsg = np.array(
        [epsg_of_departement(d) or 0 for d in names] + [0], np.int32
    )  # the last entry: no département
    extents = np.array(
        [DEPARTEMENT_EXTENTS.get(d, (0.0, 0.0, 0.0, 0.0)) for d in names] + [(0.0, 0.0, 0.0, 0.0)],
        np.float64,
    )
    index[index < 0] = len(names)
    epsg[:] = territory_epsg[index]
    reason[(reason == _CODE[POSITIONED]) & (epsg == 0)] = _CODE[NO_TERRITORY]

    todo = reason == _CODE[POSITIONED]
    for code in np.unique(epsg[todo]).tolist():
        rows = np.flatnonzero(todo & (epsg == code))
        lat[rows], lng[rows] = to_wgs84(int(code), x_value[rows], y_value[rows])
    box = extents[index]
    m = EXTENT_MARGIN_DEG
    inside = (
        (lng >= box[:, 0] - m) & (lng <= box[:, 2] + m) & (lat >= box[:, 1] - m) & (lat <= box[:, 3] + m)
    )
    reason[todo & ~inside] = _CODE[OUTSIDE_TERRITORY]
    return Positions(lat, lng, epsg, reason, departement)


def position_of(
    x: str | None, y: str | None, code_commune: str | None, withheld: bool
) -> tuple[float | None, float | None, int | None, str]:
    """One establishment's (lat, lng, epsg, reason): `positions` for a single row."""
    found = positions(
        pa.array([x], pa.string()), pa.array([y], pa.string()),
        pa.array([code_commune], pa.string()), np.array([withheld]),
    )
    lat, lng, epsg = (c[0].as_py() for c in found.columns())
    return lat, lng, epsg, REASON_CODES[int(found.reason[0])]


def merge_counts(total: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """`total` with the counts `more` (`Positions.counts`) added."""
    for name in REASON_CODES:
        total[name] = int(total.get(name, 0)) + int(more.get(name, 0))
    by_departement: dict[str, list[int]] = {
        k: list(v) for k, v in total.get("by_departement", {}).items()
    }
    for name, (rows, positioned) in more.get("by_departement", {}).items():
        current = by_departement.setdefault(name, [0, 0])
        current[0] += int(rows)
        current[1] += int(positioned)
    total["by_departement"] = dict(sorted(by_departement.items()))
    return total
